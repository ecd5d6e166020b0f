"""The host's L2 fabric: one bridge per network, one veth pair per plugged port.

``Fabric`` is what the network service, the instance providers and the test
workloads call. It keeps no state of its own beyond its settings: everything
it knows it reads back from the kernel, so a restarted service makes a new
``Fabric`` and finds (``networks()``, ``ports()``) and adopts what exists
instead of recreating it. Every operation is idempotent, and the operations
of one ``Fabric`` run one at a time (each reads the kernel, then writes).

Only links named with the fabric's prefix are created, changed or deleted,
plus the host NICs its ``uplinks`` name, which are only made bridge ports and
released. It opens one netlink socket in its namespace (``netns``; None is
the namespace the process runs in), kept until ``close()``, and a short-lived
one in a port's namespace while plugging.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import MappingProxyType, TracebackType

from astara.fabric import networks as network_ops
from astara.fabric import ports as port_ops
from astara.fabric.kernel import Rtnl
from astara.fabric.model import Network, NetworkSpec, PluggedPort, VxlanUnderlay
from astara.fabric.names import Names


class Fabric:
    """Networks and ports of one host (or of one namespace standing in for a host).

    ``uplinks`` maps a physical network to the host NIC that carries it: a
    flat network's bridge gets that NIC as a port, a VLAN network a VLAN
    device on it. ``vxlan`` is the underlay VXLAN networks use. A network
    whose type needs one of these when it is not configured is refused
    (``FabricInvalidError``), never quietly made local.

    Use one ``Fabric`` from one event loop (its netlink socket belongs to the
    loop that first used it); ``close()`` it, or use it as ``async with``.
    """

    def __init__(
        self,
        *,
        prefix: str = "astara-",
        uplinks: Mapping[str, str] | None = None,
        vxlan: VxlanUnderlay | None = None,
        netns: str | None = None,
    ) -> None:
        self.netns = netns
        self.layout = network_ops.Layout(
            names=Names(prefix), uplinks=MappingProxyType(dict(uplinks or {})), vxlan=vxlan
        )
        self._rtnl: Rtnl | None = None
        self._lock = asyncio.Lock()

    @property
    def names(self) -> Names:
        return self.layout.names

    async def __aenter__(self) -> Fabric:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the netlink socket; the links stay. Safe to call twice."""
        if self._rtnl is not None:
            self._rtnl.close()
            self._rtnl = None

    async def _kernel(self) -> Rtnl:
        if self._rtnl is None:
            # FabricNotFoundError if the namespace is missing
            self._rtnl = await Rtnl.open(self.netns)
        return self._rtnl

    # -- networks -----------------------------------------------------------------
    async def ensure_network(self, spec: NetworkSpec) -> Network:
        """Make the network's bridge and segment as ``spec`` says; return what is there.

        Idempotent: a second call changes nothing; a changed MTU is fixed in
        place, a changed segmentation replaces the segment device (never the
        bridge or its ports). Raises FabricInvalidError (an unmapped physical
        network, no underlay, no 802.1Q in the kernel), FabricNotFoundError (a
        missing NIC), FabricConflictError (a NIC on another bridge, a VLAN id or
        VNI in use); a bridge made by a failed call is removed again.
        """
        async with self._lock:
            return await network_ops.ensure_network(await self._kernel(), self.layout, spec)

    async def remove_network(self, network_id: str) -> None:
        """Delete the network's bridge and segment, and unplug the ports on it; idempotent."""
        async with self._lock:
            await network_ops.remove_network(await self._kernel(), self.names, network_id)

    async def remove_networks(self, network_ids: list[str]) -> None:
        """``remove_network`` of each (one read of the kernel's links for them all)."""
        async with self._lock:
            await network_ops.remove_networks(await self._kernel(), self.names, network_ids)

    async def networks(self) -> list[Network]:
        """The networks found in the kernel (labelled bridges with this prefix)."""
        async with self._lock:
            return await network_ops.list_networks(await self._kernel(), self.layout)

    # -- ports --------------------------------------------------------------------
    async def plug(
        self,
        *,
        network_id: str,
        port_id: str,
        mac: str,
        mtu: int,
        netns: str | None,
        ifname: str,
    ) -> PluggedPort:
        """Plug a port into the network: NIC ``ifname`` in ``netns``, with ``mac`` and ``mtu``.

        ``netns`` None puts the NIC in the fabric's own namespace. Idempotent:
        the same call again changes nothing; another MAC or MTU is set in
        place; another namespace or name replaces the pair. Raises
        FabricNotFoundError (the network is not ensured, the namespace is
        missing), FabricConflictError (``ifname`` is taken there) or
        FabricInvalidError (a bad MAC, MTU or name).
        """
        request = port_ops.PortRequest(network_id, port_id, mac, mtu, netns, ifname)
        async with self._lock:
            return await port_ops.plug(await self._kernel(), self.names, request)

    async def unplug(self, *, port_id: str) -> None:
        """Delete the port's veth pair; an unknown port is not an error."""
        async with self._lock:
            await port_ops.unplug(await self._kernel(), self.names, port_id)

    async def ports(self) -> list[PluggedPort]:
        """The ports found in the kernel (labelled veth ends with this prefix)."""
        async with self._lock:
            return await port_ops.list_ports(await self._kernel(), self.names)
