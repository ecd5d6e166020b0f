"""Ports: one veth pair each, between a network's bridge and a namespace.

Owns the bridge end ``<prefix>p<tag>`` of every plugged port (labelled with
the port id in its ifalias) and, through it, the peer: the port's NIC in the
target namespace, under the name, MAC and MTU the caller gives. The peer is
created directly in the target namespace, so a port is either fully there or
not at all; deleting either end deletes both, and so does deleting the
target namespace.

Plugging converges: a pair whose peer is in the right namespace under the
right name is kept and its MAC, MTU, bridge and link state are fixed in
place; a pair whose peer is elsewhere is replaced. Unplugging an unknown port
is not an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from astara.fabric.errors import (
    FabricConflictError,
    FabricError,
    FabricInvalidError,
    FabricKernelError,
    FabricNotFoundError,
)
from astara.fabric.kernel import LinkState, Rtnl
from astara.fabric.model import PluggedPort, check_id, check_mac, check_mtu
from astara.fabric.names import BRIDGE, PORT, Names
from astara.fabric.namespace import namespace_fd

_IFNAME = re.compile(r"^[A-Za-z0-9_.\-@+]{1,15}$")


@dataclass(frozen=True)
class PortRequest:
    """One ``plug`` call, checked."""

    network_id: str
    port_id: str
    mac: str
    mtu: int
    netns: str | None
    ifname: str

    def __post_init__(self) -> None:
        check_id("network id", self.network_id)
        check_id("port id", self.port_id)
        object.__setattr__(self, "mac", check_mac(self.mac))
        check_mtu(f"port {self.port_id}", self.mtu)
        if not _IFNAME.match(self.ifname):
            raise FabricInvalidError(f"interface name {self.ifname!r} is not a valid name")

    @property
    def where(self) -> str:
        return f"namespace {self.netns!r}" if self.netns else "the fabric's namespace"


@contextlib.asynccontextmanager
async def _target(rtnl: Rtnl, netns: str | None) -> AsyncIterator[Rtnl]:
    """A socket in the namespace the port's NIC lives in (the fabric's own when None)."""
    if netns is None:
        yield rtnl
        return
    target = await Rtnl.open(netns)
    try:
        yield target
    finally:
        target.close()


async def _peer(rtnl: Rtnl, target: Rtnl, device: LinkState, req: PortRequest) -> LinkState | None:
    """The far end of ``device`` if it is the NIC ``req`` asks for, else None."""
    if device.kind != "veth" or device.link is None:
        return None
    nsid = None if req.netns is None else await rtnl.nsid(req.netns)
    if device.link_netnsid != nsid or (req.netns is not None and nsid is None):
        return None
    peer = await target.get(index=device.link)
    if peer is None or peer.name != req.ifname or peer.link != device.index:
        return None
    return peer


async def _create(rtnl: Rtnl, names: Names, req: PortRequest) -> LinkState:
    peer: dict[str, object] = {"ifname": req.ifname, "address": req.mac, "mtu": req.mtu}
    fd = None if req.netns is None else namespace_fd(req.netns)
    if fd is not None:
        peer["net_ns_fd"] = fd
    name = names.port(req.port_id)
    try:
        return await rtnl.add(
            f"create the veth pair of port {req.port_id}",
            name=name,
            kind="veth",
            mtu=req.mtu,
            peer=peer,
        )
    except FabricKernelError as exc:
        if exc.errno == errno.EEXIST:
            raise FabricConflictError(
                f"{req.where} already has an interface named {req.ifname!r}"
            ) from exc
        raise
    finally:
        if fd is not None:
            os.close(fd)


async def _converge(
    rtnl: Rtnl,
    target: Rtnl,
    req: PortRequest,
    *,
    device: LinkState,
    peer: LinkState,
    bridge: LinkState,
) -> None:
    if device.alias != req.port_id:
        await rtnl.set(f"label {device.name}", device.index, ifalias=req.port_id)
    if device.mtu != req.mtu:
        await rtnl.set(f"set the MTU of {device.name}", device.index, mtu=req.mtu)
    if device.master != bridge.index:
        await rtnl.set(f"add {device.name} to {bridge.name}", device.index, master=bridge.index)
    await rtnl.up(device)
    if peer.mac != req.mac:
        await target.set(f"set the MAC of {req.ifname}", peer.index, address=req.mac)
    if peer.mtu != req.mtu:
        await target.set(f"set the MTU of {req.ifname}", peer.index, mtu=req.mtu)
    await target.up(peer)


async def _bridge(rtnl: Rtnl, names: Names, network_id: str) -> LinkState:
    bridge = await rtnl.get(name=names.bridge(network_id))
    if bridge is None or bridge.kind != "bridge" or bridge.alias != network_id:
        raise FabricNotFoundError(
            f"network {network_id} has no bridge on this host: ensure the network first"
        )
    return bridge


async def _existing(
    rtnl: Rtnl, target: Rtnl, names: Names, req: PortRequest
) -> tuple[LinkState | None, tuple[LinkState, LinkState] | None]:
    """(a stale bridge end to delete, or None; the pair to keep, or None)."""
    device = await rtnl.get(name=names.port(req.port_id))
    if device is None:
        return None, None
    if device.alias not in (None, req.port_id):
        raise FabricConflictError(
            f"{device.name}, the name of port {req.port_id}, is taken by port {device.alias}"
        )
    peer = await _peer(rtnl, target, device, req)
    return (device, None) if peer is None else (None, (device, peer))


async def _make(
    rtnl: Rtnl, target: Rtnl, names: Names, req: PortRequest
) -> tuple[LinkState, LinkState]:
    device = await _create(rtnl, names, req)
    try:
        await rtnl.no_ipv6_addresses(device)
        peer = await _peer(rtnl, target, device, req)
        if peer is None:
            raise FabricKernelError(
                f"plug port {req.port_id}", errno.ENODEV, "the new veth peer is not there"
            )
    except FabricError:
        await rtnl.delete(device)
        raise
    return device, peer


async def plug(rtnl: Rtnl, names: Names, req: PortRequest) -> PluggedPort:
    """Plug the port as ``req`` says; idempotent; see the module docstring."""
    if req.netns is not None and req.netns == rtnl.netns:
        req = dataclasses.replace(req, netns=None)  # the fabric's own namespace, by name
    bridge = await _bridge(rtnl, names, req.network_id)
    async with _target(rtnl, req.netns) as target:
        stale, pair = await _existing(rtnl, target, names, req)
        made = pair is None
        if pair is None:
            if stale is not None:
                await rtnl.delete(stale)  # its NIC is in another namespace or under another name
            pair = await _make(rtnl, target, names, req)
        device, peer = pair
        try:
            await _converge(rtnl, target, req, device=device, peer=peer, bridge=bridge)
        except FabricError:
            if made:
                await rtnl.delete(device)
            raise
    return PluggedPort(req.port_id, req.network_id, device.name, req.mtu)


async def unplug(rtnl: Rtnl, names: Names, port_id: str) -> None:
    """Delete the port's veth pair (both ends); an unknown port is not an error."""
    check_id("port id", port_id)
    device = await rtnl.get(name=names.port(port_id))
    if device is not None and device.kind == "veth" and device.alias in (None, port_id):
        await rtnl.delete(device)


async def list_ports(rtnl: Rtnl, names: Names) -> list[PluggedPort]:
    """Every labelled port of this fabric, with the network whose bridge it is on."""
    links = await rtnl.links()
    networks = {
        link.index: link.alias
        for link in links
        if names.kind_of(link.name) == BRIDGE and link.kind == "bridge" and link.alias
    }
    return [
        PluggedPort(link.alias, networks.get(link.master or 0), link.name, link.mtu)
        for link in links
        if names.kind_of(link.name) == PORT and link.kind == "veth" and link.alias
    ]
