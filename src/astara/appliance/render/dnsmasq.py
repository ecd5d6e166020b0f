"""dnsmasq texts for one appliance: the main conf, the DHCP hosts and options, the names.

Pure: a RouterPlan and the file paths in, four strings out; no I/O. Called by
``astara.appliance.services.dnsmasq``, which writes them and decides between
nothing, SIGHUP and a restart.

The split between the main conf and the three data files is the contract with
that service: everything that changes when tenant ports come and go (MAC
reservations, per-subnet options, names) lives in the files dnsmasq re-reads
on SIGHUP; the main conf changes only with the appliance's shape (its internal
NICs, their subnets, upstream resolvers). Adding, moving or renaming a port
therefore never restarts dnsmasq.

Invariants of the rendered texts:
- DHCP and DNS are bound to the internal NICs only (``bind-dynamic``, one
  ``interface=`` each, ``except-interface=lo``); the external and management
  NICs, and loopback, never get an answer. dnsmasq also drops a query to an
  internal address that arrives on another NIC.
- Nothing from the host leaks in: no /etc/resolv.conf, /etc/hosts or default
  conf file is read; upstream resolvers are only the subnets' ``dns_nameservers``
  (never the appliance's own addresses, which would loop).
- Every DHCP range is ``static``: only reserved MACs get an address. IPv6
  ranges exist for ``dhcpv6-stateful`` (addresses) and ``dhcpv6-stateless``
  (options only) subnets; dnsmasq never sends router advertisements (bird does).
- A subnet is served only if the appliance has an address in it: that address
  is the clients' router and DNS server.
- The same plan renders the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from astara.appliance.plan import (
    IPAddress,
    IPInterface,
    PlannedHost,
    PlannedNetwork,
    PlannedSubnet,
    RouterPlan,
)

#: lease time handed to clients; renewals at half of it pick up a moved reservation
LEASE_SECONDS = 86400
#: upper bound on leases; dnsmasq's default (1,000) is smaller than a /22
LEASE_MAX = 65536

STATEFUL = "dhcpv6-stateful"
STATELESS = "dhcpv6-stateless"
_HEADER = "# Rendered by astara for one appliance; edits are overwritten.\n"


@dataclass(frozen=True)
class DnsmasqPaths:
    """Where the files of one dnsmasq live."""

    conf: Path
    hosts: Path
    opts: Path
    addn_hosts: Path
    leases: Path
    pid: Path

    @classmethod
    def in_dir(cls, directory: Path) -> DnsmasqPaths:
        return cls(
            conf=directory / "dnsmasq.conf",
            hosts=directory / "dhcp-hosts",
            opts=directory / "dhcp-opts",
            addn_hosts=directory / "addn-hosts",
            leases=directory / "leases",
            pid=directory / "dnsmasq.pid",
        )


@dataclass(frozen=True)
class DnsmasqFiles:
    """The rendered texts. ``conf`` needs a restart to change; the others a SIGHUP."""

    conf: str
    hosts: str
    opts: str
    addn_hosts: str


@dataclass(frozen=True)
class _Scope:
    """A subnet dnsmasq serves by DHCP, with its tag and the appliance's address on it."""

    tag: str
    network: PlannedNetwork
    subnet: PlannedSubnet
    own: IPInterface


def render_dnsmasq(plan: RouterPlan, paths: DnsmasqPaths) -> DnsmasqFiles | None:
    """The four texts for ``plan``, or None if no internal NIC has an address to serve on."""
    networks = _served_networks(plan)
    if not networks:
        return None
    scopes = tuple(_scopes(networks))
    return DnsmasqFiles(
        conf=_render_conf(networks, scopes, paths),
        hosts=_render_hosts(networks, scopes),
        opts=_render_opts(scopes),
        addn_hosts=_render_addn_hosts(networks),
    )


def _served_networks(plan: RouterPlan) -> tuple[PlannedNetwork, ...]:
    return tuple(n for n in plan.internals if n.addresses)


def _scopes(networks: tuple[PlannedNetwork, ...]) -> Iterator[_Scope]:
    for network in networks:
        for index, subnet in enumerate(network.subnets):
            if not subnet.dhcp_enabled:
                continue
            if subnet.version == 6 and subnet.ipv6_address_mode not in (STATEFUL, STATELESS):
                continue  # SLAAC only: bird's RAs do everything
            own = next((a for a in network.addresses if a.ip in subnet.cidr), None)
            if own is not None:
                yield _Scope(f"{network.ifname}-s{index}", network, subnet, own)


def _render_conf(
    networks: tuple[PlannedNetwork, ...], scopes: tuple[_Scope, ...], paths: DnsmasqPaths
) -> str:
    lines = [
        _HEADER.rstrip("\n"),
        "# DNS and DHCP on the internal NICs only, never on loopback, external or management.",
        *(f"interface={n.ifname}" for n in networks),
        "except-interface=lo",
        "bind-dynamic",
        "# Nothing from the host: no resolv.conf, no /etc/hosts.",
        "no-resolv",
        "no-hosts",
        "# Plain names and private reverse lookups are answered here or not at all.",
        "domain-needed",
        "bogus-priv",
        "# The only DHCP server on these networks; static ranges serve reserved MACs only.",
        "dhcp-authoritative",
        f"dhcp-lease-max={LEASE_MAX}",
        "# No enable-ra and no ra-* modes: router advertisements come from bird.",
        f"pid-file={paths.pid}",
        f"dhcp-leasefile={paths.leases}",
        f"dhcp-hostsfile={paths.hosts}",
        f"dhcp-optsfile={paths.opts}",
        f"addn-hosts={paths.addn_hosts}",
    ]
    lines += [f"server={server}" for server in _upstreams(networks)]
    lines += [_dhcp_range(scope) for scope in scopes]
    return "\n".join(lines) + "\n"


def _upstreams(networks: tuple[PlannedNetwork, ...]) -> tuple[IPAddress, ...]:
    own = {a.ip for n in networks for a in n.addresses}
    found = (s for n in networks for sub in n.subnets for s in sub.dns_nameservers)
    return tuple(dict.fromkeys(s for s in found if s not in own))


def _dhcp_range(scope: _Scope) -> str:
    cidr = scope.subnet.cidr
    mask = cidr.netmask if cidr.version == 4 else cidr.prefixlen
    return f"dhcp-range=set:{scope.tag},{cidr.network_address},static,{mask},{LEASE_SECONDS}s"


def _render_hosts(networks: tuple[PlannedNetwork, ...], scopes: tuple[_Scope, ...]) -> str:
    """One ``dhcp-host`` line per reserved MAC: its DHCP-served addresses and short name."""
    lines = [_HEADER.rstrip("\n")]
    for network in networks:
        served = [s.subnet for s in scopes if s.network is network]
        for host in network.hosts:
            addresses = [_dhcp_address(ip) for ip in _leased(host, served)]
            if addresses:
                lines.append(",".join([host.mac, *addresses, _names(host)[1]]))
    return "\n".join(lines) + "\n"


def _leased(host: PlannedHost, served: list[PlannedSubnet]) -> Iterator[IPAddress]:
    """The host's addresses DHCP hands out: flagged, in a served subnet, not SLAAC/stateless."""
    for ip, dhcp in host.addresses:
        subnet = next((s for s in served if ip in s.cidr), None)
        if (
            dhcp
            and subnet is not None
            and (ip.version == 4 or subnet.ipv6_address_mode == STATEFUL)
        ):
            yield ip


def _dhcp_address(ip: IPAddress) -> str:
    return f"[{ip}]" if ip.version == 6 else str(ip)


def _render_opts(scopes: tuple[_Scope, ...]) -> str:
    """Per-subnet DHCP options: router, DNS server, classless routes, domain search."""
    lines = [_HEADER.rstrip("\n")]
    for scope in scopes:
        tag, own = f"tag:{scope.tag}", scope.own.ip
        domains = sorted({d for h in scope.network.hosts if (d := _names(h)[2])})
        if scope.subnet.version == 4:
            lines.append(f"{tag},option:router,{own}")
            lines.append(f"{tag},option:dns-server,{own}")
            routes = _classless_routes(scope)
            if routes:
                lines.append(f"{tag},option:classless-static-route,{routes}")
            if domains:
                lines.append(f"{tag},option:domain-search,{','.join(domains)}")
        else:
            lines.append(f"{tag},option6:dns-server,[{own}]")
            if domains:
                lines.append(f"{tag},option6:domain-search,{','.join(domains)}")
    return "\n".join(lines) + "\n"


def _classless_routes(scope: _Scope) -> str:
    """Option 121 from the subnet's host routes, plus the default route RFC 3442 asks for.

    A client that gets option 121 ignores option 3 (router), so the default
    route through the appliance is added unless a host route already sets one.
    """
    routes = [r for r in scope.subnet.host_routes if r.destination.version == 4]
    if not routes:
        return ""
    pairs = [f"{r.destination},{r.nexthop}" for r in routes]
    if not any(r.destination.prefixlen == 0 for r in routes):
        pairs.append(f"0.0.0.0/0,{scope.own.ip}")
    return ",".join(pairs)


def _render_addn_hosts(networks: tuple[PlannedNetwork, ...]) -> str:
    """Every allocated address with its full and short name, for forward and reverse lookups."""
    lines = [_HEADER.rstrip("\n")]
    for network in networks:
        for host in network.hosts:
            full, short, _ = _names(host)
            names = short if full == short else f"{full} {short}"
            lines += [f"{ip} {names}" for ip, _dhcp in host.addresses]
    return "\n".join(lines) + "\n"


def _names(host: PlannedHost) -> tuple[str, str, str]:
    """(full name, short name, domain or "") of a host; a trailing dot is dropped."""
    full = host.hostname.rstrip(".")
    short, _, domain = full.partition(".")
    return full, short, domain
