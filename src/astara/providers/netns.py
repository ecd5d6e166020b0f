"""The netns provider: each appliance is a Linux network namespace on this host.

For router ``1a2b3c4d-…`` it makes::

    namespace astara-1a2b3c4d                     (``naming``: longer on a clash)
      ge0  <── veth ──> <link prefix>m<tag>  on bridge astara-mgt (host: <mgmt prefix>::1)
           address <mgmt prefix> + SHA-256(router id)[:8]   (``naming.management_address``)
           MAC from the router id too (``naming.management_mac``): stable across rebuilds
           ifalias "astara-router <router id> <booted at, ISO 8601>"
      ge1, ge2, …  one per router port, plugged by the L2 fabric with the port's
           MAC and MTU; ifalias = the port id

and registers the namespace with the appliance agent (``AgentControl``),
which then serves the appliance API on the management address, port 5000.

Nothing is remembered in memory: the router id lives on ``ge0``, the port id
on each port NIC, so a new ``NetnsProvider`` (a restarted orchestrator) finds
every instance with ``list()``/``get()`` and carries on. NIC numbers are
the smallest free ``geN`` when a port is first plugged and never change while
it stays plugged. The host end of ``ge0`` is named with the fabric's link
prefix and kind letter ``m`` (which the fabric never uses) and a tag from
SHA-256(router id); it is labelled with the router id.

Kernel changes go through ``ip`` (iproute2) run as asyncio subprocesses, and
the ports through the ``Fabric``. The operations of one router run one at a
time; different routers in parallel.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from ipaddress import IPv6Address, IPv6Interface, IPv6Network
from typing import Any

from astara.fabric import (
    Fabric,
    FabricConflictError,
    FabricError,
    FabricKernelError,
    NetworkSpec,
    NetworkType,
)
from astara.providers.agent_control import AgentControl
from astara.providers.base import (
    Instance,
    Nic,
    PortSpec,
    ProviderConflictError,
    ProviderError,
    ProviderNotFoundError,
    ProviderPermanentError,
    ProviderTemporaryError,
)
from astara.providers.naming import management_address, management_mac, name_candidates

NETNS_DIR = "/run/netns"
MANAGEMENT_NIC = "ge0"
#: first word of ge0's ifalias: marks a namespace as a router instance
LABEL = "astara-router"
_GE = re.compile(r"^ge(\d+)$")
_MAX_IFNAME = 15
#: namespaces ``list`` reads at once
LIST_CONCURRENCY = 16


@contextlib.contextmanager
def _fabric_errors(what: str) -> Iterator[None]:
    """Fabric errors as provider errors: conflict, temporary (kernel), else permanent."""
    try:
        yield
    except FabricConflictError as exc:
        raise ProviderConflictError(f"{what}: {exc}") from exc
    except FabricKernelError as exc:
        raise ProviderTemporaryError(f"{what}: {exc}") from exc
    except FabricError as exc:
        raise ProviderPermanentError(f"{what}: {exc}") from exc


async def _ip(*args: str) -> str:
    """Run ``ip args``; its stdout. ProviderTemporaryError if it fails."""
    proc = await asyncio.create_subprocess_exec(
        "ip",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise ProviderTemporaryError(f"ip {' '.join(args)}: {err.decode(errors='replace').strip()}")
    return out.decode()


@dataclass(frozen=True)
class _Link:
    """One link as ``ip -j -d addr show`` reports it."""

    name: str
    mac: str
    alias: str | None
    master: str | None
    up: bool
    addresses: tuple[IPv6Interface, ...]


def _link(entry: dict[str, Any]) -> _Link:
    addresses = tuple(
        IPv6Interface(f"{a['local']}/{a['prefixlen']}")
        for a in entry.get("addr_info", [])
        if a.get("family") == "inet6" and "local" in a
    )
    return _Link(
        name=str(entry["ifname"]),
        mac=str(entry.get("address", "")).lower(),
        alias=entry.get("ifalias") or None,
        master=entry.get("master"),
        up="UP" in entry.get("flags", []),
        addresses=addresses,
    )


def _exists(netns: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, netns))


async def _links(netns: str | None, dev: str | None = None) -> builtins.list[_Link] | None:
    """The links of ``netns`` (None: ours), or only ``dev``; None if the namespace or dev is gone."""
    if netns is not None and not _exists(netns):
        return None
    args = ["-j", "-d"] + (["-n", netns] if netns is not None else []) + ["addr", "show"]
    if dev is not None:
        args += ["dev", dev]
    try:
        out = await _ip(*args)
    except ProviderTemporaryError:
        if (netns is not None and not _exists(netns)) or dev is not None:
            return None  # gone meanwhile, or no such device
        raise
    return [_link(entry) for entry in json.loads(out or "[]")]


def _label(router_id: str, booted_at: datetime) -> str:
    return f"{LABEL} {router_id} {booted_at.isoformat()}"


def _owner(alias: str | None) -> tuple[str, datetime] | None:
    """(router id, booted at) from ge0's ifalias, None if it is not a router's label."""
    parts = (alias or "").split(" ")
    if len(parts) != 3 or parts[0] != LABEL:
        return None
    try:
        return parts[1], datetime.fromisoformat(parts[2])
    except ValueError:
        return None


class NetnsProvider:
    """``Provider`` by network namespaces on this host; see the module docstring."""

    def __init__(
        self,
        *,
        fabric: Fabric,
        agent: AgentControl,
        prefix: str = "astara-",
        mgmt_bridge: str = "astara-mgt",
        mgmt_prefix: str = "fdca:3ba5:a17a:acda::/64",
    ) -> None:
        self.fabric = fabric
        self.agent = agent
        self.prefix = prefix
        self.mgmt_bridge = mgmt_bridge
        self.mgmt_prefix = IPv6Network(mgmt_prefix)
        if self.mgmt_prefix.prefixlen > 64:
            raise ProviderPermanentError(f"management prefix {mgmt_prefix} is longer than /64")
        #: the host's address on the management bridge: what appliances see the orchestrator as
        self.host_address = IPv6Interface(f"{self.mgmt_prefix[1]}/{self.mgmt_prefix.prefixlen}")
        self._locks: dict[str, asyncio.Lock] = {}
        self._bridge_lock = asyncio.Lock()
        #: networks this provider ensured, as ensured: a plug on one trusts it (a dump of
        #: every link on the host per plug cost ~100 ms), and ensures again if the plug fails
        self._ensured: dict[str, NetworkSpec] = {}

    # -- names ----------------------------------------------------------------------
    def host_link(self, router_id: str) -> str:
        """The host end of the router's ``ge0`` veth."""
        head = f"{self.fabric.names.prefix}m"
        digest = hashlib.sha256(router_id.encode()).hexdigest()
        return head + digest[: _MAX_IFNAME - len(head)]

    def _lock(self, router_id: str) -> asyncio.Lock:
        return self._locks.setdefault(router_id, asyncio.Lock())

    async def _ge0(self, netns: str) -> _Link | None:
        found = await _links(netns, MANAGEMENT_NIC)
        return found[0] if found else None

    async def _find(self, router_id: str) -> str | None:
        """The namespace labelled with ``router_id``, None if there is none."""
        for name in name_candidates(self.prefix, router_id):
            if _exists(name):
                ge0 = await self._ge0(name)
                owner = _owner(ge0.alias if ge0 else None)
                if owner is not None and owner[0] == router_id:
                    return name
        return None

    async def _choose(self, router_id: str) -> str:
        """A name for a new namespace: free, or unlabelled (a boot that died before ``ge0``)."""
        held = []
        for name in name_candidates(self.prefix, router_id):
            if not _exists(name):
                return name
            ge0 = await self._ge0(name)
            owner = _owner(ge0.alias if ge0 else None)
            if owner is None:
                return name
            held.append(f"{name} (router {owner[0]})")
        raise ProviderConflictError(
            f"every namespace name of router {router_id} is held: {', '.join(held)}"
        )

    # -- reading --------------------------------------------------------------------
    async def _read(self, name: str, links: builtins.list[_Link] | None = None) -> Instance | None:
        """The instance in namespace ``name`` (from ``links``, its links, if already read)."""
        if links is None:
            links = await _links(name)
        if links is None:
            return None
        ge0 = next((link for link in links if link.name == MANAGEMENT_NIC), None)
        owner = _owner(ge0.alias if ge0 else None)
        if ge0 is None or owner is None:
            return None
        if name not in name_candidates(self.prefix, owner[0]):
            # another deployment's, whose prefix merely starts with ours ("astara-bench-…"
            # for "astara-"): never listed, so never adopted nor removed by ``astara down``
            return None
        address = next(
            (a.ip for a in ge0.addresses if a.ip in self.mgmt_prefix and not a.ip.is_link_local),
            None,
        )
        nics = sorted(
            (
                (int(match.group(1)), Nic(link.name, link.mac, link.alias))
                for link in links
                if (match := _GE.match(link.name)) and link.name != MANAGEMENT_NIC
            ),
            key=lambda pair: pair[0],
        )
        return Instance(
            owner[0],
            name,
            address,
            owner[1],
            tuple(nic for _, nic in nics),
            management_mac=ge0.mac or None,
        )

    async def get(self, *, router_id: str) -> Instance | None:
        """The router's namespace as the kernel has it, None if there is none; changes nothing.

        One ``ip`` call per existing candidate name (usually one): the links read to
        find the namespace labelled with the router are the ones the instance is read from.
        """
        for name in name_candidates(self.prefix, router_id):
            if not _exists(name):
                continue
            links = await _links(name)
            if links is None:
                continue
            instance = await self._read(name, links)
            if instance is not None and instance.router_id == router_id:
                return instance
        return None

    async def list(self) -> builtins.list[Instance]:
        """Every namespace with the prefix whose ``ge0`` carries a router label."""
        try:
            names = sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(self.prefix))
        except FileNotFoundError:
            return []
        # one ``ip`` per namespace, LIST_CONCURRENCY at a time (1,000 one after the other
        # took ~4 s: the startup sweep and every re-adoption wait for it)
        limit = asyncio.Semaphore(LIST_CONCURRENCY)

        async def read(name: str) -> Instance | None:
            async with limit:
                return await self._read(name)

        found = await asyncio.gather(*(read(name) for name in names))
        return [instance for instance in found if instance is not None]

    # -- booting --------------------------------------------------------------------
    async def _ensure_namespace(self, name: str) -> None:
        if not _exists(name):
            await _ip("netns", "add", name)
        await _ip("-n", name, "link", "set", "lo", "up")

    async def _ensure_bridge(self) -> None:
        if self._bridge_ok(await _links(None, self.mgmt_bridge)):
            return  # as wanted: one read, no lock (every boot and adoption passes here)
        async with self._bridge_lock:
            if await _links(None, self.mgmt_bridge) is None:
                try:
                    await _ip("link", "add", self.mgmt_bridge, "type", "bridge")
                except ProviderTemporaryError:
                    if await _links(None, self.mgmt_bridge) is None:
                        raise  # else another orchestrator of this host made it meanwhile
            await _ip("link", "set", self.mgmt_bridge, "up")
            await _ip(
                "-6", "addr", "replace", str(self.host_address), "dev", self.mgmt_bridge, "nodad"
            )

    def _bridge_ok(self, links: builtins.list[_Link] | None) -> bool:
        """The management bridge is there, up, with the host's address."""
        if not links:
            return False
        return links[0].up and self.host_address in links[0].addresses

    async def _check_address(self, router_id: str, address: IPv6Address) -> None:
        """ProviderConflictError if another router's appliance holds ``address``.

        Every appliance's ``ge0`` has the address derived from its router id (``boot``
        gives no other), and its host end, on the management bridge, is labelled with that
        id: one dump of the bridge's ports finds every holder. (Reading every namespace, one
        ``ip`` each, made the N-th boot cost N processes: 1,000 routers took ~500,000.)
        """
        out = await _ip("-j", "link", "show", "master", self.mgmt_bridge)
        for entry in json.loads(out or "[]"):
            other = entry.get("ifalias")
            if not other or other == router_id:
                continue
            if management_address(self.mgmt_prefix, other) == address:
                raise ProviderConflictError(
                    f"management address {address} of router {router_id} is held by"
                    f" router {other} ({entry.get('ifname')})"
                )

    async def _ensure_ge0(self, name: str, router_id: str, address: IPv6Address) -> None:
        host = self.host_link(router_id)
        if await self._ge0(name) is None:
            await self._check_address(router_id, address)
            stale = await _links(None, host)
            if stale:
                if stale[0].alias not in (None, router_id):
                    raise ProviderConflictError(
                        f"{host}, the management link of router {router_id},"
                        f" is held by router {stale[0].alias}"
                    )
                await _ip("link", "del", host)  # its ge0 is gone: make the pair anew
            await _ip(
                "link",
                "add",
                host,
                "type",
                "veth",
                "peer",
                "name",
                MANAGEMENT_NIC,
                "address",
                management_mac(router_id),
                "netns",
                name,
            )
            await _ip(
                "-n",
                name,
                "link",
                "set",
                MANAGEMENT_NIC,
                "alias",
                _label(router_id, datetime.now(UTC)),
            )
            await _ip("link", "set", host, "alias", router_id)
        await _ip("link", "set", host, "master", self.mgmt_bridge, "up")
        await _ip("-n", name, "link", "set", MANAGEMENT_NIC, "up")
        interface = IPv6Interface(f"{address}/{self.mgmt_prefix.prefixlen}")
        await _ip(
            "-n", name, "-6", "addr", "replace", str(interface), "dev", MANAGEMENT_NIC, "nodad"
        )

    async def boot(self, *, router_id: str, ports: Sequence[PortSpec]) -> Instance:
        """Make (or adopt and converge) the router's namespace, plug ``ports``, register it.

        Idempotent. A boot that fails half-way leaves what it made; boot again
        to finish, or destroy. Raises ProviderConflictError (names or the
        management address held by another router), ProviderPermanentError
        (a port the fabric refuses), ProviderTemporaryError (the kernel or the
        agent failed).
        """
        async with self._lock(router_id):
            name = await self._find(router_id) or await self._choose(router_id)
            address = management_address(self.mgmt_prefix, router_id)
            await self._ensure_namespace(name)
            await self._ensure_bridge()
            await self._ensure_ge0(name, router_id, address)
            for port in ports:
                await self._plug(name, port)
            await self.agent.add(netns=name, listen=address)
            instance = await self._read(name)
        if instance is None:
            raise ProviderTemporaryError(
                f"namespace {name} vanished while router {router_id} booted"
            )
        return instance

    async def adopt(self, instance: Instance) -> Instance:
        """Have the agent serve ``instance`` again, as ``list``/``get`` just read it (a new
        agent serves nothing); idempotent.

        An instance whose ``ge0`` has the address ``boot`` gives it is complete: only the
        agent is told (one request, no ``ip`` process; a restart re-adopts 1,000 of them).
        Any other is booted with no ports, which repairs it. (A ``ge0`` whose host end fell
        off the management bridge is not seen here: its probes fail and it is rebuilt.)
        """
        expected = management_address(self.mgmt_prefix, instance.router_id)
        if instance.management_address != expected:
            return await self.boot(router_id=instance.router_id, ports=())
        async with self._lock(instance.router_id):
            await self.agent.add(netns=instance.name, listen=expected)
        return instance

    # -- ports ----------------------------------------------------------------------
    async def _plug(self, name: str, port: PortSpec) -> None:
        try:
            kind = NetworkType(port.network_type)
        except ValueError:
            raise ProviderPermanentError(
                f"port {port.port_id}: network type {port.network_type!r} is not one of"
                f" {', '.join(t.value for t in NetworkType)}"
            ) from None
        spec = NetworkSpec(
            network_id=port.network_id,
            network_type=kind,
            segmentation_id=port.segmentation_id,
            physical_network=port.physical_network,
            mtu=port.mtu,
        )
        trusted = self._ensured.get(port.network_id) == spec
        if not trusted:
            await self._ensure_network(spec, port.port_id)
        links = await _links(name) or []
        nics = [link for link in links if _GE.match(link.name) and link.name != MANAGEMENT_NIC]
        mine = next((n for n in nics if n.alias == port.port_id), None) or next(
            (n for n in nics if n.alias is None and n.mac == port.mac.lower()), None
        )
        if mine is not None:
            ifname = mine.name
        else:
            used = {int(m.group(1)) for n in links if (m := _GE.match(n.name))}
            ifname = f"ge{next(n for n in range(1, len(used) + 2) if n not in used)}"
        plug = partial(
            self.fabric.plug,
            network_id=port.network_id,
            port_id=port.port_id,
            mac=port.mac,
            mtu=port.mtu,
            netns=name,
            ifname=ifname,
        )
        try:
            with _fabric_errors(f"plug port {port.port_id}"):
                await plug()
        except ProviderError:
            if not trusted:
                raise
            # the network was ensured earlier, and something changed it since (an operator,
            # astara down): ensure it again, then plug once more
            await self._ensure_network(spec, port.port_id)
            with _fabric_errors(f"plug port {port.port_id}"):
                await plug()
        await _ip("-n", name, "link", "set", ifname, "alias", port.port_id)

    async def _ensure_network(self, spec: NetworkSpec, port_id: str) -> None:
        """``fabric.ensure_network``, remembered: the next plug on it trusts it (see ``_plug``)."""
        self._ensured.pop(spec.network_id, None)
        with _fabric_errors(f"plug port {port_id}"):
            await self.fabric.ensure_network(spec)
        self._ensured[spec.network_id] = spec

    async def plug(self, *, router_id: str, port: PortSpec) -> Instance:
        """Hot-plug ``port`` as the next free ``geN`` (or its NIC, if plugged); idempotent.

        Raises ProviderNotFoundError if the router has no namespace; fabric
        refusals as in ``boot``.
        """
        async with self._lock(router_id):
            name = await self._find(router_id)
            if name is None:
                raise ProviderNotFoundError(f"router {router_id} has no namespace: boot it first")
            await self._plug(name, port)
            instance = await self._read(name)
        if instance is None:
            raise ProviderNotFoundError(f"namespace {name} of router {router_id} vanished")
        return instance

    async def unplug(self, *, router_id: str, port_id: str) -> None:
        """Delete the port's veth pair (its ``geN`` goes with it); idempotent."""
        async with self._lock(router_id):
            with _fabric_errors(f"unplug port {port_id}"):
                await self.fabric.unplug(port_id=port_id)

    # -- deleting -------------------------------------------------------------------
    async def destroy(self, *, router_id: str) -> None:
        """Unregister from the agent (stopping dnsmasq/bird), unplug, delete the namespace.

        Idempotent; leaves no namespace or link of the router. Raises
        ProviderTemporaryError when the agent does not answer (nothing is
        deleted then, so the appliance's services are never orphaned).
        """
        async with self._lock(router_id):
            candidates = name_candidates(self.prefix, router_id)
            name = await self._find(router_id)
            served = {a.netns for a in await self.agent.list()}
            for netns in candidates:
                if netns in served and (netns == name or not _exists(netns)):
                    await self.agent.remove(netns=netns)
            if name is not None:
                for nic in (await self._read(name) or Instance(router_id, name, None, None)).nics:
                    if nic.port_id is not None:
                        with _fabric_errors(f"unplug port {nic.port_id}"):
                            await self.fabric.unplug(port_id=nic.port_id)
            host = await _links(None, self.host_link(router_id))
            if host and host[0].alias in (None, router_id):
                await _ip("link", "del", host[0].name)
            if name is not None and _exists(name):
                await _ip("netns", "del", name)
        lock = self._locks.get(router_id)
        if lock is not None and not lock.locked():
            del self._locks[router_id]
