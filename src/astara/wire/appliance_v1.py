"""Appliance API v1: the configuration body pushed to ``PUT /v1/system/config/``.

This is the contract between the orchestrator and every appliance (seed 002).
The seed's example body is accepted verbatim; the model extends it with what a
router needs (subnets, floating IPs, BGP, the orchestrator's metadata address).

Invariants enforced here (shape only; cross-field rules live in
``astara.appliance.plan``): addresses parse, MACs are six octets, MTUs and
ports are in range, unknown keys are rejected so a typo never goes unnoticed.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _interface_address(value: str) -> str:
    """Accept ``10.0.0.1/24`` or a bare ``8.8.8.8`` (the seed's form); keep the text."""
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address (with or without /prefix)") from None
    return value


def _ip_text(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    return value


def _textual(value: object) -> object:
    """JSON gives addresses as strings; pydantic would also read ``1`` as 0.0.0.1."""
    if isinstance(value, bool | int | float):
        raise ValueError("must be an address written as a string")  # noqa: TRY004 -- pydantic reports ValueError only
    return value


# addresses and networks given in JSON as text, never as numbers
IPAddressText = Annotated[IPAddress, BeforeValidator(_textual)]
IPv4Text = Annotated[ipaddress.IPv4Address, BeforeValidator(_textual)]
IPNetworkText = Annotated[IPNetwork, BeforeValidator(_textual)]

# Patterns are checked by pydantic-core (Rust): a big config has thousands of these.
Mac = Annotated[
    str, StringConstraints(pattern=r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$", to_lower=True)
]
IfName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]{1,15}$")]
HostName = Annotated[
    str,
    StringConstraints(
        pattern=r"^([A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.?)+$", max_length=253
    ),
]
InterfaceAddress = Annotated[str, AfterValidator(_interface_address)]
IPText = Annotated[str, AfterValidator(_ip_text)]
Mtu = Annotated[int, Field(ge=68, le=65535)]
Port = Annotated[int, Field(ge=1, le=65535)]
Asn = Annotated[int, Field(ge=1, le=4294967295)]
Ipv6Mode = Literal["slaac", "dhcpv6-stateful", "dhcpv6-stateless"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Interface(_Model):
    """A NIC as the seed describes it; matched to a kernel link by ``lladdr``, else ``ifname``."""

    addresses: list[InterfaceAddress] = []
    description: str = ""
    groups: list[str] = []
    ifname: IfName | None = None
    lladdr: Mac | None = None
    media: str | None = None
    mtu: Mtu | None = None
    state: Literal["up", "down"] = "up"


class Route(_Model):
    destination: IPNetworkText
    nexthop: IPAddressText


class Subnet(_Model):
    cidr: IPNetworkText
    gateway_ip: IPAddressText | None = None
    dhcp_enabled: bool = True
    dns_nameservers: list[IPAddressText] = []
    host_routes: list[Route] = []
    ipv6_ra_mode: Ipv6Mode | None = None
    ipv6_address_mode: Ipv6Mode | None = None


class AddressAllocation(_Model):
    """A tenant port on this network: DHCP reservation, DNS name, metadata identity."""

    device_id: str = Field(default="", max_length=255)
    hostname: HostName
    # address -> whether DHCP serves it (the seed's shape)
    ip_addresses: dict[IPText, bool]
    mac_address: Mac


class Network(_Model):
    network_id: str = Field(min_length=1, max_length=255)
    name: str = ""
    network_type: Literal["management", "external", "internal"]
    interface: Interface
    address_allocations: list[AddressAllocation] = []
    v4_conf_service: Literal["static", "dhcp"] = "static"
    v6_conf_service: Literal["static", "dhcp", "ra"] = "static"
    subnets: list[Subnet] = []


class FloatingIP(_Model):
    floating_ip: IPv4Text
    fixed_ip: IPv4Text


class Orchestrator(_Model):
    """Where the metadata proxy forwards to, over the management network."""

    address: IPAddressText
    metadata_port: Port = 9697


class Configuration(_Model):
    networks: list[Network]
    static_routes: list[Route] = []
    tenant_id: str | None = None
    hostname: HostName | None = None
    default_v4_gateway: IPv4Text | None = None
    floating_ips: list[FloatingIP] = []
    asn: Asn | None = None
    neighbor_asn: Asn | None = None
    orchestrator: Orchestrator | None = None


class ConfigurationBody(_Model):
    """The body of ``PUT /v1/system/config/`` and of its ``GET``."""

    configuration: Configuration


class InterfaceState(BaseModel):
    """An interface as ``GET /v1/system/interface(s)`` reports it."""

    addresses: list[str]
    description: str = ""
    groups: list[str] = []
    ifname: str
    lladdr: str | None
    media: str | None = None
    mtu: int
    state: Literal["up", "down"]


class Status(BaseModel):
    v4: bool
    v6: bool
