"""The router's firewall and NAT as one ``nft -f`` file: the table ``inet astara``.

``render_ruleset`` is pure. Its output replaces the whole table in a single
transaction (create it empty, delete it, declare it in full), so loading it
works whether or not the table exists and the kernel never sees half a ruleset.
Called by ``astara.appliance.services.firewall``, which owns loading it.

Invariants of the text:
- deterministic: interfaces, prefixes and floating IPs are sorted, so the same
  plan (in any order) renders the same bytes and a repeated push changes nothing;
- the management NIC is never forwarded to or from, and never NATed;
- sizes do not grow the rule count: interfaces, prefixes and floating IPs live
  in named sets and maps, so a router with 50 networks and 200 floating IPs has
  about as many rules as a small one (the metadata redirect is one rule per
  internal NIC; nat chains see only the first packet of each connection);
- nothing is rendered for what the plan lacks (no external IPv4 address, no
  SNAT; no floating IPs, no maps), so the text never names an empty set.

Policy, by chain:
- input (drop): established/related, loopback, ICMP/ICMPv6; the appliance API on
  the management NIC; DHCP, DHCPv6, DNS and the metadata proxy on internal NICs;
  BGP with the configured neighbor only, on the external NIC.
- forward (drop): internal to internal and to external; external to internal
  only for DNATed connections (floating IPs) and IPv6 (tenant prefixes are routed).
- prerouting (dstnat): 169.254.169.254:80 from an internal NIC to the metadata
  proxy on that NIC's router address; floating IP to fixed IP from any NIC, so
  instances reach each other's floating IPs (hairpin).
- postrouting (srcnat): east-west traffic that was not DNATed is left alone;
  a fixed IP with a floating IP leaves as its floating IP; other tenant IPv4
  traffic to the external NIC leaves as the router's external address, and so
  does hairpin traffic of instances without a floating IP.

nft 1.0.6 trap: ``ct status != dnat`` compares the whole status word; the
test for "not DNATed" is ``ct status & dnat == 0``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from astara.appliance.plan import PlannedNetwork, RouterPlan, same_networks

TABLE_NAME = "astara"
TABLE = f"inet {TABLE_NAME}"  # the inet family: one table for IPv4 and IPv6
METADATA_ADDRESS = ipaddress.IPv4Address("169.254.169.254")

_INTERNAL_IFS = "internal_ifs"
_INTERNAL_V4 = "internal_v4"
_FIP_DNAT = "floating_dnat"
_FIP_SNAT = "floating_snat"
_ONE_LINE = 72  # longest element list kept on one line


def render_ruleset(plan: RouterPlan, *, api_port: int = 5000, metadata_port: int = 9602) -> str:
    """The ``nft -f`` text that atomically replaces table ``inet astara`` for ``plan``."""
    internals = sorted(plan.internals, key=lambda n: _natural(n.ifname))
    body: list[str] = []
    body += _declarations(plan, internals)
    body += _chain(
        "input",
        "type filter hook input priority filter; policy drop;",
        _input_rules(plan, internals, api_port, metadata_port),
    )
    body += _chain(
        "forward",
        "type filter hook forward priority filter; policy drop;",
        _forward_rules(plan, internals),
    )
    body += _chain(
        "prerouting",
        "type nat hook prerouting priority dstnat; policy accept;",
        _prerouting_rules(plan, internals, metadata_port),
        optional=True,
    )
    body += _chain(
        "postrouting",
        "type nat hook postrouting priority srcnat; policy accept;",
        _postrouting_rules(plan, internals),
        optional=True,
    )
    while body and not body[-1]:
        body.pop()
    lines = [
        "# Astara router firewall and NAT; rendered from the router's config, do not edit.",
        f"table {TABLE} {{}}",
        f"delete table {TABLE}",
        f"table {TABLE} {{",
        *body,
        "}",
    ]
    return "\n".join(lines) + "\n"


# -- declarations -----------------------------------------------------------------


def _declarations(plan: RouterPlan, internals: Sequence[PlannedNetwork]) -> list[str]:
    out: list[str] = []
    if internals:
        out += _set(_INTERNAL_IFS, "ifname", [_quote(n.ifname) for n in internals])
    prefixes = _internal_v4_prefixes(internals)
    if prefixes and _snat_address(plan) is not None:
        out += _set(_INTERNAL_V4, "ipv4_addr", [str(p) for p in prefixes], interval=True)
    fips = sorted(plan.floating_ips, key=lambda f: int(f.floating_ip))
    if fips:
        out += _set(
            _FIP_DNAT,
            "ipv4_addr : ipv4_addr",
            [f"{f.floating_ip} : {f.fixed_ip}" for f in fips],
            kind="map",
        )
        by_fixed = sorted(fips, key=lambda f: int(f.fixed_ip))
        out += _set(
            _FIP_SNAT,
            "ipv4_addr : ipv4_addr",
            [f"{f.fixed_ip} : {f.floating_ip}" for f in by_fixed],
            kind="map",
        )
    return out


def _set(
    name: str, type_: str, elements: Sequence[str], *, interval: bool = False, kind: str = "set"
) -> list[str]:
    out = [f"\t{kind} {name} {{", f"\t\ttype {type_}"]
    if interval:
        out.append("\t\tflags interval")
    joined = ", ".join(elements)
    if len(joined) <= _ONE_LINE:
        out.append(f"\t\telements = {{ {joined} }}")
    else:
        out.append("\t\telements = {")
        out += [f"\t\t\t{e}," for e in elements[:-1]]
        out.append(f"\t\t\t{elements[-1]}")
        out.append("\t\t}")
    out += ["\t}", ""]
    return out


def _chain(name: str, header: str, rules: Sequence[str], *, optional: bool = False) -> list[str]:
    if optional and not rules:
        return []  # a nat chain with nothing to do is not registered at all
    return [f"\tchain {name} {{", f"\t\t{header}", *(f"\t\t{r}" for r in rules), "\t}", ""]


# -- filter -----------------------------------------------------------------------


def _input_rules(
    plan: RouterPlan, internals: Sequence[PlannedNetwork], api_port: int, metadata_port: int
) -> list[str]:
    rules = [
        "ct state established,related accept",
        "ct state invalid drop",
        'iifname "lo" accept',
        "meta l4proto { icmp, ipv6-icmp } accept",
    ]
    if plan.management is not None:
        rules.append(f"iifname {_quote(plan.management.ifname)} tcp dport {api_port} accept")
    if internals:
        rules.append(f"iifname @{_INTERNAL_IFS} udp dport {{ 53, 67, 547 }} accept")
        rules.append(f"iifname @{_INTERNAL_IFS} tcp dport {{ 53, {metadata_port} }} accept")
    if plan.bgp is not None:
        peer = f"iifname {_quote(plan.bgp.ifname)} ip6 saddr {plan.bgp.neighbor}"
        rules.append(f"{peer} tcp dport 179 accept")
        rules.append(f"{peer} tcp sport 179 accept")
    return rules


def _forward_rules(plan: RouterPlan, internals: Sequence[PlannedNetwork]) -> list[str]:
    rules: list[str] = []
    if plan.management is not None:
        # before established: even a connection accepted by mistake never crosses
        mgmt = _quote(plan.management.ifname)
        rules += [f"iifname {mgmt} drop", f"oifname {mgmt} drop"]
    rules += ["ct state established,related accept", "ct state invalid drop"]
    if not internals:
        return rules
    ints = f"@{_INTERNAL_IFS}"
    rules.append(f"iifname {ints} oifname {ints} accept")
    if plan.external is not None:
        ext = _quote(plan.external.ifname)
        rules += [
            f"iifname {ints} oifname {ext} accept",
            f"iifname {ext} oifname {ints} ct status & dnat == dnat accept",
            f"iifname {ext} oifname {ints} meta nfproto ipv6 accept",
        ]
    return rules


# -- nat --------------------------------------------------------------------------


def _prerouting_rules(
    plan: RouterPlan, internals: Sequence[PlannedNetwork], metadata_port: int
) -> list[str]:
    rules: list[str] = []
    for net in internals:
        own = net.own_address(4)
        if own is not None:
            rules.append(
                f"iifname {_quote(net.ifname)} ip daddr {METADATA_ADDRESS} tcp dport 80"
                f" dnat ip to {own.ip}:{metadata_port}"
            )
    if plan.floating_ips:
        rules.append(f"dnat ip to ip daddr map @{_FIP_DNAT}")
    return rules


def _postrouting_rules(plan: RouterPlan, internals: Sequence[PlannedNetwork]) -> list[str]:
    external = plan.external
    snat_to = _snat_address(plan)
    if external is None or snat_to is None:
        return []  # no way out to NAT behind: floating IPs need it too (see plan.py)
    ext = _quote(external.ifname)
    rules = [f"iifname != {ext} oifname != {ext} ct status & dnat == 0 accept"]
    if plan.floating_ips:
        rules.append(f"snat ip to ip saddr map @{_FIP_SNAT}")
    if _internal_v4_prefixes(internals):
        rules.append(f"oifname {ext} ip saddr @{_INTERNAL_V4} snat ip to {snat_to}")
    rules.append(f"iifname != {ext} ct status & dnat == dnat snat ip to {snat_to}")
    return rules


# -- values -----------------------------------------------------------------------


def _snat_address(plan: RouterPlan) -> ipaddress.IPv4Address | None:
    if plan.external is None:
        return None
    own = plan.external.own_address(4)
    return None if own is None else ipaddress.IPv4Address(own.ip)


_prefix_memo: list[tuple[Sequence[PlannedNetwork], list[ipaddress.IPv4Network]]] = []


def _internal_v4_prefixes(internals: Sequence[PlannedNetwork]) -> list[ipaddress.IPv4Network]:
    """Every tenant IPv4 prefix, merged so the interval set never holds an overlap.

    Remembered for the last networks seen: a push that changes only floating IPs
    keeps its planned networks (``same_networks``), and merging a big router's
    prefixes is most of rendering it.
    """
    for known, prefixes in _prefix_memo:
        if same_networks(known, internals):
            return prefixes
    prefixes = _merge_v4_prefixes(internals)
    _prefix_memo[:] = [(tuple(internals), prefixes)]
    return prefixes


def _merge_v4_prefixes(internals: Iterable[PlannedNetwork]) -> list[ipaddress.IPv4Network]:
    found: set[ipaddress.IPv4Network] = set()
    for net in internals:
        found.update(s.cidr for s in net.subnets if isinstance(s.cidr, ipaddress.IPv4Network))
        found.update(
            a.network
            for a in net.addresses
            if isinstance(a, ipaddress.IPv4Interface) and a.network.prefixlen < 32
        )
    return list(ipaddress.collapse_addresses(sorted(found)))


def _quote(ifname: str) -> str:
    return f'"{ifname}"'


def _natural(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting ge2 before ge10."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name) if p)


# -- incremental updates ----------------------------------------------------------
# A push that only adds, moves or removes floating IPs changes nothing but the
# elements of the two floating maps. Loading the whole table again costs ~30 ms
# on a big router; the firewall writes the element changes as one small
# transaction instead (``system/nfnetlink.py``).
_MAP_ELEMENTS = re.compile(
    r"(\tmap (?P<name>" + _FIP_DNAT + "|" + _FIP_SNAT + r") \{\n\t\ttype [^\n]+\n)"
    r"\t\telements = \{(?P<elements>[^}]*)\}\n"
)


def _split_elements(text: str) -> tuple[str, dict[str, dict[str, str]]]:
    """The ruleset without its floating-map elements, and those elements by map."""
    maps: dict[str, dict[str, str]] = {}

    def cut(match: re.Match[str]) -> str:
        pairs = (e.split(" : ") for e in match["elements"].replace("\n", " ").split(","))
        maps[match["name"]] = {k.strip(): v.strip() for k, v in pairs}
        return match.group(1)

    return _MAP_ELEMENTS.sub(cut, text), maps


@dataclass(frozen=True)
class MapElementChange:
    """In floating map ``name``: delete ``key`` (``value`` None) or add ``key : value``."""

    name: str
    key: str
    value: str | None = None

    def __str__(self) -> str:
        if self.value is None:
            return f"delete element {TABLE} {self.name} {{ {self.key} }}"
        return f"add element {TABLE} {self.name} {{ {self.key} : {self.value} }}"


def element_changes(loaded: str, wanted: str) -> list[MapElementChange] | None:
    """The floating-map element changes turning ruleset ``loaded`` into ``wanted``, or None.

    None means more than floating-map elements differ: load ``wanted`` whole.
    Changes come in transaction order: per map, deletions (of keys gone or
    remapped) before additions.
    """
    loaded_rest, loaded_maps = _split_elements(loaded)
    wanted_rest, wanted_maps = _split_elements(wanted)
    if loaded_rest != wanted_rest or loaded_maps.keys() != wanted_maps.keys():
        return None
    changes: list[MapElementChange] = []
    for name in sorted(wanted_maps):
        old, new = loaded_maps[name], wanted_maps[name]
        changes += (
            MapElementChange(name, k) for k in sorted(k for k in old if new.get(k) != old[k])
        )
        changes += (
            MapElementChange(name, k, new[k])
            for k in sorted(k for k in new if old.get(k) != new[k])
        )
    return changes
