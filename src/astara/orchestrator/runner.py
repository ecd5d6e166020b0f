"""The orchestrator, wired: intake, queue, reconciler, health and the startup sweep in one object.

``Orchestrator`` owns one pipeline::

    bus ──> Intake ──> ShardFilter ──> WorkQueue ──> RouterReconciler.reconcile
                                          ^   ^
            HealthMonitor (misses) ───────┘   └── requeue timers (loop.call_later)
            startup sweep (every router of the API, every instance of the provider)

Invariants:

- The intake subscribes before the startup sweep reads, so a change made
  while the sweep runs is either read by it or delivered as a notification.
- With a pending store (``pending``, issue 6), the intake records every
  router a batch of notifications names (kept here or not: another process
  may keep it) before it acknowledges the batch; at start the routers still
  pending that this process keeps are enqueued before the sweep, and
  ``PendingRouters`` looks every 0.2 s for rows other orchestrators
  recorded. A reconcile that ends with no failure counted deletes the rows
  seen before it started (``pending.py``).
- Notifications lost on the way (the bus overflowed, or its connection was
  lost and is restored: the intake's ``on_overflow``) make every router be
  enqueued again (``_resync``, as ``poll``), retried until the API answers.
- The startup sweep enqueues every router ``GET /v2.0/routers`` lists (as
  admin) and every instance ``provider.list()`` finds (of this process's
  shard: with ``shards`` > 1 each process adopts and reconciles only its own), so instances whose
  router is gone are reconciled too (and destroyed). Every found instance is
  *adopted* first: ``adopt`` (by default ``provider.boot`` with no ports,
  which is idempotent and re-registers the namespace with the agent) is
  called on it, so an appliance left running by a previous process is served
  again instead of being rebuilt; its router is enqueued as soon as it is
  (routers without an instance at once), so looks and adoptions overlap.
  The sweep retries while the network API does not answer.
- The sweep's reconciles look at the network through one whole-view read
  (``SnapshotRouterReader``: five lists instead of six reads per router),
  taken after the routers were listed. It is used only while it is as fresh
  as a live read: it is dropped at the first notification resolved after its
  reads began (or one arriving while they ran discards it), on any resync,
  and after ``SNAPSHOT_TTL`` s. A reconcile that looked with it when a
  notification came is run again for that notification, with live reads.
- With ``ownership`` (several orchestrators on a hash ring, issue 6;
  ``ownership.py``), a router is kept only while the ring gives it to this
  member AND its lease is held: there is no startup sweep of its own; the
  ring's first rebalance and every later one claims the routers the ring
  gives this member (``_candidates``), and each router whose lease is
  acquired has its appliance adopted (never rebuilt) and is enqueued
  (``_took``). A reconcile of a router no longer kept does nothing; the
  reconciler asks ``ownership.fence`` before every action; a router that
  ends GONE has its lease deleted; ``close`` releases every lease.
- Requeues are ``loop.call_later`` timers owned here, one per key (the sooner
  one wins); ``close`` cancels every one of them.
- ``management(router_id)`` answers from a cache filled before and after
  every reconcile of that router, from the provider's ``Instance`` (its
  management address, with the management prefix length) and ``ge0``'s MAC
  (``management_mac``, by default read from the kernel in the instance's
  namespace with ``ip -j link``). A router whose instance is not known yet
  has no management: the reconcile fails and is retried on the backoff.
- The health monitor probes the management addresses of the instances that
  cache knows (read synchronously each sweep).
- The presence watcher looks every ``presence_period`` (0.2 s) at which
  instances exist (``presence``: by default one ``listdir`` of
  ``/run/netns``); an instance the cache knows that is no longer there is
  reported to the health monitor (``notice_gone``, which enqueues its
  router at once) and forgotten, so a crashed appliance is rebuilt without
  waiting for three missed probes.
- Operating it (``operations.py``, served by ``admin.py``): every reconcile
  runs with the router id in the log context (``logcontext.about``) and
  first asks ``operations.admit``: a router in debug mode (``control``, a
  ``ControlStore``) is skipped and journalled "held"; a router marked by
  ``rebuild`` has its instance destroyed first, inside the same queued
  reconcile. The journal records the intake's events, every enqueue and
  every reconcile step; ``metrics`` (a registry of its own) counts them.
- ``run`` returns once ``close`` was called and every part has stopped; no
  task, timer or connection is left behind.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from astara.bus.base import Bus
from astara.domain.breaker import CircuitBreaker
from astara.domain.lifecycle import Action, Decision, State
from astara.orchestrator.appliance_client import Address, ApplianceClient
from astara.orchestrator.control_store import ControlStore
from astara.orchestrator.health import DEFAULT_PERIOD, HealthMonitor
from astara.orchestrator.intake import Intake
from astara.orchestrator.journal import Journal
from astara.orchestrator.logcontext import about
from astara.orchestrator.metrics import Metrics
from astara.orchestrator.neutron_reader import (
    HttpNetworkReader,
    neutron_client,
    noauth_admin_headers,
)
from astara.orchestrator.operations import Operations, noting
from astara.orchestrator.ownership import Ownership
from astara.orchestrator.pending import PendingRouters, PendingStore
from astara.orchestrator.queueing import DEFAULT_CONCURRENCY, ShardFilter, WorkQueue
from astara.orchestrator.reconcile import (
    DEFAULT_BOOT_TIMEOUT,
    DEFAULT_MAX_FAILURES,
    DEFAULT_POLL_DELAY,
    DEFAULT_SETTLE_DELAY,
    HttpNetworkSegments,
    HttpStatusSink,
    MemoryStateStore,
    RouterReconciler,
)
from astara.orchestrator.resolution import ResourceKey, ResourceKind
from astara.orchestrator.router_driver import IPAddress, Management
from astara.orchestrator.router_reader import HttpRouterReader
from astara.providers.base import Instance, Provider

__all__ = [
    "Orchestrator",
    "OrchestratorSettings",
    "netns_management_mac",
    "netns_present",
]

log = logging.getLogger(__name__)

SWEEP_RETRY = 1.0
"""Seconds between two tries of the startup sweep while the network API does not answer."""
MAX_SWEEP_RETRY = 10.0
"""The longest wait between two tries of the startup sweep."""
_CHANGES_INSTANCE = frozenset({Action.BOOT, Action.REBUILD, Action.STOP})
"""Actions after which the runner reads the router's instance again (management, health)."""
PRESENCE_PERIOD = 0.2
"""Seconds between two looks of the presence watcher."""
NETNS_DIR = "/run/netns"
DRAIN_TIMEOUT = 10.0
"""Seconds ``close`` lets running reconciles finish before cancelling them."""
ADOPT_CONCURRENCY = 16
"""Instances adopted at once by the startup sweep and ``readopt``."""
SNAPSHOT_TTL = 60.0
"""Seconds the startup sweep's whole-view read may serve reconciles, at most."""


@dataclass(frozen=True, slots=True)
class OrchestratorSettings:
    """How the orchestrator runs; every field has a default fit for one host."""

    #: this process's shard of ``shards`` (see ``queueing``)
    shard_index: int = 0
    shards: int = 1
    #: reconciles in flight at once
    concurrency: int = DEFAULT_CONCURRENCY
    #: seconds between health sweeps
    health_period: float = DEFAULT_PERIOD
    #: seconds an agent may stay silent after its instance booted
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT
    #: consecutive failures after which a router is ERROR (still retried on the backoff)
    max_failures: int = DEFAULT_MAX_FAILURES
    #: seconds before looking again at a booting appliance
    poll_delay: float = DEFAULT_POLL_DELAY
    #: seconds before verifying a step that changed something
    settle_delay: float = DEFAULT_SETTLE_DELAY
    #: the window of the rebuild circuit breaker, in seconds
    breaker_window: float = 60.0
    #: the management network's prefix length (the provider's management prefix)
    management_prefixlen: int = 64
    #: where appliances reach the metadata service (pushed in their configuration)
    metadata: tuple[IPAddress, int] | None = None
    #: the routers' BGP AS number and their external IPv6 gateway's (None: no BGP)
    asn: int | None = None
    neighbor_asn: int | None = None


def netns_present() -> Collection[str]:
    """The names of the network namespaces that exist now (one ``listdir``)."""
    try:
        return frozenset(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return frozenset()


async def netns_management_mac(instance: Instance) -> str | None:
    """``ge0``'s MAC in the instance's namespace (``instance.name``), None if it is not there."""
    proc = await asyncio.create_subprocess_exec(
        "ip",
        "-j",
        "-n",
        instance.name,
        "link",
        "show",
        "dev",
        "ge0",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        return None
    try:
        links = json.loads(out or b"[]")
        mac = links[0]["address"]
    except (ValueError, LookupError, TypeError):
        return None
    return str(mac).lower() if mac else None


class Orchestrator:
    """One orchestrator process's work; see the module docstring.

    ``network_url`` is the network API (``http://127.0.0.1:9696``), read and
    written as admin with ``headers`` (no-auth admin headers by default).
    ``appliance`` is shared by the reconciler and the health monitor; the
    caller owns it. ``management_mac`` reads an instance's ``ge0`` MAC;
    ``adopt`` re-registers an instance found at start (None: ``provider.boot``
    with no ports). ``presence`` names the instances that exist now (None: no
    presence watcher; the health probes notice a vanished appliance).
    """

    def __init__(
        self,
        *,
        bus: Bus,
        network_url: str,
        provider: Provider,
        appliance: ApplianceClient,
        settings: OrchestratorSettings | None = None,
        management_mac: Callable[[Instance], Awaitable[str | None]] = netns_management_mac,
        adopt: Callable[[Instance], Awaitable[object]] | None = None,
        headers: Mapping[str, str] | None = None,
        presence: Callable[[], Collection[str]] | None = None,
        journal: Journal | None = None,
        control: ControlStore | None = None,
        pending: PendingStore | None = None,
        ownership: Ownership | None = None,
    ) -> None:
        self.settings = settings or OrchestratorSettings()
        self.journal = journal if journal is not None else Journal()
        self.metrics = Metrics(states=self.journal.states)
        self.journal.listen(self.metrics.observe)
        self._provider = provider
        self._management_mac = management_mac
        self._adopt = adopt
        self._client = neutron_client(
            url=network_url, headers=headers if headers is not None else noauth_admin_headers()
        )
        self._presence = presence
        self._identities: dict[str, tuple[str, datetime | None]] = {}
        """Router id -> (name, boot time) of its instance: whose management was read, and
        which name the presence watcher looks for."""
        self._managements: dict[str, Management] = {}
        self._addresses: dict[str, Address] = {}
        self._timers: dict[ResourceKey, asyncio.TimerHandle] = {}
        self._closing = False
        self._stopped = asyncio.Event()
        self._running = False
        self._sweep_task: asyncio.Task[None] | None = None
        self._resync_task: asyncio.Task[None] | None = None
        self._resync_again = False
        #: notifications resolved and resyncs so far: a whole-view read spanning one is stale
        self._changes = 0
        self._snapshot_timer: asyncio.TimerHandle | None = None
        breaker: CircuitBreaker[ResourceKey] = CircuitBreaker(
            window_seconds=self.settings.breaker_window
        )
        self.reconciler = RouterReconciler(
            journal=self.journal,
            reader=HttpRouterReader(client=self._client),
            provider=provider,
            appliance=appliance,
            status_sink=HttpStatusSink(client=self._client),
            management=self.management,
            segments=HttpNetworkSegments(client=self._client),
            requeue=self._requeue,
            store=MemoryStateStore(),
            boot_timeout=self.settings.boot_timeout,
            max_failures=self.settings.max_failures,
            breaker=breaker,
            poll_delay=self.settings.poll_delay,
            settle_delay=self.settings.settle_delay,
            orchestrator=self.settings.metadata,
            asn=self.settings.asn,
            neighbor_asn=self.settings.neighbor_asn,
            fence=ownership.fence if ownership is not None else None,
        )
        self.queue = WorkQueue(reconcile=self._reconcile, concurrency=self.settings.concurrency)
        # several orchestrators (issue 6): the hash ring and fenced leases decide what is kept
        self._ownership = ownership
        self._swept = False
        self._shard: ShardFilter | Ownership = (
            ownership
            if ownership is not None
            else ShardFilter(index=self.settings.shard_index, shards=self.settings.shards)
        )
        if ownership is not None:
            ownership.bind(
                acquired=self._took,
                busy=lambda r: ResourceKey.router(r) in self.queue.running,
                candidates=self._candidates,
            )
            self.metrics.registry.register(ownership.collector())
        self._enqueue = self._shard.wrap(noting(self.journal, self.queue.enqueue))
        # issue 6: notifications are acknowledged once their routers are pending in ``pending``
        self.pending = (
            # ``claims``: with a ring, also the routers whose lease is not held yet (the
            # enqueue acquires it first)
            PendingRouters(pending, keeps=self._shard.claims, enqueue=self._enqueue)
            if pending is not None
            else None
        )
        self.intake = Intake(
            bus=bus,
            reader=HttpNetworkReader(client=self._client),
            enqueue=self._enqueue,
            # a lambda: ``operations`` is made below, once the health monitor exists
            on_event=self._on_event,
            on_overflow=self._resync,
            record=self.pending.record if self.pending is not None else None,
        )
        self.health = HealthMonitor(
            client=appliance,
            targets=self._targets,
            enqueue=self._enqueue,
            breaker=breaker,
            period=self.settings.health_period,
            clock=time.time,  # the reconciler's clock: the breaker compares their times
            on_miss=self.metrics.health_miss,
        )
        self.operations = Operations(
            journal=self.journal,
            control=control,
            metrics=self.metrics,
            store=self.reconciler.store,
            provider=provider,
            health=self.health.health,
            enqueue=self._enqueue,
            keeps=self._shard.keeps,
            requeue=self._requeue,
            router_ids=self._router_ids,
            reader=HttpRouterReader(client=self._client),
            running=lambda: self.queue.running,
            queued=lambda: self.queue.stats.queued,
            shard=self.settings.shard_index,
            shards=self.settings.shards,
            concurrency=self.settings.concurrency,
        )

    # -- what the parts ask ------------------------------------------------------------------
    def management(self, router_id: str) -> Management:
        """The router's appliance's ``ge0`` (MAC, address); RuntimeError if not known yet."""
        found = self._managements.get(router_id)
        if found is None:
            raise RuntimeError(f"router {router_id}: the management NIC is not known yet")
        return found

    def appliance_addresses(self) -> frozenset[str]:
        """The management addresses of the instances known now (normalised text)."""
        return frozenset(str(ipaddress.ip_address(a)) for a in self._addresses.values())

    def _targets(self) -> Mapping[ResourceKey, Address]:
        return {ResourceKey.router(rid): address for rid, address in self._addresses.items()}

    def _requeue(self, key: ResourceKey, delay: float) -> None:
        if self._closing:
            return
        loop = asyncio.get_running_loop()
        current = self._timers.get(key)
        if current is not None:
            if current.when() <= loop.time() + delay:
                return  # the sooner look is already due
            current.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: ResourceKey) -> None:
        """A look the reconciler asked for is due: the queue's cooldown does not apply."""
        self._timers.pop(key, None)
        if self._shard.keeps(key):
            self.queue.enqueue(key, now=True)

    # -- reconciling -------------------------------------------------------------------------
    async def _reconcile(self, key: ResourceKey) -> None:
        if key.kind is not ResourceKind.ROUTER:
            log.debug("no reconciler for %s", key)
            return
        if self._ownership is not None and not self._ownership.keeps(key):
            return  # handed over (or lost) since it was enqueued: another member's now
        # the pending rows this reconcile covers: those seen before it reads anything
        upto = self.pending.started(key) if self.pending is not None else None
        with about(key.id):  # log lines of this reconcile carry the router id
            if not await self.operations.admit(key):  # held (debug mode), or rebuild failed
                return
            if key.id not in self._managements:
                await self._learn(key.id)
            decision: Decision | None = None
            failures = await self._failures(key) if upto is not None else 0
            try:
                decision = await self.reconciler.step(key)
            finally:
                if decision is None or decision.action in _CHANGES_INSTANCE:
                    await self._learn(key.id)
            gone = decision is not None and decision.next_state is State.GONE
            if self._ownership is not None and gone:  # deleted, destroyed: no lease to keep
                await self._ownership.forget(key.id)
            covered = upto is not None and decision is not None
            if covered and self.pending is not None and await self._failures(key) <= failures:
                self.pending.finished(key, upto)  # no failure counted: its rows can go

    async def _failures(self, key: ResourceKey) -> int:
        """The router's consecutive failures, as the reconciler counts them."""
        state = await self.reconciler.store.get(key)
        return state.failures.failures if state is not None else 0

    async def _learn(self, router_id: str) -> None:
        """Refresh what is known of the router's instance (management, health target)."""
        try:
            instance = await self._provider.get(router_id=router_id)
            await self._remember(router_id, instance)
        except Exception as exc:  # noqa: BLE001 - the reconcile reads again and decides
            log.info("router %s: the instance could not be read: %s", router_id, exc)

    async def _remember(self, router_id: str, instance: Instance | None) -> None:
        address = instance.management_address if instance is not None else None
        mac: str | None = None
        if instance is not None:
            known = self._managements.get(router_id)
            same = self._identities.get(router_id) == (instance.name, instance.booted_at)
            # ge0's MAC is the instance's for its whole life: read once per instance
            if known is not None and same:
                mac = known.mac
            else:  # read with the instance when the provider did (no process per instance)
                mac = instance.management_mac or await self._management_mac(instance)
            self._identities[router_id] = (instance.name, instance.booted_at)
        else:
            self._identities.pop(router_id, None)
        if instance is None or address is None or mac is None:
            self._managements.pop(router_id, None)
            self._addresses.pop(router_id, None)
            return
        prefixlen = self.settings.management_prefixlen
        self._managements[router_id] = Management(
            mac=mac, address=ipaddress.ip_interface(f"{address}/{prefixlen}")
        )
        self._addresses[router_id] = address

    # -- the presence watcher ----------------------------------------------------------------
    async def _watch_presence(self, presence: Callable[[], Collection[str]]) -> None:
        """Report every known instance that vanished, every ``PRESENCE_PERIOD``; see the module."""
        while not self._closing:
            await asyncio.sleep(PRESENCE_PERIOD)
            if not self._identities:
                continue
            present = presence()
            for router_id, (name, _booted_at) in list(self._identities.items()):
                if name in present:
                    continue
                log.warning("router %s: its appliance %s vanished", router_id, name)
                self._identities.pop(router_id, None)
                self._managements.pop(router_id, None)
                self._addresses.pop(router_id, None)
                self.health.notice_gone(ResourceKey.router(router_id))

    # -- the startup sweep -------------------------------------------------------------------
    async def _router_ids(self) -> list[str]:
        """Every router id of the network API, following ``next`` links."""
        ids: list[str] = []
        url: str | None = "/v2.0/routers"
        params: tuple[tuple[str, str], ...] | None = (("fields", "id"),)
        while url is not None:
            response = await self._client.get(url, params=params)
            response.raise_for_status()
            body: Any = response.json()
            ids += [str(r["id"]) for r in body.get("routers", []) if isinstance(r, dict)]
            url = next(
                (
                    link["href"]
                    for link in body.get("routers_links", [])
                    if isinstance(link, dict) and link.get("rel") == "next"
                ),
                None,
            )
            params = None
        return ids

    async def _sweep(self) -> None:
        """Adopt every instance, then enqueue every router and instance; see the module."""
        if self._ownership is not None:
            return  # the ring's first rebalance does it: ``_candidates``, then ``_took``
        delay = SWEEP_RETRY
        while True:
            try:
                instances = await self._provider.list()
                routers = await self._router_ids()
                break
            except (httpx.HTTPError, ValueError, OSError) as exc:
                log.warning("startup sweep: %s; retrying in %.0fs", exc, delay)
            except Exception as exc:  # noqa: BLE001 - the provider failed: retried the same
                log.warning("startup sweep: the provider failed: %s; retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_SWEEP_RETRY)
        instances = self._mine(instances)
        routers = [r for r in routers if self._shard.keeps(ResourceKey.router(r))]
        await self._take_snapshot()
        # a router with an instance is enqueued once that instance is adopted, the others
        # at once: the looks run while the adoptions (answered by the agent) go on
        adopting = {ResourceKey.router(i.router_id) for i in instances}
        keys = adopting | {ResourceKey.router(r) for r in routers}
        for key in sorted(keys - adopting, key=str):
            self._enqueue(key)
        await self._adopt_all(
            instances, then=lambda instance: self._enqueue(ResourceKey.router(instance.router_id))
        )
        log.info(
            "startup sweep: %d routers, %d instances adopted; %d keys enqueued",
            len(routers),
            len(instances),
            len(keys),
        )

    async def _candidates(self) -> set[str]:
        """Every router the ring may give this member: the network API's and, the first time
        (the startup sweep), every instance's (one whose router is gone is destroyed)."""
        ids = set(await self._router_ids())
        if not self._swept:
            ids |= {i.router_id for i in await self._provider.list()}
            self._swept = True
        return ids

    async def _took(self, router_ids: list[str]) -> None:
        """Routers whose leases this member just acquired: their appliance (if any) adopted,
        never rebuilt, then each enqueued (the reconcile reads the desired state, so it covers
        what the previous owner left pending or in flight)."""
        limit = asyncio.Semaphore(ADOPT_CONCURRENCY)

        async def take(router_id: str) -> None:
            async with limit:
                try:
                    instance = await self._provider.get(router_id=router_id)
                except Exception as exc:  # noqa: BLE001 - the reconcile reads it again
                    log.info("router %s: the instance could not be read: %s", router_id, exc)
                    instance = None
                if instance is not None:
                    await self._adopt_all([instance])
            self._enqueue(ResourceKey.router(router_id))

        await asyncio.gather(*(take(router_id) for router_id in router_ids))

    def _on_event(self, event_type: str, keys: frozenset[ResourceKey]) -> None:
        """A notification resolved, before its keys are enqueued: the network changed."""
        self._changes += 1
        self._drop_snapshot()
        self.operations.on_event(event_type, keys)

    async def _take_snapshot(self) -> None:
        """Have the reconciler look through one whole-view read (see the module); on any
        failure it reads live, as without."""
        before = self._changes
        try:
            snapshot = await HttpRouterReader(client=self._client).snapshot()
        except Exception as exc:  # noqa: BLE001 - an optimisation: the reconciles read live
            log.info("startup sweep: no whole-view read (%s); reading router by router", exc)
            return
        if self._changes != before or self._closing:
            return  # the network changed while it was read: not used at all
        self.reconciler.snapshot = snapshot
        self._snapshot_timer = asyncio.get_running_loop().call_later(
            SNAPSHOT_TTL, self._drop_snapshot
        )
        log.info("startup sweep: %d routers read at once", len(snapshot))

    def _drop_snapshot(self) -> None:
        self.reconciler.snapshot = None
        if self._snapshot_timer is not None:
            self._snapshot_timer.cancel()
            self._snapshot_timer = None

    def _resync(self) -> None:
        """Notifications were lost (the bus overflowed, or its connection was lost and is back):
        enqueue every router, as ``poll`` does, in a task of its own; one at a time, and a
        resync asked while one runs runs again after it (that one may have read too early)."""
        self._changes += 1
        self._drop_snapshot()
        if self._closing:
            return
        if self._resync_task is not None and not self._resync_task.done():
            self._resync_again = True
            return
        self._resync_again = False
        self._resync_task = asyncio.get_running_loop().create_task(
            self._resync_all(), name="resync"
        )

    async def _resync_all(self) -> None:
        delay = SWEEP_RETRY
        while not self._closing:
            self._resync_again = False
            try:
                count = await self.operations.poll()
            except Exception as exc:  # noqa: BLE001 - retried: what was lost is not known otherwise
                log.warning("resync after lost notifications: %s; retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_SWEEP_RETRY)
                continue
            log.info("resync after lost notifications: %d routers enqueued", count)
            if not self._resync_again:
                return

    def _mine(self, instances: Collection[Instance]) -> list[Instance]:
        """The instances of this process's shard: another shard's are its own to adopt."""
        return [i for i in instances if self._shard.keeps(ResourceKey.router(i.router_id))]

    async def _adopt_all(
        self,
        instances: Collection[Instance],
        then: Callable[[Instance], object] | None = None,
    ) -> None:
        """Adopt ``instances``, ``ADOPT_CONCURRENCY`` at a time (one after the other, 1,000
        took most of a restart: each is a few ``ip`` calls and one agent request); ``then``
        is called with each once it is adopted (or could not be: the reconcile repairs it)."""
        limit = asyncio.Semaphore(ADOPT_CONCURRENCY)

        async def adopt(instance: Instance) -> None:
            async with limit:
                try:
                    if self._adopt is not None:
                        await self._adopt(instance)
                    else:
                        await self._provider.boot(router_id=instance.router_id, ports=())
                except Exception as exc:  # noqa: BLE001 - the reconcile rebuilds what cannot be adopted
                    log.warning("router %s: not adopted: %s", instance.router_id, exc)
                await self._remember(instance.router_id, instance)
            if then is not None:
                then(instance)

        await asyncio.gather(*(adopt(instance) for instance in instances))

    async def readopt(self) -> int:
        """Adopt every instance again and enqueue its router; how many were found.

        For an agent that restarted and serves nothing: its appliances kept
        routing meanwhile (the data plane does not depend on it), and are served
        again instead of being rebuilt when their probes start to fail.
        """
        instances = self._mine(await self._provider.list())
        await self._adopt_all(instances)
        log.info("re-adopted %d appliances", len(instances))
        for key in sorted({ResourceKey.router(i.router_id) for i in instances}, key=str):
            self._enqueue(key)
        return len(instances)

    # -- lifetime ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Run every part until ``close``; returns when all have stopped. One ``run`` only."""
        if self._running or self._stopped.is_set():
            raise RuntimeError("Orchestrator.run called twice")
        self._running = True
        try:
            if self._closing:
                return
            await self.intake.open()  # before the sweep reads: nothing falls in between
            if self.pending is not None:  # what was pending at the last stop, first
                try:
                    await self.pending.look()
                except Exception as exc:  # noqa: BLE001 - its run looks again
                    log.warning("the pending routers could not be read: %s", exc)
            self._sweep_task = asyncio.create_task(self._sweep(), name="startup-sweep")
            async with asyncio.TaskGroup() as group:
                group.create_task(self.queue.run(), name="work-queue")
                group.create_task(self.intake.run(), name="intake")
                group.create_task(self.health.run(), name="health")
                if self._ownership is not None:
                    group.create_task(self._ownership.run(), name="ownership")
                if self.pending is not None:
                    group.create_task(self.pending.run(), name="pending")
                if self._presence is not None:
                    group.create_task(self._watch_presence(self._presence), name="presence")
                group.create_task(_quiet(self._sweep_task), name="sweep-waiter")
        finally:
            self._cancel_timers()
            await self._stop_resync()
            if self._sweep_task is not None and not self._sweep_task.done():
                self._sweep_task.cancel()
                await asyncio.gather(self._sweep_task, return_exceptions=True)
            await self._client.aclose()
            self._stopped.set()

    async def close(self) -> None:
        """Stop every part: no new keys, running reconciles drained (then cancelled). Idempotent."""
        self._closing = True
        self._cancel_timers()
        self._drop_snapshot()
        if self._sweep_task is not None:
            self._sweep_task.cancel()
        await self._stop_resync()
        await self.intake.close()
        await self.health.close()
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await self.queue.close(drain=True)
        except TimeoutError:
            log.warning("reconciles still running after %.0fs: cancelled", DRAIN_TIMEOUT)
            await self.queue.close(drain=False)
        self._cancel_timers()
        if self._ownership is not None:  # after the drain: leave the ring, release every lease
            await self._ownership.close()
        if self.pending is not None:  # after the drain: what it reconciled is deleted
            self.pending.close()
        if self._running:
            await self._stopped.wait()
        else:
            await self._client.aclose()

    async def _stop_resync(self) -> None:
        task = self._resync_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _cancel_timers(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


async def _quiet(task: asyncio.Task[None]) -> None:
    """Wait for ``task``; its cancellation (by ``close``) is no failure of the group."""
    await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        log.error("the startup sweep failed", exc_info=task.exception())
