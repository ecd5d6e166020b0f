"""The router driver: a Neutron router as an appliance configuration (appliance API v1).

``build_config`` reads the router and what surrounds it through a
``RouterReader`` and returns the validated ``ConfigurationBody`` that is
pushed to the appliance (``PUT /v1/system/config/``):

- ``networks``: the management network first (the appliance's ge0, by MAC),
  then the external network of the router's gateway port, then one internal
  network per router interface port. Every interface is matched by the
  port's MAC (``lladdr``) and carries the port's fixed IPs with the prefix
  length of their subnets; the network lists those subnets.
- ``address_allocations`` on each internal network: every port on its subnets
  that no router owns (MAC, addresses with their subnet's DHCP flag, a host
  name, the device id). The host name is Neutron's ``dns_name`` when set,
  else ``host-<first address, dashed>`` as Neutron's DHCP agent names hosts.
- ``floating_ips``: the router's floating IPs that are associated (have a
  fixed IP) and whose fixed IP is on an internal IPv4 subnet, when the router
  has an external IPv4 address to NAT behind.
- ``default_v4_gateway``: the gateway of the external IPv4 subnet the router
  has an address on; ``static_routes``: the router's ``routes``.

Two router ports on one network (Neutron makes a separate port for each IPv4
subnet attached by ``subnet_id``) are two NICs: the later ones get the network
id ``<network id>:<port id>`` so that network ids stay unique.

Pure apart from the reads: the same Neutron state gives the same
configuration (lists are sorted), so a caller can compare configurations to
decide whether to push.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from astara.orchestrator.concurrency import settled
from astara.orchestrator.neutron_reader import GATEWAY_OWNERS, INTERFACE_OWNERS
from astara.orchestrator.router_reader import (
    FloatingIPRecord,
    NetworkRecord,
    PortRecord,
    RouteRecord,
    RouterReader,
    RouterRecord,
    SubnetRecord,
)
from astara.wire import appliance_v1 as wire

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MANAGEMENT_NETWORK_ID = "management"
"""The management network's ``network_id`` when ``Management`` names none."""

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"^({_LABEL}\.)*{_LABEL}\.?$")
_ROUTER_OWNER_PREFIX = "network:router"


@dataclass(frozen=True, slots=True, kw_only=True)
class Management:
    """The appliance's management NIC (ge0): its MAC and its address with prefix length."""

    mac: str
    address: IPInterface
    network_id: str = MANAGEMENT_NETWORK_ID


@dataclass(frozen=True, slots=True)
class _Topology:
    """What the reads returned, indexed by id."""

    router: RouterRecord
    gateway: PortRecord | None
    interfaces: tuple[PortRecord, ...]
    subnets: Mapping[str, SubnetRecord]
    networks: Mapping[str, NetworkRecord]
    hosts: tuple[PortRecord, ...]


async def build_config(
    *,
    router_id: str,
    reader: RouterReader,
    management: Management,
    orchestrator: tuple[IPAddress, int] | None,
    asn: int | None = None,
    neighbor_asn: int | None = None,
) -> wire.ConfigurationBody:
    """The appliance configuration of router ``router_id``; see the module docstring.

    Raises what ``reader`` raises (``RouterGone`` when the router does not exist),
    and ``pydantic.ValidationError`` if Neutron's data does not make a valid body.
    """
    topology, fips = await _read(router_id, reader)
    external = _external_network(topology)
    internals = _internal_networks(topology)
    if not external:
        fips = []
    configuration = wire.Configuration(
        networks=[_management_network(management), *([external] if external else []), *internals],
        static_routes=[_route(r) for r in topology.router.routes],
        tenant_id=topology.router.project_id or None,
        hostname=f"ak-{router_id.replace('-', '')[:12]}",
        default_v4_gateway=_default_v4_gateway(external),
        floating_ips=_floating_ips(external, internals, fips),
        asn=asn,
        neighbor_asn=neighbor_asn,
        orchestrator=(
            wire.Orchestrator(address=orchestrator[0], metadata_port=orchestrator[1])
            if orchestrator
            else None
        ),
    )
    # validated again as a whole, as the appliance will: the body is what goes on the wire
    return wire.ConfigurationBody.model_validate(
        {"configuration": configuration.model_dump(mode="json")}
    )


async def _nothing() -> list[Any]:
    return []


async def _read(
    router_id: str, reader: RouterReader
) -> tuple[_Topology, Sequence[FloatingIPRecord]]:
    """The router's topology and floating IPs; the reads that do not depend on each other
    are made at once (a reconcile waits for the slowest, not for their sum)."""
    router, ports = await settled(
        reader.router(router_id=router_id), reader.router_ports(router_id=router_id)
    )
    gateway = next((p for p in ports if p.device_owner in GATEWAY_OWNERS), None)
    if router.gateway_network_id is None:
        gateway = None
    interfaces = tuple(
        sorted((p for p in ports if p.device_owner in INTERFACE_OWNERS), key=_port_order)
    )
    mine = ([gateway] if gateway else []) + list(interfaces)
    subnet_ids = {f.subnet_id for p in mine for f in p.fixed_ips}
    internal_subnets = {f.subnet_id for p in interfaces for f in p.fixed_ips}
    found_subnets, networks, hosts, fips = await settled(
        reader.subnets(subnet_ids=subnet_ids) if mine else _nothing(),
        reader.networks(network_ids={p.network_id for p in mine}) if mine else _nothing(),
        reader.ports_on_subnets(subnet_ids=internal_subnets) if internal_subnets else _nothing(),
        reader.floating_ips(router_id=router_id) if router.gateway_network_id else _nothing(),
    )
    subnets = {s.id: s for s in found_subnets}
    topology = _Topology(
        router=router,
        gateway=gateway,
        interfaces=interfaces,
        subnets=subnets,
        networks={n.id: n for n in networks},
        hosts=tuple(
            sorted((p for p in hosts if not _router_owned(p)), key=lambda p: p.mac_address)
        ),
    )
    return topology, fips


def _port_order(port: PortRecord) -> tuple[str, str]:
    return (port.network_id, port.id)


def _router_owned(port: PortRecord) -> bool:
    return (
        port.device_owner in INTERFACE_OWNERS
        or port.device_owner in GATEWAY_OWNERS
        or port.device_owner.startswith(_ROUTER_OWNER_PREFIX)
    )


def _management_network(management: Management) -> wire.Network:
    return wire.Network(
        network_id=management.network_id,
        name="management",
        network_type="management",
        interface=wire.Interface(lladdr=management.mac, addresses=[str(management.address)]),
        subnets=[wire.Subnet(cidr=management.address.network, dhcp_enabled=False)],
    )


def _external_network(topology: _Topology) -> wire.Network | None:
    port = topology.gateway
    if port is None:
        return None
    return _network(topology, port, port.network_id, "external")


def _internal_networks(topology: _Topology) -> list[wire.Network]:
    networks: list[wire.Network] = []
    seen: set[str] = set()
    for port in topology.interfaces:
        network_id = port.network_id if port.network_id not in seen else _suffixed(port)
        seen.add(port.network_id)
        subnet_ids = {f.subnet_id for f in port.fixed_ips if f.subnet_id in topology.subnets}
        allocations = _allocations(topology, subnet_ids)
        networks.append(_network(topology, port, network_id, "internal", allocations))
    return networks


def _suffixed(port: PortRecord) -> str:
    """The appliance's id for a second router port on one network (e.g. a dual-stack
    network whose IPv4 and IPv6 subnets were added as two interfaces): ids must be unique
    in a configuration. ``neutron_network_id`` reads it back."""
    return f"{port.network_id}:{port.id}"


def neutron_network_id(appliance_network_id: str) -> str:
    """The Neutron network of an appliance's network id (``_suffixed`` or plain)."""
    return appliance_network_id.split(":", 1)[0]


def _network(
    topology: _Topology,
    port: PortRecord,
    network_id: str,
    network_type: Literal["external", "internal"],
    allocations: Sequence[wire.AddressAllocation] = (),
) -> wire.Network:
    """A network entry for a router ``port``: its MAC, addresses and subnets."""
    addresses: list[str] = []
    subnets: dict[str, wire.Subnet] = {}
    for fixed in port.fixed_ips:
        subnet = topology.subnets.get(fixed.subnet_id)
        if subnet is None:
            continue  # a subnet deleted meanwhile: the next event rebuilds the config
        cidr = ipaddress.ip_network(subnet.cidr, strict=False)
        addresses.append(f"{fixed.ip_address}/{cidr.prefixlen}")
        subnets.setdefault(subnet.id, _subnet(subnet, cidr))
    network = topology.networks.get(port.network_id)
    mtu = network.mtu if network is not None else None
    return wire.Network(
        network_id=network_id,
        name=network.name if network is not None else "",
        network_type=network_type,
        interface=wire.Interface(
            lladdr=port.mac_address,
            addresses=addresses,
            mtu=mtu if mtu is not None and 68 <= mtu <= 65535 else None,
        ),
        subnets=list(subnets.values()),
        address_allocations=list(allocations),
    )


def _subnet(subnet: SubnetRecord, cidr: IPNetwork) -> wire.Subnet:
    return wire.Subnet.model_validate(
        {
            "cidr": cidr,
            "gateway_ip": subnet.gateway_ip,
            "dhcp_enabled": subnet.enable_dhcp,
            "dns_nameservers": list(subnet.dns_nameservers),
            "host_routes": [_route(r) for r in subnet.host_routes],
            "ipv6_ra_mode": subnet.ipv6_ra_mode,
            "ipv6_address_mode": subnet.ipv6_address_mode,
        }
    )


def _route(route: RouteRecord) -> wire.Route:
    return wire.Route(
        destination=ipaddress.ip_network(route.destination, strict=False),
        nexthop=ipaddress.ip_address(route.nexthop),
    )


def _allocations(topology: _Topology, subnet_ids: set[str]) -> list[wire.AddressAllocation]:
    """The non-router ports with an address on ``subnet_ids``, with only those addresses."""
    allocations: list[wire.AddressAllocation] = []
    for port in topology.hosts:
        addresses = {
            f.ip_address: topology.subnets[f.subnet_id].enable_dhcp
            for f in port.fixed_ips
            if f.subnet_id in subnet_ids
        }
        if not addresses:
            continue
        allocations.append(
            wire.AddressAllocation(
                mac_address=port.mac_address,
                ip_addresses=addresses,
                hostname=hostname(port.dns_name, addresses),
                device_id=port.device_id,
            )
        )
    return allocations


def hostname(dns_name: str, addresses: Iterable[str]) -> str:
    """``dns_name`` if it is a host name, else ``host-<address>`` as Neutron's DHCP agent does.

    The address is the first IPv4 one (else the first), dots and colons as dashes:
    ``host-10-0-0-5``, ``host-fd00-1--5``.
    """
    if len(dns_name) <= 253 and _HOST_NAME.match(dns_name):
        return dns_name
    parsed = [ipaddress.ip_address(a) for a in addresses]
    first = next((a for a in parsed if a.version == 4), parsed[0] if parsed else None)
    if first is None:
        return "host"
    return "host-" + re.sub(r"[.:]", "-", str(first)).strip("-")


def _default_v4_gateway(external: wire.Network | None) -> ipaddress.IPv4Address | None:
    """The gateway of the external IPv4 subnet holding one of the router's addresses."""
    if external is None:
        return None
    own = [ipaddress.ip_interface(a).ip for a in external.interface.addresses]
    for subnet in external.subnets:
        gateway = subnet.gateway_ip
        if isinstance(gateway, ipaddress.IPv4Address) and any(ip in subnet.cidr for ip in own):
            return gateway
    return None


def _floating_ips(
    external: wire.Network | None,
    internals: Sequence[wire.Network],
    fips: Sequence[FloatingIPRecord],
) -> list[wire.FloatingIP]:
    """Associated floating IPs the appliance can NAT: an external IPv4 address, and
    the fixed IP on an internal IPv4 subnet (else the whole config would be refused)."""
    if external is None or not any(
        ipaddress.ip_interface(a).version == 4 for a in external.interface.addresses
    ):
        return []
    inside = [s.cidr for n in internals for s in n.subnets if s.cidr.version == 4]
    mapped: dict[ipaddress.IPv4Address, wire.FloatingIP] = {}
    for fip in sorted(fips, key=lambda f: f.floating_ip_address):
        if fip.fixed_ip_address is None:
            continue
        floating = ipaddress.ip_address(fip.floating_ip_address)
        fixed = ipaddress.ip_address(fip.fixed_ip_address)
        if not isinstance(floating, ipaddress.IPv4Address) or not isinstance(
            fixed, ipaddress.IPv4Address
        ):
            continue
        if any(fixed in cidr for cidr in inside):
            mapped.setdefault(floating, wire.FloatingIP(floating_ip=floating, fixed_ip=fixed))
    return list(mapped.values())
