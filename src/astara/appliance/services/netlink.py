"""Links, addresses, routes and forwarding sysctls of one appliance, by netlink.

Owns: the global addresses on the NICs a plan names (plus one /32 per
floating IP on the external NIC, so the router answers ARP for it), their MTU
and link state, the routes it installs (protocol ``static`` in the main
table), and the forwarding sysctls of the namespace.

Converges by diff: it reads what the kernel has, and changes only what
differs. It never touches link-local addresses, NICs the plan does not name,
routes of other protocols, or the ``protected`` addresses (the one the API
listens on). Removed addresses are returned so their conntrack entries can
be flushed.

A pyroute2 ``IPRoute`` socket is opened inside the namespace once and reused
(pyroute2 creates it there: its sockets are created lazily, outside any thread
we could have switched);
calls are blocking but short, so the async methods run them in a thread,
one at a time per appliance.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from astara.appliance.errors import ApplyError, NotFoundError
from astara.appliance.plan import IPAddress, IPInterface, Link, RouterPlan
from astara.appliance.system.netns import Netns
from astara.wire.appliance_v1 import InterfaceState

T = TypeVar("T")

RTPROT_STATIC = 4
MAIN_TABLE = 254
IFA_F_NODAD = 0x02
# neighbour states that mean "answered recently": REACHABLE STALE DELAY PROBE NOARP PERMANENT
_NUD_ALIVE = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80
SYSCTLS = {
    # the router's addresses are assigned, not discovered: skip duplicate address
    # detection, which holds RAs (sent from the link-local address) back 1-2 s
    "net/ipv6/conf/all/accept_dad": "0",
    "net/ipv6/conf/default/accept_dad": "0",
    "net/ipv4/ip_forward": "1",
    "net/ipv6/conf/all/forwarding": "1",
    "net/ipv4/conf/all/rp_filter": "1",
    "net/ipv4/conf/default/rp_filter": "1",
}


@dataclass(frozen=True)
class RouteKey:
    destination: ipaddress.IPv4Network | ipaddress.IPv6Network
    gateway: IPAddress


@dataclass
class LinkChange:
    """What one apply did; ``removed`` feeds the conntrack flush."""

    added: list[IPInterface] = field(default_factory=list)
    removed: list[IPInterface] = field(default_factory=list)
    routes_added: list[RouteKey] = field(default_factory=list)
    routes_removed: list[RouteKey] = field(default_factory=list)
    links_changed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(
            self.added
            or self.removed
            or self.routes_added
            or self.routes_removed
            or self.links_changed
        )


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


def desired_addresses(plan: RouterPlan) -> dict[str, set[IPInterface]]:
    """Per NIC, the global addresses the plan wants, floating IPs included."""
    wanted: dict[str, set[IPInterface]] = {n.ifname: set(n.addresses) for n in plan.networks}
    external = plan.external
    if external is not None:
        for fip in plan.floating_ips:
            wanted[external.ifname].add(ipaddress.IPv4Interface(f"{fip.floating_ip}/32"))
    return wanted


def desired_routes(plan: RouterPlan) -> set[RouteKey]:
    routes = {RouteKey(r.destination, r.nexthop) for r in plan.routes}
    if plan.default_v4_gateway is not None:
        routes.add(RouteKey(ipaddress.IPv4Network("0.0.0.0/0"), plan.default_v4_gateway))
    if plan.default_v6_gateway is not None:
        routes.add(RouteKey(ipaddress.IPv6Network("::/0"), plan.default_v6_gateway))
    return routes


class Links:
    """Netlink access to one appliance's namespace."""

    def __init__(self, *, netns: Netns) -> None:
        self.netns = netns
        self._ipr: Any = None
        self._lock = threading.Lock()
        self._sysctls_done: tuple[str, ...] | None = None

    def _call(self, fn: Callable[[Any], T]) -> T:
        with self._lock:
            if self._ipr is None:
                # pyroute2 opens its socket inside the namespace itself (a short-lived
                # helper process); an IPRoute built in a setns thread would not
                self._ipr = IPRoute(netns=self.netns.name) if self.netns.name else IPRoute()
            return fn(self._ipr)

    async def run(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(iproute)`` in a worker thread, serialised per appliance."""
        return await asyncio.to_thread(self._call, fn)

    def close(self) -> None:
        with self._lock:
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None

    # -- reading ------------------------------------------------------------------
    async def links(self) -> list[Link]:
        """Every NIC but loopback, as (name, MAC)."""
        msgs = await self.run(lambda ipr: ipr.get_links())
        return [
            Link(_attr(m, "IFLA_IFNAME"), (_attr(m, "IFLA_ADDRESS") or "").lower())
            for m in msgs
            if _attr(m, "IFLA_IFNAME") != "lo"
        ]

    async def interfaces(self) -> list[InterfaceState]:
        """Every NIC but loopback, in the shape of ``GET /v1/system/interfaces``."""

        def read(ipr: Any) -> list[InterfaceState]:
            addresses: dict[int, list[str]] = {}
            for msg in ipr.get_addr():
                addresses.setdefault(msg["index"], []).append(
                    f"{_attr(msg, 'IFA_ADDRESS')}/{msg['prefixlen']}"
                )
            return [
                InterfaceState(
                    addresses=addresses.get(m["index"], []),
                    ifname=_attr(m, "IFLA_IFNAME"),
                    lladdr=_attr(m, "IFLA_ADDRESS"),
                    mtu=_attr(m, "IFLA_MTU"),
                    state="up" if m["flags"] & 1 else "down",
                )
                for m in ipr.get_links()
                if _attr(m, "IFLA_IFNAME") != "lo"
            ]

        return await self.run(read)

    async def interface(self, ifname: str) -> InterfaceState:
        for state in await self.interfaces():
            if state.ifname == ifname:
                return state
        raise NotFoundError(f"no interface named {ifname!r}")

    async def global_address(self, ifname: str) -> IPAddress | None:
        """The first global address of ``ifname`` (IPv6 preferred), for the API listener."""
        for state in await self.interfaces():
            if state.ifname != ifname:
                continue
            candidates = [ipaddress.ip_interface(a).ip for a in state.addresses]
            usable = [a for a in candidates if not (a.is_link_local or a.is_loopback)]
            usable.sort(key=lambda a: -a.version)
            return usable[0] if usable else None
        return None

    async def gateway_alive(self, gateway: IPAddress) -> bool | None:
        """True/False from the neighbour table, None when it has no opinion."""

        def read(ipr: Any) -> bool | None:
            family = 2 if gateway.version == 4 else 10
            for msg in ipr.get_neighbours(family=family):
                if _attr(msg, "NDA_DST") == str(gateway):
                    return bool(msg["state"] & _NUD_ALIVE)
            return None

        return await self.run(read)

    # -- converging ---------------------------------------------------------------
    async def apply(self, plan: RouterPlan, *, protected: Iterable[IPAddress] = ()) -> LinkChange:
        """Make links, addresses and routes match ``plan``; idempotent."""
        keep = set(protected)
        nics = tuple(sorted(n.ifname for n in plan.networks))
        if nics != self._sysctls_done:
            await asyncio.to_thread(self.netns.call, lambda: _write_sysctls(nics))
            self._sysctls_done = nics
        try:
            return await self.run(lambda ipr: _converge(ipr, plan, keep))
        except NetlinkError as exc:
            raise ApplyError("netlink", f"{exc.args[-1] if exc.args else exc}") from exc


def _write_sysctls(nics: Iterable[str]) -> None:
    """Runs inside the namespace: /proc/sys/net belongs to the calling thread's namespace."""
    settings = dict(SYSCTLS)
    for nic in nics:
        settings[f"net/ipv6/conf/{nic}/accept_dad"] = "0"
    for key, value in settings.items():
        with open(f"/proc/sys/{key}", "w") as handle:
            handle.write(value)


def _converge(ipr: Any, plan: RouterPlan, protected: set[IPAddress]) -> LinkChange:
    change = LinkChange()
    index = {_attr(m, "IFLA_IFNAME"): m for m in ipr.get_links()}
    for net in plan.networks:
        _converge_link(ipr, index[net.ifname], net.mtu, net.up, change)
    wanted = desired_addresses(plan)
    for ifname, addresses in wanted.items():
        _converge_addresses(ipr, index[ifname]["index"], addresses, protected, change)
    _converge_routes(ipr, plan, change)
    return change


def _converge_link(ipr: Any, msg: Any, mtu: int | None, up: bool, change: LinkChange) -> None:
    ifname = _attr(msg, "IFLA_IFNAME")
    is_up = bool(msg["flags"] & 1)
    if mtu is not None and _attr(msg, "IFLA_MTU") != mtu:
        ipr.link("set", index=msg["index"], mtu=mtu)
        change.links_changed.append(ifname)
    if is_up != up:
        ipr.link("set", index=msg["index"], state="up" if up else "down")
        change.links_changed.append(ifname)


def _current_addresses(ipr: Any, ifindex: int) -> set[IPInterface]:
    found: set[IPInterface] = set()
    for msg in ipr.get_addr(index=ifindex):
        address = ipaddress.ip_interface(f"{_attr(msg, 'IFA_ADDRESS')}/{msg['prefixlen']}")
        if not address.ip.is_link_local:
            found.add(address)
    return found


def _converge_addresses(
    ipr: Any,
    ifindex: int,
    wanted: set[IPInterface],
    protected: set[IPAddress],
    change: LinkChange,
) -> None:
    current = _current_addresses(ipr, ifindex)
    for address in sorted(current - wanted, key=str):
        if address.ip in protected:
            continue
        ipr.addr("del", index=ifindex, address=str(address.ip), prefixlen=address.network.prefixlen)
        change.removed.append(address)
    for address in sorted(wanted - current, key=str):
        extra: dict[str, Any] = {}
        if address.version == 6:
            extra["IFA_FLAGS"] = IFA_F_NODAD
        with contextlib.suppress(NetlinkError):  # EEXIST only: the address raced in
            ipr.addr(
                "add",
                index=ifindex,
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
                **extra,
            )
            change.added.append(address)


def _current_routes(ipr: Any) -> set[RouteKey]:
    found: set[RouteKey] = set()
    for family, any_net in ((2, "0.0.0.0"), (10, "::")):
        for msg in ipr.get_routes(family=family, table=MAIN_TABLE):
            gateway = _attr(msg, "RTA_GATEWAY")
            if msg["proto"] != RTPROT_STATIC or gateway is None:
                continue
            destination = _attr(msg, "RTA_DST") or any_net
            found.add(
                RouteKey(
                    ipaddress.ip_network(f"{destination}/{msg['dst_len']}"),
                    ipaddress.ip_address(gateway),
                )
            )
    return found


def _converge_routes(ipr: Any, plan: RouterPlan, change: LinkChange) -> None:
    wanted = desired_routes(plan)
    current = _current_routes(ipr)
    for route in sorted(current - wanted, key=str):
        with contextlib.suppress(NetlinkError):  # already gone with its address
            ipr.route("del", dst=str(route.destination), gateway=str(route.gateway))
        change.routes_removed.append(route)
    for route in sorted(wanted - current, key=str):
        ipr.route(
            "replace",
            dst=str(route.destination),
            gateway=str(route.gateway),
            proto=RTPROT_STATIC,
            table=MAIN_TABLE,
        )
        change.routes_added.append(route)
