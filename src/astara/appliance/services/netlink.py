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

A netlink socket is opened inside the namespace once (by a thread that enters
it) and used through pyroute2's ``AsyncIPRoute`` on the agent's event loop: no
thread and no process per appliance. Calls are serialised per appliance.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import ipaddress
import socket
import struct
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from astara.appliance.errors import ApplyError, NotFoundError
from astara.appliance.plan import IPAddress, IPInterface, Link, RouterPlan
from astara.appliance.system.netns import Netns
from astara.wire.appliance_v1 import InterfaceState

NETLINK_ROUTE = 0
_SIOCGIFHWADDR = 0x8927
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
            wanted[external.ifname].add(fip.host_address)
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
        self._lock = asyncio.Lock()
        self._sysctls_done: tuple[str, ...] | None = None
        self._indexes: dict[str, int] = {}
        self._views: list[tuple[RouterPlan, _View]] = []

    async def _iproute(self) -> Any:
        if self._ipr is None:
            # The socket is created inside the namespace by our own thread and handed
            # over. pyroute2's netns support would fork a helper instead, and a fork of
            # this asyncio process shares its signal wake-up fd: the helper's SIGTERM
            # then reached our loop as if it had been sent to the agent.
            sock = self.netns.call(
                lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
            )
            ipr = AsyncIPRoute(fileno=sock.detach())
            await ipr.setup_endpoint()
            self._ipr = ipr
        return self._ipr

    def _view(self, plan: RouterPlan) -> _View:
        # the previous push computed the previous plan's view: keep the last two
        for known, view in self._views:
            if known is plan:
                return view
        view = _view(plan)
        self._views = [*self._views[-1:], (plan, view)]
        return view

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def _dump(self, method: str, **query: Any) -> list[Any]:
        ipr = await self._iproute()
        return [msg async for msg in await getattr(ipr, method)(**query)]

    # -- reading ------------------------------------------------------------------
    async def links(self) -> list[Link]:
        """Every NIC but loopback, as (name, MAC); remembers their indexes.

        Read with if_nameindex and one ioctl per NIC inside the namespace: a
        netlink link dump parses every attribute of every NIC (~25 ms for 50).
        """
        found = await asyncio.to_thread(self.netns.call, _read_links)
        self._indexes = {name: index for name, index, _ in found}
        return [Link(name, mac) for name, _, mac in found if name != "lo"]

    async def interfaces(self) -> list[InterfaceState]:
        """Every NIC but loopback, in the shape of ``GET /v1/system/interfaces``."""
        async with self._lock:
            links = await self._dump("get_links")
            addrs = await self._dump("get_addr")
        addresses: dict[int, list[str]] = {}
        for msg in addrs:
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
            for m in links
            if _attr(m, "IFLA_IFNAME") != "lo"
        ]

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

    def index(self, ifname: str) -> int | None:
        """The kernel's index of ``ifname`` as last read by ``links``, if known."""
        return self._indexes.get(ifname)

    async def gateway_alive(self, gateway: IPAddress) -> bool | None:
        """True/False from the neighbour table, None when it has no opinion."""
        async with self._lock:
            msgs = await self._dump("get_neighbours", family=2 if gateway.version == 4 else 10)
        for msg in msgs:
            if _attr(msg, "NDA_DST") == str(gateway):
                return bool(msg["state"] & _NUD_ALIVE)
        return None

    # -- converging ---------------------------------------------------------------
    async def apply(
        self,
        plan: RouterPlan,
        *,
        protected: Iterable[IPAddress] = (),
        previous: RouterPlan | None = None,
    ) -> LinkChange:
        """Make links, addresses and routes match ``plan``; idempotent.

        With the ``previous`` plan known to be applied, only the differences
        between the two plans are written, without reading the kernel back (a
        big router's dump costs ~100 ms). Without it, or when ``plan`` equals
        it (a re-push), the kernel is read and repaired in full.
        """
        nics = tuple(sorted(n.ifname for n in plan.networks))
        if nics != self._sysctls_done:
            await asyncio.to_thread(self.netns.call, lambda: _write_sysctls(nics))
            self._sysctls_done = nics
        async with self._lock:
            converger = _Converger(await self._iproute(), set(protected), self._indexes)
            try:
                if previous is not None:
                    before, after = self._view(previous), self._view(plan)
                    if before != after:
                        return await converger.run_incremental(before, after)
                return await converger.run(plan)
            except NetlinkError as exc:
                raise ApplyError("netlink", f"{exc.args[-1] if exc.args else exc}") from exc


@dataclass(frozen=True)
class _View:
    """What of a plan this module acts on (comparing whole plans costs ~15 ms on a big router)."""

    links: dict[str, tuple[int | None, bool]]
    addresses: dict[str, set[IPInterface]]
    routes: set[RouteKey]


def _view(plan: RouterPlan) -> _View:
    return _View(
        {n.ifname: (n.mtu, n.up) for n in plan.networks},
        desired_addresses(plan),
        desired_routes(plan),
    )


def _read_links() -> list[tuple[str, int, str]]:
    """Runs inside the namespace: (name, index, MAC) of every NIC."""
    found: list[tuple[str, int, str]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for index, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                reply = fcntl.ioctl(probe.fileno(), _SIOCGIFHWADDR, request)
            except OSError:  # gone between the two calls
                continue
            found.append((name, index, ":".join(f"{b:02x}" for b in reply[18:24])))
    return found


def _write_sysctls(nics: Iterable[str]) -> None:
    """Runs inside the namespace: /proc/sys/net belongs to the calling thread's namespace."""
    settings = dict(SYSCTLS)
    for nic in nics:
        settings[f"net/ipv6/conf/{nic}/accept_dad"] = "0"
    for key, value in settings.items():
        with open(f"/proc/sys/{key}", "w") as handle:
            handle.write(value)


class _Converger:
    """One pass of diff-and-fix over links, addresses and routes."""

    def __init__(self, ipr: Any, protected: set[IPAddress], indexes: dict[str, int]) -> None:
        self.ipr = ipr
        self.protected = protected
        self.indexes = indexes  # from the read that built the plan
        self.change = LinkChange()

    async def _dump(self, method: str, **query: Any) -> AsyncIterator[Any]:
        async for msg in await getattr(self.ipr, method)(**query):
            yield msg

    async def run(self, plan: RouterPlan) -> LinkChange:
        index = {_attr(m, "IFLA_IFNAME"): m async for m in self._dump("get_links")}
        for net in plan.networks:
            await self._link(index[net.ifname], net.mtu, net.up)
        # one dump of every address: a dump per NIC costs a parse of all of them each time
        current: dict[int, set[IPInterface]] = {}
        async for msg in self._dump("get_addr"):
            address = ipaddress.ip_interface(f"{_attr(msg, 'IFA_ADDRESS')}/{msg['prefixlen']}")
            if not address.ip.is_link_local:
                current.setdefault(msg["index"], set()).add(address)
        for ifname, addresses in desired_addresses(plan).items():
            ifindex = index[ifname]["index"]
            await self._addresses(ifindex, current.get(ifindex, set()), addresses)
        await self._routes(plan)
        return self.change

    async def run_incremental(self, before: _View, after: _View) -> LinkChange:
        changed = [name for name, state in after.links.items() if before.links.get(name) != state]
        if changed:
            index = {_attr(m, "IFLA_IFNAME"): m async for m in self._dump("get_links")}
            for name in changed:
                mtu, up = after.links[name]
                await self._link(index[name], mtu, up)
        old, new = before.addresses, after.addresses
        for ifname in sorted(old.keys() | new.keys()):
            if old.get(ifname) == new.get(ifname):
                continue
            # a NIC the plan no longer names loses the addresses the previous plan gave it
            ifindex = await self._index(ifname)
            if ifindex is None:
                if ifname in new:
                    raise ApplyError("netlink", f"no interface named {ifname!r}")
                continue  # unplugged: the NIC is gone, and its addresses with it
            await self._addresses(
                ifindex, old.get(ifname, set()), new.get(ifname, set()), tolerant=True
            )
        await self._route_diff(before.routes, after.routes)
        return self.change

    async def _index(self, ifname: str) -> int | None:
        """The NIC's index; None if there is no such NIC (any more)."""
        if ifname in self.indexes:
            return self.indexes[ifname]
        found = await self.ipr.link_lookup(ifname=ifname)
        return int(found[0]) if found else None

    async def _link(self, msg: Any, mtu: int | None, up: bool) -> None:
        ifname = _attr(msg, "IFLA_IFNAME")
        if mtu is not None and _attr(msg, "IFLA_MTU") != mtu:
            await self.ipr.link("set", index=msg["index"], mtu=mtu)
            self.change.links_changed.append(ifname)
        if bool(msg["flags"] & 1) != up:
            await self.ipr.link("set", index=msg["index"], state="up" if up else "down")
            self.change.links_changed.append(ifname)

    async def _addresses(
        self,
        ifindex: int,
        current: set[IPInterface],
        wanted: set[IPInterface],
        *,
        tolerant: bool = False,
    ) -> None:
        """Remove ``current - wanted``, add ``wanted - current``.

        ``tolerant``: ``current`` is what we believe, not what we read, so an
        address already gone or already there is not an error.
        """
        for address in sorted(current - wanted, key=str):
            if address.ip in self.protected:
                continue
            try:
                await self.ipr.addr(
                    "del",
                    index=ifindex,
                    address=str(address.ip),
                    prefixlen=address.network.prefixlen,
                )
            except NetlinkError as exc:
                if not (tolerant and exc.code == errno.EADDRNOTAVAIL):
                    raise
            self.change.removed.append(address)
        for address in sorted(wanted - current, key=str):
            extra: dict[str, Any] = {"IFA_FLAGS": IFA_F_NODAD} if address.version == 6 else {}
            try:
                await self.ipr.addr(
                    "add",
                    index=ifindex,
                    address=str(address.ip),
                    prefixlen=address.network.prefixlen,
                    **extra,
                )
            except NetlinkError as exc:
                if not (tolerant and exc.code == errno.EEXIST):
                    raise
            self.change.added.append(address)

    async def _routes(self, plan: RouterPlan) -> None:
        wanted = desired_routes(plan)
        current: set[RouteKey] = set()
        for family, any_net in ((2, "0.0.0.0"), (10, "::")):
            async for msg in self._dump("get_routes", family=family, table=MAIN_TABLE):
                gateway = _attr(msg, "RTA_GATEWAY")
                if msg["proto"] != RTPROT_STATIC or gateway is None:
                    continue
                destination = _attr(msg, "RTA_DST") or any_net
                current.add(
                    RouteKey(
                        ipaddress.ip_network(f"{destination}/{msg['dst_len']}"),
                        ipaddress.ip_address(gateway),
                    )
                )
        await self._route_diff(current, wanted)

    async def _route_diff(self, current: set[RouteKey], wanted: set[RouteKey]) -> None:
        """Routes are added with ``replace`` and a route already gone is no error."""
        for route in sorted(current - wanted, key=str):
            with contextlib.suppress(NetlinkError):  # already gone with its address
                await self.ipr.route("del", dst=str(route.destination), gateway=str(route.gateway))
            self.change.routes_removed.append(route)
        for route in sorted(wanted - current, key=str):
            await self.ipr.route(
                "replace",
                dst=str(route.destination),
                gateway=str(route.gateway),
                proto=RTPROT_STATIC,
                table=MAIN_TABLE,
            )
            self.change.routes_added.append(route)
