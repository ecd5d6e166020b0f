"""What the metadata service answers itself: an instance's metadata, built from its port.

Pure functions over an ``InstanceView`` (what the network API knows of the
port an instance made a request from): no I/O, no HTTP framework. The
orchestrator's metadata service (``astara.orchestrator.metadata``) uses them
when no Nova metadata service is configured, so that a cloud-init image boots
on the embedded dataplane.

Two formats, the ones cloud-init reads:

- OpenStack's: ``/openstack`` (versions), ``/openstack/latest`` (files),
  ``/openstack/latest/meta_data.json`` and ``/openstack/latest/network_data.json``
  (the layout Nova's ``netutils.get_network_metadata`` produces);
- EC2's: ``/`` (versions), ``/{version}``, ``/{version}/meta-data/`` (keys) and
  ``/{version}/meta-data/{key}`` for ``instance-id``, ``hostname``,
  ``local-hostname``, ``local-ipv4`` and ``public-ipv4`` (only when the port
  has a floating IP), with ``version`` ``latest`` or ``2009-04-04``.

Invariants: every answer is about the one instance given, and ``answer``
returns None (404) for any path it does not know; trailing slashes are ignored.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

EC2_VERSIONS = ("2009-04-04", "latest")
"""The EC2 metadata versions served; all give the same answers."""

OPENSTACK_VERSIONS = ("latest",)
"""The OpenStack metadata versions served (cloud-init falls back to ``latest``)."""

AVAILABILITY_ZONE = "nova"
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
_LINK_TYPE = "phy"
_NOT_HOSTNAME = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class SubnetView:
    """A subnet of the instance's port, as far as network_data.json needs it."""

    subnet_id: str
    cidr: str
    ip_version: int
    gateway_ip: str | None = None
    enable_dhcp: bool = True
    ipv6_address_mode: str | None = None
    dns_nameservers: tuple[str, ...] = ()
    host_routes: tuple[tuple[str, str], ...] = ()  # (destination CIDR, nexthop)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceView:
    """What the network API knows of an instance, from the port its request came from."""

    device_id: str
    port_id: str
    name: str
    project_id: str
    mac_address: str
    network_id: str
    address: str  # the fixed IP the request came from
    fixed_ips: tuple[tuple[str, str], ...]  # (ip address, subnet id), in the port's order
    subnets: tuple[SubnetView, ...] = ()
    mtu: int | None = None
    dns_name: str = ""
    floating_ip: str | None = None

    @property
    def hostname(self) -> str:
        """A DNS label: the port's dns_name or name, else one made of the address."""
        for candidate in (self.dns_name, self.name):
            label = _NOT_HOSTNAME.sub("-", candidate.lower()).strip("-")[:63].strip("-")
            if label:
                return label
        return "host-" + _NOT_HOSTNAME.sub("-", self.address.lower()).strip("-")


@dataclass(frozen=True, slots=True)
class Answer:
    """One metadata answer: its content type and body (status 200)."""

    content_type: str
    body: bytes


def _text(lines: list[str] | str) -> Answer:
    content = lines if isinstance(lines, str) else "\n".join(lines)
    return Answer(TEXT, content.encode())


def _json(value: object) -> Answer:
    return Answer(JSON, json.dumps(value, sort_keys=True).encode())


def meta_data(view: InstanceView) -> dict[str, object]:
    """OpenStack's meta_data.json for the instance."""
    return {
        "uuid": view.device_id,
        "name": view.name or view.hostname,
        "hostname": view.hostname,
        "project_id": view.project_id,
        "availability_zone": AVAILABILITY_ZONE,
        "launch_index": 0,
        "public_keys": {},
        "keys": [],
        "meta": {},
        "devices": [],
    }


def _default_route(subnet: SubnetView) -> list[dict[str, str]]:
    if not subnet.gateway_ip:
        return []
    anywhere = "0.0.0.0" if subnet.ip_version == 4 else "::"
    return [{"network": anywhere, "netmask": anywhere, "gateway": subnet.gateway_ip}]


def _routes(subnet: SubnetView) -> list[dict[str, str]]:
    routes = _default_route(subnet)
    for destination, nexthop in subnet.host_routes:
        network = ipaddress.ip_network(destination, strict=False)
        routes.append(
            {
                "network": str(network.network_address),
                "netmask": str(network.netmask),
                "gateway": nexthop,
            }
        )
    return routes


def _dns(subnet: SubnetView) -> list[dict[str, str]]:
    return [{"type": "dns", "address": server} for server in subnet.dns_nameservers]


def _network_entry(
    view: InstanceView, subnet: SubnetView, address: str, number: int, link: str
) -> dict[str, object]:
    entry: dict[str, object] = {
        "id": f"network{number}",
        "link": link,
        "network_id": view.network_id,
    }
    if subnet.ip_version == 4 and subnet.enable_dhcp:
        entry["type"] = "ipv4_dhcp"  # as Nova: the address comes from DHCP
        return entry
    mode = subnet.ipv6_address_mode if subnet.ip_version == 6 else None
    entry["type"] = f"ipv6_{mode}" if mode else f"ipv{subnet.ip_version}"
    entry["ip_address"] = address
    entry["netmask"] = str(ipaddress.ip_network(subnet.cidr, strict=False).netmask)
    entry["routes"] = _routes(subnet)
    entry["services"] = _dns(subnet)
    return entry


def network_data(view: InstanceView) -> dict[str, object]:
    """OpenStack's network_data.json for the instance's port: one link, a network per fixed IP."""
    link_id = "tap" + view.port_id[:11]
    link: dict[str, object] = {
        "id": link_id,
        "vif_id": view.port_id,
        "type": _LINK_TYPE,
        "ethernet_mac_address": view.mac_address,
    }
    if view.mtu is not None:
        link["mtu"] = view.mtu
    subnets = {subnet.subnet_id: subnet for subnet in view.subnets}
    networks: list[dict[str, object]] = []
    services: list[dict[str, str]] = []
    for address, subnet_id in view.fixed_ips:
        subnet = subnets.get(subnet_id)
        if subnet is None:
            continue
        networks.append(_network_entry(view, subnet, address, len(networks), link_id))
        services += [s for s in _dns(subnet) if s not in services]
    return {"links": [link], "networks": networks, "services": services}


def _ec2_values(view: InstanceView) -> dict[str, str]:
    values = {
        "hostname": view.hostname,
        "instance-id": view.device_id,
        "local-hostname": view.hostname,
        "local-ipv4": view.address,
    }
    if view.floating_ip is not None:
        values["public-ipv4"] = view.floating_ip
    return values


def _openstack(view: InstanceView, parts: list[str]) -> Answer | None:
    if not parts:
        return _text(list(OPENSTACK_VERSIONS))
    if parts[0] not in OPENSTACK_VERSIONS:
        return None
    files: dict[str, Callable[[InstanceView], dict[str, object]]] = {
        "meta_data.json": meta_data,
        "network_data.json": network_data,
    }
    if len(parts) == 1:
        return _text(sorted(files))
    build = files.get(parts[1]) if len(parts) == 2 else None
    return _json(build(view)) if build is not None else None


def _ec2(view: InstanceView, parts: list[str]) -> Answer | None:
    if len(parts) == 1:
        return _text(["meta-data/"])
    if parts[1] != "meta-data" or len(parts) > 3:
        return None
    values = _ec2_values(view)
    if len(parts) == 2:
        return _text(sorted(values))
    value = values.get(parts[2])
    return _text(value) if value is not None else None


def answer(view: InstanceView, path: str) -> Answer | None:
    """The answer to ``GET path`` for the instance; None when there is none (404)."""
    parts = [part for part in path.split("/") if part]
    if not parts:
        return _text(list(EC2_VERSIONS))
    if parts[0] == "openstack":
        return _openstack(view, parts[1:])
    if parts[0] in EC2_VERSIONS:
        return _ec2(view, parts)
    return None
