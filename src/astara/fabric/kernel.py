"""Links of one namespace, read and changed over one rtnetlink socket.

The only module of the fabric that speaks pyroute2: it turns link messages
into ``LinkState`` values and netlink errors into ``FabricKernelError`` (with
the errno, so callers can tell "exists" from "unsupported"). It knows nothing
of networks or ports; it does what it is asked, one request at a time.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from astara.fabric.errors import FabricKernelError
from astara.fabric.namespace import namespace_fd, netlink_socket

T = TypeVar("T")

IFF_UP = 0x1
IN6_ADDR_GEN_MODE_NONE = 1
ZERO_MAC = "00:00:00:00:00:00"
_NO_NSID = (None, -1, 2**32 - 1)


@dataclass(frozen=True)
class VxlanState:
    vni: int
    local: str | None
    group: str | None
    device: int | None
    port: int


@dataclass(frozen=True)
class LinkState:
    """One link as the kernel reports it.

    ``link`` is a veth's peer or a VLAN device's parent (an index in the
    namespace ``link_netnsid`` names, or in this one when that is None).
    """

    index: int
    name: str
    kind: str | None
    alias: str | None
    master: int | None
    mtu: int
    mac: str
    up: bool
    link: int | None = None
    link_netnsid: int | None = None
    vlan_id: int | None = None
    vxlan: VxlanState | None = None


def _vxlan_of(msg: Any) -> VxlanState | None:
    data = msg.get(("linkinfo", "data"))
    if msg.get(("linkinfo", "kind")) != "vxlan" or data is None:
        return None
    return VxlanState(
        vni=data.get("vxlan_id"),
        local=data.get("vxlan_local") or data.get("vxlan_local6"),
        group=data.get("vxlan_group") or data.get("vxlan_group6"),
        device=data.get("vxlan_link") or None,
        port=data.get("vxlan_port") or 0,
    )


def link_state(msg: Any) -> LinkState:
    kind = msg.get(("linkinfo", "kind"))
    return LinkState(
        index=msg["index"],
        name=msg.get_attr("IFLA_IFNAME"),
        kind=kind,
        alias=msg.get_attr("IFLA_IFALIAS"),
        master=msg.get_attr("IFLA_MASTER") or None,
        mtu=msg.get_attr("IFLA_MTU"),
        mac=(msg.get_attr("IFLA_ADDRESS") or "").lower(),
        up=bool(msg["flags"] & IFF_UP),
        link=msg.get_attr("IFLA_LINK") or None,
        link_netnsid=msg.get_attr("IFLA_LINK_NETNSID"),
        vlan_id=msg.get(("linkinfo", "data", "vlan_id")) if kind == "vlan" else None,
        vxlan=_vxlan_of(msg),
    )


class Rtnl:
    """An rtnetlink socket inside one namespace (``netns`` None: our own)."""

    def __init__(self, ipr: Any, netns: str | None) -> None:
        self._ipr = ipr
        self.netns = netns

    @classmethod
    async def open(cls, netns: str | None) -> Rtnl:
        """A socket in ``netns``; FabricNotFoundError if the namespace does not exist."""
        sock = await asyncio.to_thread(netlink_socket, netns)
        ipr = AsyncIPRoute(fileno=sock.detach())
        try:
            await ipr.setup_endpoint()
        except OSError as exc:
            ipr.close()
            raise FabricKernelError("set up a netlink socket", exc.errno or 0, str(exc)) from exc
        return cls(ipr, netns)

    def close(self) -> None:
        self._ipr.close()

    def _error(self, operation: str, exc: NetlinkError | OSError) -> FabricKernelError:
        code = exc.code if isinstance(exc, NetlinkError) else exc.errno or 0
        where = f" in namespace {self.netns!r}" if self.netns else ""
        return FabricKernelError(f"{operation}{where}", code, os.strerror(code))

    async def _call(self, operation: str, request: Awaitable[T]) -> T:
        try:
            return await request
        except (NetlinkError, OSError) as exc:
            raise self._error(operation, exc) from exc

    async def _dump(self, operation: str, request: Awaitable[AsyncIterator[Any]]) -> list[Any]:
        # a dump's errors surface while it is read, not when it is sent
        try:
            return [msg async for msg in await request]
        except (NetlinkError, OSError) as exc:
            raise self._error(operation, exc) from exc

    # -- reading ------------------------------------------------------------------
    async def links(self) -> list[LinkState]:
        return [link_state(msg) for msg in await self._dump("list links", self._ipr.link("dump"))]

    async def get(self, *, name: str | None = None, index: int | None = None) -> LinkState | None:
        """The link called ``name`` (or numbered ``index``), None if there is none."""
        query = {"ifname": name} if name is not None else {"index": index}
        try:
            found = await self._call(
                f"look up link {name or index}", self._ipr.link("get", **query)
            )
        except FabricKernelError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return link_state(found[0])

    async def nsid(self, netns: str) -> int | None:
        """The id this namespace gives namespace ``netns``, None if it has given none."""
        fd = namespace_fd(netns)
        try:
            found = await self._call(f"get the id of {netns!r}", self._ipr.get_netnsid(fd=fd))
        finally:
            os.close(fd)
        nsid = found.get("nsid")
        return None if nsid in _NO_NSID else int(nsid)

    async def flood_entries(self, index: int) -> set[str]:
        """Remote addresses of a VXLAN device's all-zero (flood) forwarding entries."""
        dump = await self._dump("list forwarding entries", self._ipr.fdb("dump", ifindex=index))
        return {
            str(msg.get_attr("NDA_DST"))
            for msg in dump
            if msg.get("ifindex") == index and msg.get_attr("NDA_LLADDR") == ZERO_MAC
        }

    # -- changing -----------------------------------------------------------------
    async def add(self, operation: str, *, name: str, **attrs: Any) -> LinkState:
        """Create link ``name`` with ``attrs`` (pyroute2's keywords); return it."""
        await self._call(operation, self._ipr.link("add", ifname=name, **attrs))
        made = await self.get(name=name)
        if made is None:
            raise FabricKernelError(operation, errno.ENODEV, f"{name} vanished once made")
        return made

    async def set(self, operation: str, index: int, **attrs: Any) -> None:
        await self._call(operation, self._ipr.link("set", index=index, **attrs))

    async def up(self, link: LinkState) -> None:
        if not link.up:
            await self.set(f"bring {link.name} up", link.index, state="up")

    async def no_ipv6_addresses(self, link: LinkState) -> None:
        """No link-local address (nor DAD, RS or MLD) from the fabric into a network."""
        spec = {
            "attrs": [
                ["AF_INET6", {"attrs": [["IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE]]}]
            ]
        }
        await self.set(f"turn off IPv6 addresses on {link.name}", link.index, IFLA_AF_SPEC=spec)

    async def delete(self, link: LinkState) -> None:
        """Delete ``link``; one already gone is not an error."""
        try:
            await self._call(f"delete {link.name}", self._ipr.link("del", index=link.index))
        except FabricKernelError as exc:
            if exc.errno != errno.ENODEV:
                raise

    async def add_flood(self, index: int, dst: str) -> None:
        await self._call(
            f"add a flood entry to {dst}",
            self._ipr.fdb("append", ifindex=index, lladdr=ZERO_MAC, dst=dst),
        )

    async def remove_flood(self, index: int, dst: str) -> None:
        await self._call(
            f"remove the flood entry to {dst}",
            self._ipr.fdb("del", ifindex=index, lladdr=ZERO_MAC, dst=dst),
        )
