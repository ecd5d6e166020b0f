"""bird2 configuration for one appliance: IPv6 router advertisements and the BGP uplink.

``render_bird`` is pure: a RouterPlan in, the text of ``bird.conf`` out, or
None when bird has nothing to do (no internal IPv6 subnet and no BGP). Called
by ``astara.appliance.services.bird``, which checks the text with ``bird -p``
and loads it with ``birdc configure``.

What the text holds:
- ``router id``: the external IPv4 address, else a value hashed from the
  external network's id (or the smallest network id), so it does not change
  when tenant networks come and go;
- ``protocol device``, so bird sees the NICs and their addresses;
- ``protocol radv tenant_ra`` with one ``interface`` block per internal NIC
  that has IPv6 subnets (flags as Neutron sets them, see ``_ra_flags``), the
  router's own address on that NIC as RDNSS, and bird's shortest intervals so
  a new instance has its address within about a second;
- with BGP: ``protocol static tenant_prefixes`` holding one ``unreachable``
  route per announced tenant prefix (bird has no kernel protocol here, so
  nothing reaches the kernel's FIB), and ``protocol bgp uplink`` to the
  external gateway exporting exactly those routes and importing nothing.

Invariants: the same plan gives the same bytes, whatever the order of its
networks and subnets (NICs sorted by name, prefixes by address), so an
unchanged plan never reloads bird. bird advertises only prefixes of addresses
configured on the NIC; every other address on it is skipped explicitly.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from astara.appliance.plan import (
    BgpPlan,
    NetworkKind,
    PlannedNetwork,
    PlannedSubnet,
    RouterPlan,
)

#: protocol names, also what ``birdc show protocols`` reports
RADV_PROTOCOL = "tenant_ra"
STATIC_PROTOCOL = "tenant_prefixes"
BGP_PROTOCOL = "uplink"

# bird's floors (RFC 4861 allows 3 s / 4 s): unsolicited RAs every 3-4 s
MIN_RA_INTERVAL = 3
MAX_RA_INTERVAL = 4
# RAs, including answers to a solicitation, at most this far apart (bird's default is 3 s)
MIN_DELAY = 1
# lifetimes far beyond the interval: instances keep their router and resolver
# across a bird restart; a stopping bird withdraws itself with lifetime 0
DEFAULT_LIFETIME = 600
RDNSS_LIFETIME = 600
LOG_SIZE = 1 << 20

_SLAAC = "slaac"
_STATELESS = "dhcpv6-stateless"
_STATEFUL = "dhcpv6-stateful"


@dataclass(frozen=True)
class _Prefix:
    cidr: ipaddress.IPv6Network
    autonomous: bool


def render_bird(plan: RouterPlan, *, log_file: Path | None = None) -> str | None:
    """The ``bird.conf`` for ``plan``, or None if bird has nothing to do.

    ``log_file``: where bird logs (rotated at 1 MiB to ``<log_file>.old``);
    None leaves bird's default (syslog).
    """
    radv = [n for n in plan.internals if _v6_subnets(n)]
    if not radv and plan.bgp is None:
        return None
    parts = [_header(plan, log_file), "protocol device {\n}\n"]
    if radv:
        parts.append(_radv(sorted(radv, key=lambda n: n.ifname)))
    if plan.bgp is not None:
        parts.append(_static(plan.bgp))
        parts.append(_bgp(plan.bgp))
    return "\n".join(parts)


def router_id(plan: RouterPlan) -> ipaddress.IPv4Address:
    """The external IPv4 address, else a stable non-zero value derived from network ids."""
    external = plan.external
    if external is not None:
        own = external.own_address(4)
        if own is not None:
            return ipaddress.IPv4Address(own.ip)
    if external is not None:
        key = external.network_id
    else:
        key = min((n.network_id for n in plan.networks), default="")
    digest = hashlib.sha256(f"astara-router-id:{key}".encode()).digest()
    value = int.from_bytes(digest[:4], "big")
    return ipaddress.IPv4Address(value or 1)


def _header(plan: RouterPlan, log_file: Path | None) -> str:
    lines = ["# bird.conf rendered by astara from the router's plan; do not edit."]
    if log_file is not None:
        lines.append(
            f'log "{log_file}" {LOG_SIZE} "{log_file}.old" {{ info, warning, error, fatal, bug }};'
        )
    lines.append(f"router id {router_id(plan)};")
    return "\n".join(lines) + "\n"


def _v6_subnets(network: PlannedNetwork) -> list[PlannedSubnet]:
    return [s for s in network.subnets if isinstance(s.cidr, ipaddress.IPv6Network)]


def _mode(subnet: PlannedSubnet) -> str:
    """The subnet's address mode; none given means SLAAC (the seed's form)."""
    return subnet.ipv6_ra_mode or subnet.ipv6_address_mode or _SLAAC


def _ra_flags(subnets: Iterable[PlannedSubnet]) -> tuple[bool, bool]:
    """(managed, other config) for the NIC, as Neutron's radvd sets them."""
    modes = {_mode(s) for s in subnets}
    return _STATEFUL in modes, _STATELESS in modes


def _prefixes(subnets: Iterable[PlannedSubnet]) -> list[_Prefix]:
    found: dict[ipaddress.IPv6Network, _Prefix] = {}
    for subnet in subnets:
        assert isinstance(subnet.cidr, ipaddress.IPv6Network)
        # SLAAC forms addresses from a /64 only; other lengths are on-link only
        autonomous = _mode(subnet) in (_SLAAC, _STATELESS) and subnet.cidr.prefixlen == 64
        found.setdefault(subnet.cidr, _Prefix(subnet.cidr, autonomous))
    return sorted(found.values(), key=lambda p: (p.cidr.network_address, p.cidr.prefixlen))


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _radv_interface(network: PlannedNetwork) -> list[str]:
    subnets = _v6_subnets(network)
    managed, other = _ra_flags(subnets)
    lines = [
        f'  interface "{network.ifname}" {{',
        f"    min ra interval {MIN_RA_INTERVAL};",
        f"    max ra interval {MAX_RA_INTERVAL};",
        f"    min delay {MIN_DELAY};",
        "    solicited ra unicast yes;",
        f"    default lifetime {DEFAULT_LIFETIME};",
        f"    managed {_yes(managed)};",
        f"    other config {_yes(other)};",
    ]
    for prefix in _prefixes(subnets):
        lines += [
            f"    prefix {prefix.cidr} {{",
            "      onlink yes;",
            f"      autonomous {_yes(prefix.autonomous)};",
            "    };",
        ]
    # any other address on the NIC is not the tenant's to learn
    lines += ["    prefix ::/0 {", "      skip yes;", "    };"]
    own = network.own_address(6)
    if own is not None:
        lines += [
            "    rdnss {",
            f"      lifetime {RDNSS_LIFETIME};",
            f"      ns {own.ip};",
            "    };",
        ]
    lines.append("  };")
    return lines


def _radv(networks: Iterable[PlannedNetwork]) -> str:
    lines = [f"protocol radv {RADV_PROTOCOL} {{"]
    for network in networks:
        assert network.kind is NetworkKind.INTERNAL
        lines += _radv_interface(network)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _static(bgp: BgpPlan) -> str:
    lines = [f"protocol static {STATIC_PROTOCOL} {{", "  ipv6;"]
    for prefix in sorted(set(bgp.prefixes), key=lambda p: (p.network_address, p.prefixlen)):
        lines.append(f"  route {prefix} unreachable;")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _bgp(bgp: BgpPlan) -> str:
    lines = [
        f"protocol bgp {BGP_PROTOCOL} {{",
        f"  local {bgp.local_address} as {bgp.asn};",
        f"  neighbor {bgp.neighbor} as {bgp.neighbor_asn};",
        f'  interface "{bgp.ifname}";',
        "  direct;",
        # open the session 1 s after start (default 5 s), retry a refused
        # connection after 5 s (default 120 s), wait 1-30 s after an error (60-300 s)
        "  connect delay time 1;",
        "  connect retry time 5;",
        "  error wait time 1, 30;",
        "  ipv6 {",
        "    import none;",
        "    next hop self;",
        f'    export where proto = "{STATIC_PROTOCOL}";',
        "  };",
        "}",
    ]
    return "\n".join(lines) + "\n"
