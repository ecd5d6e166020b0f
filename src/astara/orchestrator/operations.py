"""Operating the orchestrator: what the admin API asks of one ``Orchestrator``.

``Operations`` joins the journal, the debug modes (``ControlStore``), the
metrics and the orchestrator's parts, and answers the admin API
(``admin.py``, which knows HTTP; this module does not):

- ``admit(key)``, called by ``Orchestrator._reconcile`` before each
  reconcile: a router held by a debug mode is not reconciled (a "held"
  journal entry, counted); a router marked by ``rebuild`` has its instance
  destroyed first (a "rebuild" entry), then the reconcile goes on and boots
  it again. Since this runs inside the queue's reconcile of that key, a
  rebuild never runs concurrently with another reconcile of the router. A
  failed destroy keeps the mark and looks again after ``REBUILD_RETRY``.
- ``set_debug`` returns once no reconcile of a router the new mode holds
  is running (a tenant's routers: those of that tenant or of a tenant not
  known yet), so nothing changes them after it returned.
- ``manage`` ends a mode and enqueues the routers it released (those it
  covered that no other mode still holds). A tenant's routers are the ones
  whose tenant the journal learnt.
- ``poll`` enqueues every router the journal knows, every instance of the
  provider and every router of the network API, as the startup sweep does.
- The views (``router_view``, ``routers_view``, ``workers``) are plain dicts
  in the shapes of docs/admin-api.md.

Writes to the control store run in a worker thread (a database write must
not hold up the event loop); everything else runs on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

from astara.orchestrator.control_store import ControlStore, DebugMode, check_scope
from astara.orchestrator.health import HealthState
from astara.orchestrator.journal import Journal
from astara.orchestrator.metrics import Metrics
from astara.orchestrator.reconcile import StateStore
from astara.orchestrator.resolution import ResourceKey, ResourceKind
from astara.orchestrator.router_reader import RouterReader
from astara.providers.base import Instance, Provider

__all__ = ["REBUILD_RETRY", "Operations", "noting"]

log = logging.getLogger(__name__)

REBUILD_RETRY = 2.0
"""Seconds before trying a forced rebuild again after its destroy failed."""
HOLD_WAIT = 30.0
"""The longest a new debug mode waits for the running reconciles of what it holds."""
HOLD_POLL = 0.02
"""Seconds between two looks at the running reconciles while a new mode waits."""


def noting(
    journal: Journal, enqueue: Callable[[ResourceKey], None]
) -> Callable[[ResourceKey], None]:
    """``enqueue`` that first tells the journal (a convergence starts at the first enqueue)."""

    def enqueue_noted(key: ResourceKey) -> None:
        if key.kind is ResourceKind.ROUTER:
            journal.enqueued(key.id)
        enqueue(key)

    return enqueue_noted


class Operations:
    """What the admin API asks of one orchestrator; see the module."""

    def __init__(
        self,
        *,
        journal: Journal,
        control: ControlStore | None,
        metrics: Metrics,
        store: StateStore,
        provider: Provider,
        health: Callable[[ResourceKey], HealthState | None],
        enqueue: Callable[[ResourceKey], None],
        keeps: Callable[[ResourceKey], bool],
        requeue: Callable[[ResourceKey, float], None],
        router_ids: Callable[[], Awaitable[list[str]]],
        reader: RouterReader,
        running: Callable[[], Collection[ResourceKey]],
        queued: Callable[[], int],
        shard: int,
        shards: int,
        concurrency: int,
    ) -> None:
        self.journal = journal
        self.control = control
        self.metrics = metrics
        self._store = store
        self._provider = provider
        self._health = health
        self._enqueue = enqueue
        self._keeps = keeps
        self._requeue = requeue
        self._router_ids = router_ids
        self._reader = reader
        self._running = running
        self._queued = queued
        self._shard = shard
        self._shards = shards
        self._concurrency = concurrency
        self._forced: set[str] = set()

    # -- the hooks ---------------------------------------------------------------------------
    def on_event(self, event_type: str, keys: Iterable[ResourceKey]) -> None:
        """The intake resolved a notification to ``keys``: counted, and journalled per router."""
        self.metrics.event(event_type)
        for key in keys:
            if key.kind is ResourceKind.ROUTER and self._keeps(key):
                self.journal.event(key.id, event_type)

    async def admit(self, key: ResourceKey) -> bool:
        """Whether to reconcile ``key`` now (False: held, or its forced destroy failed)."""
        router_id = key.id
        mode = await self._holding(router_id)
        if mode is not None:
            self.journal.held(router_id, f"debug mode ({mode.scope} {mode.id}): {mode.reason}")
            log.info("router %s held: %s mode %s: %s", router_id, mode.scope, mode.id, mode.reason)
            return False
        if router_id in self._forced:
            self._forced.discard(router_id)
            try:
                await self._provider.destroy(router_id=router_id)
            except Exception as exc:  # noqa: BLE001 - tried again after a pause
                self._forced.add(router_id)
                reason = f"forced rebuild: destroy failed: {type(exc).__name__}: {exc}"
                log.warning("router %s: %s", router_id, reason)
                self.journal.rebuild(router_id, reason)
                self._requeue(key, REBUILD_RETRY)
                return False
            log.info("router %s: instance destroyed for a forced rebuild", router_id)
            self.journal.rebuild(router_id, "forced rebuild: instance destroyed")
        return True

    async def _holding(self, router_id: str) -> DebugMode | None:
        if self.control is None:
            return None
        known = self.journal.get(router_id)
        tenant = known.tenant_id if known is not None else None
        if tenant is None and any(m.scope == "tenant" for m in self.control.modes()):
            try:
                tenant = (await self._reader.router(router_id=router_id)).project_id
            except Exception as exc:  # noqa: BLE001 - unknown tenant: only its own modes apply
                log.info("router %s: its tenant could not be read: %s", router_id, exc)
            self.journal.tenant(router_id, tenant)
        return self.control.is_held(router_id, tenant)

    # -- operations --------------------------------------------------------------------------
    def rebuild(self, router_id: str) -> None:
        """Mark the router forced and enqueue it: its next reconcile destroys, then reconciles."""
        self._forced.add(router_id)
        self.journal.rebuild(router_id, "forced rebuild asked")
        self._enqueue(ResourceKey.router(router_id))

    async def poll(self) -> int:
        """Enqueue every router known here, of the provider and of the API; how many this keeps."""
        ids = set(self.journal.routers())
        ids |= {i.router_id for i in await self._provider.list()}
        ids |= set(await self._router_ids())
        keys = sorted((ResourceKey.router(r) for r in ids), key=str)
        for key in keys:
            self._enqueue(key)
        return sum(1 for key in keys if self._keeps(key))

    def modes(self) -> list[DebugMode]:
        return self.control.modes() if self.control is not None else []

    def metrics_text(self) -> bytes:
        """The Prometheus exposition of this orchestrator's metrics."""
        return self.metrics.exposition()

    async def set_debug(self, scope: str, ident: str, reason: str) -> DebugMode:
        """Put (scope, id) in debug mode; ValueError for a bad scope, RuntimeError without store.

        Returns once no reconcile of a router the mode holds is running (or after
        ``HOLD_WAIT``): from then on, nothing changes them until they are managed.
        """
        check_scope(scope, ident)
        control = self._control()
        mode = await asyncio.to_thread(control.set_debug, scope, ident, reason)
        try:
            async with asyncio.timeout(HOLD_WAIT):
                while any(self._holds(mode, key) for key in self._running()):
                    await asyncio.sleep(HOLD_POLL)
        except TimeoutError:
            log.warning("%s %s: reconciles still running after %.0fs", scope, ident, HOLD_WAIT)
        return mode

    def _holds(self, mode: DebugMode, key: ResourceKey) -> bool:
        if key.kind is not ResourceKind.ROUTER:
            return False
        if mode.scope == "global":
            return True
        if mode.scope == "resource":
            return key.id == mode.id
        known = self.journal.get(key.id)
        return known is None or known.tenant_id in (None, mode.id)

    async def manage(self, scope: str, ident: str) -> DebugMode | None:
        """End a debug mode and enqueue what it released; None if there was no such mode."""
        checked, ident = check_scope(scope, ident)
        control = self._control()
        mode = await asyncio.to_thread(control.manage, checked, ident)
        if mode is None:
            return None
        if checked == "resource":
            covered = [ident]
        elif checked == "tenant":
            covered = [
                r
                for r in self.journal.routers()
                if (j := self.journal.get(r)) is not None and j.tenant_id == ident
            ]
        else:
            covered = self.journal.routers()
        for router_id in covered:
            known = self.journal.get(router_id)
            if control.is_held(router_id, known.tenant_id if known else None) is None:
                self._enqueue(ResourceKey.router(router_id))
        return mode

    def _control(self) -> ControlStore:
        if self.control is None:
            raise RuntimeError("this orchestrator has no control store: debug modes are off")
        return self.control

    # -- views -------------------------------------------------------------------------------
    def workers(self) -> list[dict[str, Any]]:
        """This process: its shard, concurrency, running routers and queue length."""
        return [
            {
                "pid": os.getpid(),
                "shard": self._shard,
                "shards": self._shards,
                "concurrency": self._concurrency,
                "running": sorted(k.id for k in self._running() if k.kind is ResourceKind.ROUTER),
                "queued": self._queued(),
            }
        ]

    async def known(self, router_id: str) -> bool:
        """Whether the orchestrator has seen the router (journal or state store)."""
        if self.journal.get(router_id) is not None:
            return True
        return await self._store.get(ResourceKey.router(router_id)) is not None

    async def routers_view(self) -> list[dict[str, Any]]:
        """Every router seen, sorted by id, as ``router`` objects (docs/admin-api.md)."""
        try:
            instances = {i.router_id: i for i in await self._provider.list()}
        except Exception as exc:  # noqa: BLE001 - the view shows no appliance then
            log.info("routers view: the provider could not list: %s", exc)
            instances = {}
        return [await self._view(r, instances.get(r)) for r in self.journal.routers()]

    async def router_view(self, router_id: str) -> dict[str, Any] | None:
        """One router with its history (oldest first); None if never seen."""
        if not await self.known(router_id):
            return None
        try:
            instance = await self._provider.get(router_id=router_id)
        except Exception as exc:  # noqa: BLE001 - the view shows no appliance then
            log.info("router %s: the provider could not answer: %s", router_id, exc)
            instance = None
        view = await self._view(router_id, instance)
        journal = self.journal.get(router_id)
        view["history"] = [e.as_dict() for e in journal.history] if journal is not None else []
        return view

    async def _view(self, router_id: str, instance: Instance | None) -> dict[str, Any]:
        key = ResourceKey.router(router_id)
        journal = self.journal.get(router_id)
        remembered = await self._store.get(key)
        tenant = journal.tenant_id if journal is not None else None
        if remembered is not None:
            state: str = remembered.state.value
        else:
            state = (journal.state if journal is not None else None) or "ABSENT"
        health = self._health(key)
        mode = self.control.is_held(router_id, tenant) if self.control is not None else None
        last_event = journal.last_event if journal is not None else None
        return {
            "id": router_id,
            "tenant_id": tenant,
            "state": state,
            "status": remembered.published if remembered is not None else None,
            "health": {
                "answering": health.answering if health is not None else None,
                "misses": health.misses if health is not None else 0,
                "last_seen": health.last_seen if health is not None else None,
            },
            "appliance": None
            if instance is None
            else {
                "name": instance.name,
                "management_address": None
                if instance.management_address is None
                else str(instance.management_address),
            },
            "last_event": None
            if last_event is None
            else {"type": last_event[0], "at": last_event[1]},
            "converge_ms": journal.converge_ms if journal is not None else None,
            "failures": remembered.failures.failures if remembered is not None else 0,
            "reason": remembered.failures.reason if remembered is not None else "",
            "debug": mode.as_dict() if mode is not None else None,
        }
