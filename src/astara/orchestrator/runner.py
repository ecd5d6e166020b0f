"""The orchestrator, wired: intake, queue, reconciler, health and the startup sweep in one object.

``Orchestrator`` owns one pipeline::

    bus ──> Intake ──> ShardFilter ──> WorkQueue ──> RouterReconciler.reconcile
                                          ^   ^
            HealthMonitor (misses) ───────┘   └── requeue timers (loop.call_later)
            startup sweep (every router of the API, every instance of the provider)

Invariants:

- The intake subscribes before the startup sweep reads, so a change made
  while the sweep runs is either read by it or delivered as a notification.
- The startup sweep enqueues every router ``GET /v2.0/routers`` lists (as
  admin) and every instance ``provider.list()`` finds, so instances whose
  router is gone are reconciled too (and destroyed). Before that, every found
  instance is *adopted*: ``adopt`` (by default ``provider.boot`` with no
  ports, which is idempotent and re-registers the namespace with the agent)
  is called on it, so an appliance left running by a previous process is
  served again instead of being rebuilt. The sweep retries while the network
  API does not answer.
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
- ``run`` returns once ``close`` was called and every part has stopped; no
  task, timer or connection is left behind.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from astara.bus.base import Bus
from astara.domain.breaker import CircuitBreaker
from astara.orchestrator.appliance_client import Address, ApplianceClient
from astara.orchestrator.health import DEFAULT_PERIOD, HealthMonitor
from astara.orchestrator.intake import Intake
from astara.orchestrator.neutron_reader import (
    HttpNetworkReader,
    neutron_client,
    noauth_admin_headers,
)
from astara.orchestrator.queueing import DEFAULT_CONCURRENCY, ShardFilter, WorkQueue
from astara.orchestrator.reconcile import (
    DEFAULT_BOOT_TIMEOUT,
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
]

log = logging.getLogger(__name__)

SWEEP_RETRY = 1.0
"""Seconds between two tries of the startup sweep while the network API does not answer."""
MAX_SWEEP_RETRY = 10.0
"""The longest wait between two tries of the startup sweep."""
DRAIN_TIMEOUT = 10.0
"""Seconds ``close`` lets running reconciles finish before cancelling them."""


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
    with no ports).
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
    ) -> None:
        self.settings = settings or OrchestratorSettings()
        self._provider = provider
        self._management_mac = management_mac
        self._adopt = adopt
        self._client = neutron_client(
            url=network_url, headers=headers if headers is not None else noauth_admin_headers()
        )
        self._managements: dict[str, Management] = {}
        self._addresses: dict[str, Address] = {}
        self._timers: dict[ResourceKey, asyncio.TimerHandle] = {}
        self._closing = False
        self._stopped = asyncio.Event()
        self._running = False
        self._sweep_task: asyncio.Task[None] | None = None
        breaker: CircuitBreaker[ResourceKey] = CircuitBreaker(
            window_seconds=self.settings.breaker_window
        )
        self.reconciler = RouterReconciler(
            reader=HttpRouterReader(client=self._client),
            provider=provider,
            appliance=appliance,
            status_sink=HttpStatusSink(client=self._client),
            management=self.management,
            segments=HttpNetworkSegments(client=self._client),
            requeue=self._requeue,
            store=MemoryStateStore(),
            boot_timeout=self.settings.boot_timeout,
            breaker=breaker,
            poll_delay=self.settings.poll_delay,
            settle_delay=self.settings.settle_delay,
            orchestrator=self.settings.metadata,
        )
        self.queue = WorkQueue(reconcile=self._reconcile, concurrency=self.settings.concurrency)
        self._shard = ShardFilter(index=self.settings.shard_index, shards=self.settings.shards)
        self._enqueue = self._shard.wrap(self.queue.enqueue)
        self.intake = Intake(
            bus=bus, reader=HttpNetworkReader(client=self._client), enqueue=self._enqueue
        )
        self.health = HealthMonitor(
            client=appliance,
            targets=self._targets,
            enqueue=self._enqueue,
            breaker=breaker,
            period=self.settings.health_period,
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
        self._timers.pop(key, None)
        self._enqueue(key)

    # -- reconciling -------------------------------------------------------------------------
    async def _reconcile(self, key: ResourceKey) -> None:
        if key.kind is not ResourceKind.ROUTER:
            log.debug("no reconciler for %s", key)
            return
        await self._learn(key.id)
        try:
            await self.reconciler.reconcile(key)
        finally:
            await self._learn(key.id)

    async def _learn(self, router_id: str) -> None:
        """Refresh what is known of the router's instance (management, health target)."""
        try:
            instance = await self._provider.get(router_id=router_id)
            await self._remember(router_id, instance)
        except Exception as exc:  # noqa: BLE001 - the reconcile reads again and decides
            log.info("router %s: the instance could not be read: %s", router_id, exc)

    async def _remember(self, router_id: str, instance: Instance | None) -> None:
        address = instance.management_address if instance is not None else None
        mac = await self._management_mac(instance) if instance is not None else None
        if instance is None or address is None or mac is None:
            self._managements.pop(router_id, None)
            self._addresses.pop(router_id, None)
            return
        prefixlen = self.settings.management_prefixlen
        self._managements[router_id] = Management(
            mac=mac, address=ipaddress.ip_interface(f"{address}/{prefixlen}")
        )
        self._addresses[router_id] = address

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
        for instance in instances:
            try:
                if self._adopt is not None:
                    await self._adopt(instance)
                else:
                    await self._provider.boot(router_id=instance.router_id, ports=())
            except Exception as exc:  # noqa: BLE001 - the reconcile rebuilds what cannot be adopted
                log.warning("router %s: not adopted: %s", instance.router_id, exc)
            await self._remember(instance.router_id, instance)
        keys = {ResourceKey.router(r) for r in routers}
        keys |= {ResourceKey.router(i.router_id) for i in instances}
        log.info(
            "startup sweep: %d routers, %d instances adopted; %d keys enqueued",
            len(routers),
            len(instances),
            len(keys),
        )
        for key in sorted(keys, key=str):
            self._enqueue(key)

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
            self._sweep_task = asyncio.create_task(self._sweep(), name="startup-sweep")
            async with asyncio.TaskGroup() as group:
                group.create_task(self.queue.run(), name="work-queue")
                group.create_task(self.intake.run(), name="intake")
                group.create_task(self.health.run(), name="health")
                group.create_task(_quiet(self._sweep_task), name="sweep-waiter")
        finally:
            self._cancel_timers()
            if self._sweep_task is not None and not self._sweep_task.done():
                self._sweep_task.cancel()
                await asyncio.gather(self._sweep_task, return_exceptions=True)
            await self._client.aclose()
            self._stopped.set()

    async def close(self) -> None:
        """Stop every part: no new keys, running reconciles drained (then cancelled). Idempotent."""
        self._closing = True
        self._cancel_timers()
        if self._sweep_task is not None:
            self._sweep_task.cancel()
        await self.intake.close()
        await self.health.close()
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await self.queue.close(drain=True)
        except TimeoutError:
            log.warning("reconciles still running after %.0fs: cancelled", DRAIN_TIMEOUT)
            await self.queue.close(drain=False)
        self._cancel_timers()
        if self._running:
            await self._stopped.wait()
        else:
            await self._client.aclose()

    def _cancel_timers(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


async def _quiet(task: asyncio.Task[None]) -> None:
    """Wait for ``task``; its cancellation (by ``close``) is no failure of the group."""
    await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        log.error("the startup sweep failed", exc_info=task.exception())
