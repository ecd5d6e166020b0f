"""From a pushed configuration to a RouterPlan: validated, resolved, ready to render.

``build_plan`` is pure: it takes the wire configuration and the links the
kernel has (name, MAC) and either returns a RouterPlan in which every cross
reference has been checked, or raises ConfigError naming the field and the
reason. Nothing on the system is touched before a plan exists, which is what
makes a rejected config leave the previous one running.

Rules checked here, beyond the shape checks of the wire model:
- at most one management and one external network; network ids unique;
- every interface resolves to a kernel link (by MAC where given, else name),
  and no link is used twice;
- a bare address takes its prefix from the network's subnet that holds it
  (else /32 or /128); an address outside every subnet of its network is refused;
- allocations: addresses inside the network's subnets, no address or MAC twice;
- floating IPs: the fixed IP is on an internal network, the floating IP is
  unique, and there is an external IPv4 address to NAT behind;
- routes: the next hop is on a connected prefix;
- BGP: ``asn`` needs ``neighbor_asn`` and an external IPv6 gateway.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from astara.appliance.errors import ConfigError
from astara.wire import appliance_v1 as wire

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class NetworkKind(Enum):
    MANAGEMENT = "management"
    EXTERNAL = "external"
    INTERNAL = "internal"


@dataclass(frozen=True)
class Link:
    """A kernel link as seen by the agent."""

    ifname: str
    mac: str


@dataclass(frozen=True)
class PlannedRoute:
    destination: IPNetwork
    nexthop: IPAddress


@dataclass(frozen=True)
class PlannedSubnet:
    cidr: IPNetwork
    gateway_ip: IPAddress | None
    dhcp_enabled: bool
    dns_nameservers: tuple[IPAddress, ...]
    host_routes: tuple[PlannedRoute, ...]
    ipv6_ra_mode: str | None
    ipv6_address_mode: str | None

    @property
    def version(self) -> int:
        return self.cidr.version


@dataclass(frozen=True)
class PlannedHost:
    """One address allocation: a tenant port served by DHCP/DNS and the metadata proxy."""

    mac: str
    hostname: str  # as given, possibly with a domain ("vm-1.local")
    device_id: str
    addresses: tuple[tuple[IPAddress, bool], ...]  # (address, served by DHCP)

    @property
    def short_name(self) -> str:
        return self.hostname.split(".", 1)[0]


@dataclass(frozen=True)
class PlannedNetwork:
    network_id: str
    name: str
    kind: NetworkKind
    ifname: str  # the kernel's name for the resolved link
    mac: str
    addresses: tuple[IPInterface, ...]
    mtu: int | None
    up: bool
    subnets: tuple[PlannedSubnet, ...]
    hosts: tuple[PlannedHost, ...]

    def own_address(self, version: int) -> IPInterface | None:
        """The router's first address of that IP version on this network."""
        return next((a for a in self.addresses if a.version == version), None)


@dataclass(frozen=True)
class FloatingIPMapping:
    floating_ip: ipaddress.IPv4Address
    fixed_ip: ipaddress.IPv4Address
    ifname: str  # the internal NIC behind which the fixed IP lives

    @functools.cached_property
    def host_address(self) -> ipaddress.IPv4Interface:
        """The floating IP as a /32 on the external NIC (parsed once per mapping)."""
        return ipaddress.IPv4Interface((self.floating_ip, 32))


@dataclass(frozen=True)
class BgpPlan:
    asn: int
    neighbor_asn: int
    neighbor: ipaddress.IPv6Address
    local_address: ipaddress.IPv6Address
    ifname: str
    prefixes: tuple[ipaddress.IPv6Network, ...]  # tenant prefixes announced


@dataclass(frozen=True)
class RouterPlan:
    networks: tuple[PlannedNetwork, ...]
    routes: tuple[PlannedRoute, ...]  # static routes and subnet host routes
    default_v4_gateway: ipaddress.IPv4Address | None
    default_v6_gateway: ipaddress.IPv6Address | None
    floating_ips: tuple[FloatingIPMapping, ...]
    bgp: BgpPlan | None
    tenant_id: str | None
    hostname: str | None
    orchestrator: tuple[IPAddress, int] | None  # metadata destination

    def of_kind(self, kind: NetworkKind) -> tuple[PlannedNetwork, ...]:
        return tuple(n for n in self.networks if n.kind is kind)

    @property
    def management(self) -> PlannedNetwork | None:
        return next(iter(self.of_kind(NetworkKind.MANAGEMENT)), None)

    @property
    def external(self) -> PlannedNetwork | None:
        return next(iter(self.of_kind(NetworkKind.EXTERNAL)), None)

    @property
    def internals(self) -> tuple[PlannedNetwork, ...]:
        return self.of_kind(NetworkKind.INTERNAL)


def same_networks(old: Sequence[PlannedNetwork], new: Sequence[PlannedNetwork]) -> bool:
    """True if ``new`` holds the very objects of ``old``: nothing in them changed.

    ``build_plan`` keeps the planned object of an unchanged network, so renderers
    memoise on identity; a memo holding ``old`` keeps its ids from being reused.
    """
    return len(old) == len(new) and all(a is b for a, b in zip(old, new, strict=True))


def build_plan(
    config: wire.Configuration,
    links: Sequence[Link],
    *,
    previous: tuple[wire.Configuration, RouterPlan] | None = None,
) -> RouterPlan:
    """Validate ``config`` against itself and the kernel's ``links``; raise ConfigError.

    ``previous`` is the configuration last applied and its plan: a network
    that is unchanged and on the same NIC keeps its planned object, so that
    planning and rendering a big router's unchanged networks is skipped
    (services compare planned networks by identity).
    """
    _check_unique_kinds(config.networks)
    reuse: dict[str, tuple[wire.Network, PlannedNetwork]] = {}
    if previous is not None:
        reuse = {
            net.network_id: (net, planned)
            for net, planned in zip(previous[0].networks, previous[1].networks, strict=True)
        }
    networks = _plan_networks(config.networks, links, reuse)
    connected = [a.network for n in networks for a in n.addresses]
    routes = _plan_routes(config, networks, connected)
    external = next((n for n in networks if n.kind is NetworkKind.EXTERNAL), None)
    v4_gw, v6_gw = _default_gateways(config, external)
    known: dict[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address], FloatingIPMapping] = {}
    if previous is not None and same_networks(previous[1].networks, networks):
        # the same pair behind the same networks maps to the same NIC: keep the object
        known = {(m.floating_ip, m.fixed_ip): m for m in previous[1].floating_ips}
    return RouterPlan(
        networks=networks,
        routes=routes,
        default_v4_gateway=v4_gw,
        default_v6_gateway=v6_gw,
        floating_ips=_plan_floating_ips(config, networks, external, known),
        bgp=_plan_bgp(config, networks, external, v6_gw),
        tenant_id=config.tenant_id,
        hostname=config.hostname,
        orchestrator=(
            (config.orchestrator.address, config.orchestrator.metadata_port)
            if config.orchestrator
            else None
        ),
    )


def _check_unique_kinds(networks: Sequence[wire.Network]) -> None:
    seen_ids: set[str] = set()
    kinds: dict[str, int] = {}
    for index, net in enumerate(networks):
        if net.network_id in seen_ids:
            raise ConfigError(f"networks.{index}.network_id", f"{net.network_id!r} appears twice")
        seen_ids.add(net.network_id)
        kinds[net.network_type] = kinds.get(net.network_type, 0) + 1
        if net.network_type != "internal" and kinds[net.network_type] > 1:
            raise ConfigError(
                f"networks.{index}.network_type", f"more than one {net.network_type} network"
            )


def _resolve_link(index: int, iface: wire.Interface, links: Sequence[Link]) -> Link:
    field = f"networks.{index}.interface"
    if iface.lladdr is not None:
        found = next((lk for lk in links if lk.mac == iface.lladdr), None)
        if found is None:
            raise ConfigError(f"{field}.lladdr", f"no interface with MAC {iface.lladdr}")
        return found
    if iface.ifname is None:
        raise ConfigError(field, "needs lladdr or ifname to find the interface")
    found = next((lk for lk in links if lk.ifname == iface.ifname), None)
    if found is None:
        raise ConfigError(f"{field}.ifname", f"no interface named {iface.ifname!r}")
    return found


def _plan_networks(
    networks: Sequence[wire.Network],
    links: Sequence[Link],
    reuse: dict[str, tuple[wire.Network, PlannedNetwork]],
) -> tuple[PlannedNetwork, ...]:
    planned: list[PlannedNetwork] = []
    used: dict[str, int] = {}
    for index, net in enumerate(networks):
        link = _resolve_link(index, net.interface, links)
        if link.ifname in used:
            raise ConfigError(
                f"networks.{index}.interface",
                f"{link.ifname} is already used by networks.{used[link.ifname]}",
            )
        used[link.ifname] = index
        known = reuse.get(net.network_id)
        if known is not None and known[1].ifname == link.ifname and known[0] == net:
            planned.append(known[1])
            continue
        subnets = tuple(
            _plan_subnet(f"networks.{index}.subnets.{i}", s) for i, s in enumerate(net.subnets)
        )
        addresses = tuple(
            _plan_address(f"networks.{index}.interface.addresses.{i}", text, subnets)
            for i, text in enumerate(net.interface.addresses)
        )
        hosts = _plan_hosts(f"networks.{index}.address_allocations", net, subnets)
        subnets = subnets or _implied_subnets(addresses)
        planned.append(
            PlannedNetwork(
                network_id=net.network_id,
                name=net.name,
                kind=NetworkKind(net.network_type),
                ifname=link.ifname,
                mac=link.mac,
                addresses=addresses,
                mtu=net.interface.mtu,
                up=net.interface.state == "up",
                subnets=subnets,
                hosts=hosts,
            )
        )
    return tuple(planned)


def _implied_subnets(addresses: Sequence[IPInterface]) -> tuple[PlannedSubnet, ...]:
    """Subnets read off the interface's addresses when the config names none (the seed's form)."""
    prefixes = dict.fromkeys(
        a.network
        for a in addresses
        if a.network.prefixlen < a.max_prefixlen and not a.is_link_local
    )
    return tuple(PlannedSubnet(p, None, True, (), (), None, None) for p in prefixes)


def _plan_subnet(field: str, subnet: wire.Subnet) -> PlannedSubnet:
    if subnet.gateway_ip is not None and subnet.gateway_ip not in subnet.cidr:
        raise ConfigError(f"{field}.gateway_ip", f"{subnet.gateway_ip} is not in {subnet.cidr}")
    for i, route in enumerate(subnet.host_routes):
        if route.destination.version != route.nexthop.version:
            raise ConfigError(
                f"{field}.host_routes.{i}", "destination and nexthop differ in IP version"
            )
    v6_only = (subnet.ipv6_ra_mode, subnet.ipv6_address_mode)
    if subnet.cidr.version == 4 and any(v6_only):
        raise ConfigError(f"{field}.ipv6_ra_mode", "IPv6 modes on an IPv4 subnet")
    return PlannedSubnet(
        cidr=subnet.cidr,
        gateway_ip=subnet.gateway_ip,
        dhcp_enabled=subnet.dhcp_enabled,
        dns_nameservers=tuple(subnet.dns_nameservers),
        host_routes=tuple(PlannedRoute(r.destination, r.nexthop) for r in subnet.host_routes),
        ipv6_ra_mode=subnet.ipv6_ra_mode,
        ipv6_address_mode=subnet.ipv6_address_mode,
    )


def _plan_address(field: str, text: str, subnets: Sequence[PlannedSubnet]) -> IPInterface:
    address = ipaddress.ip_interface(text)
    holder = next((s for s in subnets if address.ip in s.cidr), None)
    if subnets and holder is None and address.ip.version in {s.version for s in subnets}:
        raise ConfigError(field, f"{address.ip} is outside the network's subnets")
    if "/" not in text:
        prefix = holder.cidr.prefixlen if holder else address.ip.max_prefixlen
        return ipaddress.ip_interface(f"{address.ip}/{prefix}")
    if holder is not None and address.network.prefixlen != holder.cidr.prefixlen:
        raise ConfigError(
            field,
            f"prefix length /{address.network.prefixlen} differs from its subnet {holder.cidr}",
        )
    return address


def _plan_hosts(
    field: str, net: wire.Network, subnets: Sequence[PlannedSubnet]
) -> tuple[PlannedHost, ...]:
    hosts: list[PlannedHost] = []
    macs: set[str] = set()
    seen: set[IPAddress] = set()
    for index, alloc in enumerate(net.address_allocations):
        here = f"{field}.{index}"
        if alloc.mac_address in macs:
            raise ConfigError(f"{here}.mac_address", f"{alloc.mac_address} appears twice")
        macs.add(alloc.mac_address)
        addresses: list[tuple[IPAddress, bool]] = []
        for text, dhcp in alloc.ip_addresses.items():
            ip = ipaddress.ip_address(text)
            if ip in seen:
                raise ConfigError(f"{here}.ip_addresses", f"{ip} is allocated twice")
            seen.add(ip)
            if subnets and not any(ip in s.cidr for s in subnets):
                raise ConfigError(f"{here}.ip_addresses", f"{ip} is outside the network's subnets")
            addresses.append((ip, dhcp))
        hosts.append(
            PlannedHost(alloc.mac_address, alloc.hostname, alloc.device_id, tuple(addresses))
        )
    return tuple(hosts)


def _on_link(nexthop: IPAddress, connected: Iterable[IPNetwork]) -> bool:
    return any(nexthop in prefix for prefix in connected if prefix.prefixlen < prefix.max_prefixlen)


def _plan_routes(
    config: wire.Configuration,
    networks: Sequence[PlannedNetwork],
    connected: Sequence[IPNetwork],
) -> tuple[PlannedRoute, ...]:
    routes: list[PlannedRoute] = []
    for index, route in enumerate(config.static_routes):
        field = f"static_routes.{index}"
        if route.destination.version != route.nexthop.version:
            raise ConfigError(field, "destination and nexthop differ in IP version")
        if not _on_link(route.nexthop, connected):
            raise ConfigError(f"{field}.nexthop", f"{route.nexthop} is not on a connected network")
        routes.append(PlannedRoute(route.destination, route.nexthop))
    own = {a.ip for n in networks for a in n.addresses}
    for net in networks:
        for subnet in net.subnets:
            for host_route in subnet.host_routes:
                # a host route through the router itself is for the instances only
                if host_route.nexthop not in own and host_route.nexthop in subnet.cidr:
                    routes.append(host_route)
    return tuple(dict.fromkeys(routes))


def _default_gateways(
    config: wire.Configuration, external: PlannedNetwork | None
) -> tuple[ipaddress.IPv4Address | None, ipaddress.IPv6Address | None]:
    v4: ipaddress.IPv4Address | None = config.default_v4_gateway
    v6: ipaddress.IPv6Address | None = None
    if external is None:
        if v4 is not None:
            raise ConfigError("default_v4_gateway", "there is no external network")
        return None, None
    for subnet in external.subnets:
        gateway = subnet.gateway_ip
        if isinstance(gateway, ipaddress.IPv4Address) and v4 is None:
            v4 = gateway
        elif isinstance(gateway, ipaddress.IPv6Address) and v6 is None:
            v6 = gateway
    if v4 is not None and not _on_link(v4, [a.network for a in external.addresses]):
        raise ConfigError("default_v4_gateway", f"{v4} is not on the external network")
    return v4, v6


def _plan_floating_ips(
    config: wire.Configuration,
    networks: Sequence[PlannedNetwork],
    external: PlannedNetwork | None,
    known: dict[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address], FloatingIPMapping],
) -> tuple[FloatingIPMapping, ...]:
    """Map each floating IP to the internal NIC of its fixed IP; ``known`` pairs are kept."""
    if not config.floating_ips:
        return ()
    if external is None or external.own_address(4) is None:
        raise ConfigError(
            "floating_ips", "floating IPs need an external network with an IPv4 address"
        )
    # internal IPv4 prefixes by length, so each fixed IP is found with a lookup or two
    # rather than a scan of every network (200 floating IPs x 50 networks)
    prefixes: dict[int, dict[ipaddress.IPv4Network, PlannedNetwork]] = {}
    for net in networks:
        if net.kind is NetworkKind.INTERNAL:
            for address in net.addresses:
                if isinstance(address, ipaddress.IPv4Interface):
                    prefixes.setdefault(address.network.prefixlen, {}).setdefault(
                        address.network, net
                    )
    mappings: list[FloatingIPMapping] = []
    seen: set[ipaddress.IPv4Address] = set()
    for index, fip in enumerate(config.floating_ips):
        field = f"floating_ips.{index}"
        if fip.floating_ip in seen:
            raise ConfigError(f"{field}.floating_ip", f"{fip.floating_ip} appears twice")
        seen.add(fip.floating_ip)
        mapping = known.get((fip.floating_ip, fip.fixed_ip))
        if mapping is not None:
            mappings.append(mapping)
            continue
        behind = next(
            (
                by_prefix[found]
                for length, by_prefix in sorted(prefixes.items(), reverse=True)
                if (found := ipaddress.IPv4Network((fip.fixed_ip, length), strict=False))
                in by_prefix
            ),
            None,
        )
        if behind is None:
            raise ConfigError(f"{field}.fixed_ip", f"{fip.fixed_ip} is not on an internal network")
        mappings.append(FloatingIPMapping(fip.floating_ip, fip.fixed_ip, behind.ifname))
    return tuple(mappings)


def _plan_bgp(
    config: wire.Configuration,
    networks: Sequence[PlannedNetwork],
    external: PlannedNetwork | None,
    v6_gateway: ipaddress.IPv6Address | None,
) -> BgpPlan | None:
    if config.asn is None:
        if config.neighbor_asn is not None:
            raise ConfigError("asn", "neighbor_asn is set but asn is not")
        return None
    if config.neighbor_asn is None:
        raise ConfigError("neighbor_asn", "required when asn is set")
    local = external.own_address(6) if external else None
    if external is None or v6_gateway is None or local is None:
        raise ConfigError("asn", "BGP needs an external network with an IPv6 address and gateway")
    prefixes = tuple(
        dict.fromkeys(
            s.cidr
            for n in networks
            if n.kind is NetworkKind.INTERNAL
            for s in n.subnets
            if isinstance(s.cidr, ipaddress.IPv6Network)
        )
    )
    assert isinstance(local.ip, ipaddress.IPv6Address)
    return BgpPlan(
        asn=config.asn,
        neighbor_asn=config.neighbor_asn,
        neighbor=v6_gateway,
        local_address=local.ip,
        ifname=external.ifname,
        prefixes=prefixes,
    )
