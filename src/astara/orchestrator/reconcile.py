"""The router reconciler: one level-based reconcile of one router, then yield.

``RouterReconciler.reconcile(key)`` is what ``WorkQueue`` calls. Each call:

1. reads the desired state from the network API (``RouterReader``: the
   router and its ports; ``RouterGone`` means deleted) and the observed
   state from the provider (``Provider.get``) and the appliance
   (``ApplianceAPI.status`` and, when healthy, ``get_config``) into a
   ``lifecycle.Observation``;
2. asks ``lifecycle.decide`` for the next state and the one action;
3. performs that action, idempotently (BOOT, WAIT, CONFIGURE, REPLUG,
   REBUILD, STOP, NOTHING);
4. stores the router's ``RouterState`` (lifecycle state, ``FailureRecord``,
   last published status) in a ``StateStore``, publishes the router status
   (``api_status``) through the ``StatusSink`` when it changed, and asks
   ``requeue(key, delay)`` for the next look when one is due.

Nothing here loops or sleeps: the next step is always a requeue. With a
``journal``, each step adds one entry: a *transition* (from the remembered
state to the decided one, the action, the reason, the step's duration
measured with ``time.perf_counter``) or a *failure*; the router's project is
recorded there when the router is read.

What the observation means:

- *wanted interfaces*: the MACs of the router's gateway port (when it has a
  gateway) and interface ports; *plugged*: the MACs of the instance's port
  NICs. The appliance matches its NICs by MAC, so MACs are what must agree.
- *agent answering*: ``get_config()`` got any answer. Only
  ``ApplianceUnreachable`` (no answer at all) is silence.
- *healthy*: ``get_config()`` returned a valid body (or none pushed yet).
  The reconcile does not ask ``status()``: its ``v4``/``v6`` flags (the
  upstream gateways answer) are false for a router without a gateway and
  during an upstream outage, which a rebuild cannot fix (and rebuilding every
  router of a broken uplink is the outage the breaker exists to prevent), and
  computing them may cost a ping. An agent that answers with an error (5xx, a
  refusal, a body that is not v1) is unhealthy: it is up but broken, and is
  rebuilt. The health monitor's periodic probe is ``status()``.
- *configuration applied*: the fingerprint (SHA-256 of the canonical JSON)
  of the appliance's ``GET`` configuration equals that of ``build_config``.
- *booted_at*: the instance's ``booted_at`` on the injected ``clock``
  (epoch seconds, like ``time.time``); an instance that does not know when it
  booted counts as booted long ago, so a silent one is rebuilt.

Failures: an exception from the reader, the provider, the appliance or the
sink during a reconcile, or a ``failure`` decision, is one more consecutive
failure in the router's ``FailureRecord``; the router is requeued after the
record's ``retry_delay`` (capped exponential backoff; a ``failure`` decision
whose action was BOOT, e.g. the appliance vanished, is looked at again on the
boot schedule instead, so a crashed appliance is back within moments) and, at
``max_failures``, is ERROR with the reason (``state_after_failure``), still
retried. Reaching ACTIVE or GONE clears the record. A failed action keeps
the state it was tried from; a ``failure`` decision whose action succeeded
moves on. A deleted router publishes no status (its row is gone) and is
dropped from the store once GONE.

Fencing (several orchestrators): before carrying out BOOT, CONFIGURE,
REPLUG, REBUILD or STOP the reconciler asks ``fence(router_id)``; False
(the router's lease is no longer this orchestrator's) raises ``LeaseLost``:
the action is not taken, nothing is stored, published or requeued.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, cast, get_args

import httpx

from astara.domain.backoff import Backoff, FailureRecord
from astara.domain.breaker import CircuitBreaker
from astara.domain.lifecycle import (
    Action,
    ApiStatus,
    Decision,
    Observation,
    State,
    api_status,
    decide,
    state_after_failure,
)
from astara.orchestrator.appliance_client import ApplianceUnreachable
from astara.orchestrator.concurrency import settled
from astara.orchestrator.journal import Journal
from astara.orchestrator.neutron_reader import (
    GATEWAY_OWNERS,
    INTERFACE_OWNERS,
    SUBNETS_PER_REQUEST,
    NetworkResponseError,
    NetworkUnavailableError,
    neutron_get,
)
from astara.orchestrator.resolution import ResourceKey
from astara.orchestrator.router_driver import IPAddress, Management, build_config
from astara.orchestrator.router_reader import (
    FloatingIPRecord,
    NetworkRecord,
    PortRecord,
    RouterGone,
    RouterReader,
    RouterRecord,
    SubnetRecord,
)
from astara.providers.base import Instance, PortSpec, Provider
from astara.wire.appliance_v1 import ConfigurationBody, Status

__all__ = [
    "DEFAULT_BOOT_TIMEOUT",
    "DEFAULT_MAX_FAILURES",
    "DEFAULT_POLL_DELAY",
    "DEFAULT_SETTLE_DELAY",
    "MIN_POLL_DELAY",
    "ApplianceAPI",
    "HttpNetworkSegments",
    "HttpStatusSink",
    "LeaseLost",
    "MemoryStateStore",
    "NetworkSegments",
    "RouterReconciler",
    "RouterState",
    "Segment",
    "StateStore",
    "StatusSink",
    "config_fingerprint",
    "ports_of",
]

log = logging.getLogger(__name__)

DEFAULT_BOOT_TIMEOUT = 300.0
"""Seconds an agent may stay silent after its instance booted."""
DEFAULT_MAX_FAILURES = 5
"""Consecutive failures after which a router is ERROR."""
DEFAULT_POLL_DELAY = 2.0
"""Seconds before looking again at a booting appliance (BOOT, WAIT)."""
DEFAULT_SETTLE_DELAY = 0.5
"""Seconds before looking again after a change that has not taken yet, or a STOP."""
MIN_POLL_DELAY = 0.02
"""The first look after a boot: an agent registered by the boot answers at once here."""

Address = ipaddress.IPv4Address | ipaddress.IPv6Address | str


class ApplianceAPI(Protocol):
    """The part of ``ApplianceClient`` the reconciler uses."""

    async def status(self, address: Address) -> Status: ...

    async def get_config(self, address: Address) -> ConfigurationBody | None: ...

    async def put_config(self, address: Address, body: ConfigurationBody) -> ConfigurationBody: ...


class StatusSink(Protocol):
    """Where a router's status goes (the network API); ``reason`` explains an ERROR."""

    async def __call__(self, router_id: str, status: ApiStatus, reason: str, /) -> None: ...


@dataclass(frozen=True, slots=True)
class Segment:
    """How a network leaves the host: Neutron's ``provider:*`` values and its MTU."""

    network_type: str = "local"
    segmentation_id: int | None = None
    physical_network: str | None = None
    mtu: int | None = None


class NetworkSegments(Protocol):
    """The segments of networks by id (admin view); networks not found are left out."""

    async def segments(self, *, network_ids: Collection[str]) -> Mapping[str, Segment]: ...


@dataclass(frozen=True, slots=True)
class RouterState:
    """What the reconciler remembers of one router between reconciles."""

    state: State = State.ABSENT
    failures: FailureRecord = field(default_factory=FailureRecord)
    published: ApiStatus | None = None
    """The status last published to the network API (None: not yet)."""


class StateStore(Protocol):
    """Per-router ``RouterState``; in memory now, persistent later (same interface)."""

    async def get(self, key: ResourceKey) -> RouterState | None: ...

    async def put(self, key: ResourceKey, state: RouterState) -> None: ...

    async def delete(self, key: ResourceKey) -> None: ...


class MemoryStateStore:
    """``StateStore`` in a dict: lost at restart, when every router starts ABSENT and adopts."""

    def __init__(self) -> None:
        self.states: dict[ResourceKey, RouterState] = {}

    async def get(self, key: ResourceKey) -> RouterState | None:
        return self.states.get(key)

    async def put(self, key: ResourceKey, state: RouterState) -> None:
        self.states[key] = state

    async def delete(self, key: ResourceKey) -> None:
        self.states.pop(key, None)


def config_fingerprint(body: ConfigurationBody) -> int:
    """A 64-bit fingerprint of ``body``'s canonical JSON (sorted keys): equal bodies, equal prints."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:8], "big")


def _peers_v6(body: ConfigurationBody) -> bool:
    """Whether the configuration's external network has an IPv6 subnet with a gateway."""
    return any(
        network.network_type == "external"
        and any(s.gateway_ip is not None and s.gateway_ip.version == 6 for s in network.subnets)
        for network in body.configuration.networks
    )


def router_ports(router: RouterRecord, ports: Sequence[PortRecord]) -> list[PortRecord]:
    """The ports the instance carries: the gateway (if the router has one) first, then the
    interfaces by (network, port id), the order ``build_config`` lists networks in."""
    gateway = [p for p in ports if p.device_owner in GATEWAY_OWNERS and router.gateway_network_id]
    interfaces = sorted(
        (p for p in ports if p.device_owner in INTERFACE_OWNERS),
        key=lambda p: (p.network_id, p.id),
    )
    return gateway[:1] + interfaces


def ports_of(ports: Sequence[PortRecord], segments: Mapping[str, Segment]) -> list[PortSpec]:
    """``PortSpec``s for Neutron ports, in order; a network without a segment is ``local``."""
    specs = []
    for port in ports:
        segment = segments.get(port.network_id, Segment())
        specs.append(
            PortSpec(
                port_id=port.id,
                network_id=port.network_id,
                network_type=segment.network_type,
                segmentation_id=segment.segmentation_id,
                mac=port.mac_address.lower(),
                mtu=segment.mtu or 1500,
                physical_network=segment.physical_network,
            )
        )
    return specs


@dataclass(frozen=True, slots=True)
class _Seen:
    """One reconcile's reads: the desired router (None if deleted) and the observed instance."""

    router: RouterRecord | None
    ports: tuple[PortRecord, ...]
    instance: Instance | None
    observation: Observation
    config: ConfigurationBody | None = None


class _StepReader:
    """A ``RouterReader`` that reads the router and its ports once per reconcile.

    The observation and the configuration it builds read the same router; one
    reconcile must see one version of it, and needs not pay for two reads.
    """

    def __init__(self, reader: RouterReader) -> None:
        self._reader = reader
        # the reads as futures: callers running at once (the observation and the build)
        # share one request
        self._routers: dict[str, asyncio.Future[RouterRecord]] = {}
        self._ports: dict[str, asyncio.Future[Sequence[PortRecord]]] = {}

    async def router(self, *, router_id: str) -> RouterRecord:
        if router_id not in self._routers:
            self._routers[router_id] = asyncio.ensure_future(
                self._reader.router(router_id=router_id)
            )
        return await asyncio.shield(self._routers[router_id])

    async def router_ports(self, *, router_id: str) -> Sequence[PortRecord]:
        if router_id not in self._ports:
            self._ports[router_id] = asyncio.ensure_future(
                self._reader.router_ports(router_id=router_id)
            )
        return await asyncio.shield(self._ports[router_id])

    async def close(self) -> None:
        """Wait for the reads still running (a caller that gave up left them)."""
        pending: list[asyncio.Future[Any]] = [*self._routers.values(), *self._ports.values()]
        await asyncio.gather(*pending, return_exceptions=True)

    async def subnets(self, *, subnet_ids: Collection[str]) -> Sequence[SubnetRecord]:
        return await self._reader.subnets(subnet_ids=subnet_ids)

    async def networks(self, *, network_ids: Collection[str]) -> Sequence[NetworkRecord]:
        return await self._reader.networks(network_ids=network_ids)

    async def ports_on_subnets(self, *, subnet_ids: Collection[str]) -> Sequence[PortRecord]:
        return await self._reader.ports_on_subnets(subnet_ids=subnet_ids)

    async def floating_ips(self, *, router_id: str) -> Sequence[FloatingIPRecord]:
        return await self._reader.floating_ips(router_id=router_id)


def _published_as_shown(remembered: RouterState, router: RouterRecord | None) -> RouterState:
    """A router whose status this orchestrator never published (it just started) takes the
    one the network API shows as published: a restart does not write every router's
    status again (a PUT, and a notification that brings the router back, each)."""
    if remembered.published is not None or router is None:
        return remembered
    shown = router.status
    if shown not in get_args(ApiStatus):
        return remembered
    return replace(remembered, published=cast(ApiStatus, shown))


class RouterReconciler:
    """Converges one router per ``reconcile`` call; see the module docstring."""

    def __init__(
        self,
        *,
        reader: RouterReader,
        provider: Provider,
        appliance: ApplianceAPI,
        status_sink: StatusSink,
        management: Callable[[str], Management],
        segments: NetworkSegments,
        requeue: Callable[[ResourceKey, float], None],
        store: StateStore | None = None,
        boot_timeout: float = DEFAULT_BOOT_TIMEOUT,
        backoff: Backoff | None = None,
        max_failures: int = DEFAULT_MAX_FAILURES,
        breaker: CircuitBreaker[ResourceKey] | None = None,
        clock: Callable[[], float] = time.time,
        poll_delay: float = DEFAULT_POLL_DELAY,
        settle_delay: float = DEFAULT_SETTLE_DELAY,
        orchestrator: tuple[IPAddress, int] | None = None,
        journal: Journal | None = None,
        asn: int | None = None,
        neighbor_asn: int | None = None,
        fence: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self._journal = journal
        #: asked before every action that changes something (several orchestrators: the
        #: router's lease is still this one's, ``ownership.Ownership.fence``); None: always
        self._fence = fence
        self._reader = reader
        #: a whole-view reader to look with instead of ``reader`` while it is set (the
        #: runner's startup sweep: ``SnapshotRouterReader``); None: read live
        self.snapshot: RouterReader | None = None
        self._provider = provider
        self._appliance = appliance
        self._sink = status_sink
        self._management = management
        self._segments = segments
        self._requeue = requeue
        self.store: StateStore = store if store is not None else MemoryStateStore()
        self._boot_timeout = boot_timeout
        self._backoff = backoff or Backoff()
        self._max_failures = max_failures
        self._breaker = breaker
        self._clock = clock
        self._poll_delay = poll_delay
        self._settle_delay = settle_delay
        self._orchestrator = orchestrator
        self._asn = asn
        self._neighbor_asn = neighbor_asn

    async def reconcile(self, key: ResourceKey) -> None:
        """One step for ``key``'s router (what ``WorkQueue`` calls)."""
        await self.step(key)

    async def step(self, key: ResourceKey) -> Decision | None:
        """One step for ``key``'s router; the decision taken, None if the reads failed."""
        started = time.perf_counter()
        remembered = await self.store.get(key) or RouterState(
            failures=FailureRecord(max_failures=self._max_failures)
        )
        decision: Decision | None = None
        deleted = False
        booted_at: float | None = None
        journal_from = remembered.state
        try:
            # one reconcile reads the router once
            reader = _StepReader(self.snapshot or self._reader)
            try:
                seen = await self._observe(key, remembered.state, reader)
            finally:
                await reader.close()
            deleted = seen.observation.deleted
            remembered = _published_as_shown(remembered, seen.router)
            if self._journal is not None and seen.router is not None:
                self._journal.tenant(key.id, seen.router.project_id)
            booted_at = seen.observation.booted_at if seen.instance is not None else None
            decision = decide(remembered.state, seen.observation, boot_timeout=self._boot_timeout)
            log.debug("router %s: %s", key.id, decision.reason)
            applied = await self._perform(key.id, decision.action, seen, reader)
            decision = self._confirmed(decision, seen, applied)
            if decision.action is Action.REPLUG and not decision.failure:
                replug = decision
                decision = await self._configure_replugged(key, remembered, replug, seen, started)
                if decision is not replug:
                    journal_from = replug.next_state
        except LeaseLost as exc:  # another orchestrator owns it now: nothing done, no retry
            log.warning("router %s: %s", key.id, exc)
            self._journal_step(key, journal_from, decision, started, str(exc))
            return decision
        except Exception as exc:  # noqa: BLE001 - every failure is retried on the backoff
            await self._failed(key, remembered, _reason(exc), deleted=deleted)
            self._journal_step(key, journal_from, decision, started, _reason(exc))
            return decision
        failure: str | None = None
        try:
            await self._succeeded(key, remembered, decision, deleted=deleted, booted_at=booted_at)
        except Exception as exc:  # noqa: BLE001 - the sink or the store failed: retried too
            moved = replace(remembered, state=decision.next_state)
            await self._failed(key, moved, _reason(exc), deleted=deleted)
            failure = _reason(exc)
        self._journal_step(key, journal_from, decision, started, failure)
        return decision

    async def _configure_replugged(
        self,
        key: ResourceKey,
        remembered: RouterState,
        replug: Decision,
        seen: _Seen,
        started: float,
    ) -> Decision:
        """After a REPLUG, the CONFIGURE it calls for, in the same look when nothing else is due.

        The configuration wanted was built by this look (NICs are matched by MAC, so it
        does not depend on them); only the instance is read again, and the table decides
        what follows the plug. One look instead of two for an interface added or removed,
        and no BUILD status for a router that keeps routing meanwhile.
        """
        if seen.config is None:
            return replug
        instance = await self._provider.get(router_id=key.id)
        if instance is None:
            return replug
        observation = replace(seen.observation, plugged_interfaces=instance.macs)
        after = replace(seen, instance=instance, observation=observation)
        follow = decide(replug.next_state, observation, boot_timeout=self._boot_timeout)
        if follow.action is not Action.CONFIGURE:
            return replug
        # the plug is its own journal entry; the step's entry is the CONFIGURE that follows
        self._journal_step(key, remembered.state, replug, started, None)
        log.debug("router %s: %s", key.id, follow.reason)
        applied = await self._perform(key.id, Action.CONFIGURE, after, _StepReader(self._reader))
        return self._confirmed(follow, after, applied)

    def _journal_step(
        self,
        key: ResourceKey,
        from_state: State,
        decision: Decision | None,
        started: float,
        failure: str | None,
    ) -> None:
        """One journal entry for the step: a transition, or a failure (with its reason)."""
        if self._journal is None:
            return
        ms = (time.perf_counter() - started) * 1000.0
        action = decision.action.value if decision is not None else None
        if failure is not None:
            self._journal.failure(
                key.id, from_state=from_state.value, reason=failure, ms=ms, action=action
            )
        elif decision is not None:
            self._journal.transition(
                key.id,
                from_state=from_state.value,
                to_state=decision.next_state.value,
                action=decision.action.value,
                reason=decision.reason,
                ms=ms,
            )

    # -- outcome ------------------------------------------------------------------------
    async def _succeeded(
        self,
        key: ResourceKey,
        remembered: RouterState,
        decision: Decision,
        *,
        deleted: bool,
        booted_at: float | None = None,
    ) -> None:
        """Keep the decided state; count a ``failure`` decision; requeue when due."""
        if decision.failure:
            log.warning("router %s: %s", key.id, decision.reason)
            record = remembered.failures.failed(decision.reason)
            state = state_after_failure(decision.next_state, in_error=record.in_error)
            await self._settle(key, remembered, state, record, deleted=deleted)
            retry = record.retry_delay(self._backoff) or self._settle_delay
            if decision.action is Action.BOOT:
                # the appliance vanished and was booted again: the failure is counted, but
                # the new instance is watched coming up on the boot schedule, not the backoff
                retry = min(retry, MIN_POLL_DELAY)
            self._requeue(key, retry)
            return
        record = remembered.failures
        if decision.next_state in (State.ACTIVE, State.GONE):
            record = record.succeeded()
        await self._settle(key, remembered, decision.next_state, record, deleted=deleted)
        delay = self._delay_after(
            decision.action,
            remembered.state,
            booted_at,
            converged=decision.next_state is State.ACTIVE,
        )
        if delay is not None:
            self._requeue(key, delay)

    async def _failed(
        self, key: ResourceKey, remembered: RouterState, reason: str, *, deleted: bool
    ) -> None:
        """Count one more failure, keep the state (ERROR at the limit), requeue on the backoff."""
        log.warning("router %s: reconcile failed: %s", key.id, reason)
        record = remembered.failures.failed(reason)
        state = state_after_failure(remembered.state, in_error=record.in_error)
        try:
            await self._settle(key, remembered, state, record, deleted=deleted)
        except Exception as exc:  # noqa: BLE001 - the sink is down too: retried below
            log.warning("router %s: state not kept or published: %s", key.id, _reason(exc))
        self._requeue(key, record.retry_delay(self._backoff) or self._settle_delay)

    def _delay_after(
        self, action: Action, previous: State, booted_at: float | None, *, converged: bool
    ) -> float | None:
        """When to look again after ``action`` succeeded (None: not until something happens).

        - NOTHING, or a CONFIGURE the appliance confirmed (ACTIVE): converged
          (or gone): never.
        - REBUILD, and the first REPLUG or CONFIGURE of a change: at once (0), since
          the next step is known and each look is a new turn of the queue,
          so the other routers are not held up. A REPLUG or CONFIGURE that
          follows another of the same kind (the appliance has not taken
          the change yet) waits ``settle_delay``: a router whose change never
          takes cannot spin.
        - BOOT, WAIT: the agent answers within milliseconds of a boot here and
          within a minute for a VM, so the looks follow the boot on a geometric
          schedule: half the time since the boot, between ``MIN_POLL_DELAY``
          and ``poll_delay``.
        - STOP: ``settle_delay``, to verify the instance is gone.
        """
        if action is Action.NOTHING:
            return None
        if action is Action.REBUILD:
            return 0.0
        if action is Action.REPLUG:
            return self._settle_delay if previous is State.REPLUGGING else 0.0
        if action is Action.CONFIGURE:
            if converged:
                return None  # the appliance confirmed it: nothing to verify
            return self._settle_delay if previous is State.CONFIGURING else 0.0
        if action in (Action.BOOT, Action.WAIT):
            if booted_at is None or action is Action.BOOT:
                return MIN_POLL_DELAY
            age = max(0.0, self._clock() - booted_at)
            return min(self._poll_delay, max(MIN_POLL_DELAY, age / 2))
        return self._settle_delay

    async def _settle(
        self,
        key: ResourceKey,
        remembered: RouterState,
        state: State,
        record: FailureRecord,
        *,
        deleted: bool,
    ) -> None:
        """Store the router's new state and publish its status if it changed."""
        if state is State.GONE:
            await self.store.delete(key)
            return
        published = remembered.published
        status = api_status(state)
        if not deleted and status != published:
            reason = record.reason if state is State.ERROR else ""
            await self._sink(key.id, status, reason)
            published = status
        await self.store.put(key, RouterState(state, record, published))

    # -- observe ------------------------------------------------------------------------
    async def _observe(self, key: ResourceKey, state: State, reader: RouterReader) -> _Seen:
        """The observation; the configuration wanted is built from the start, alongside the
        reads of the router, the instance and the appliance (it only counts, and only raises,
        when the appliance is healthy), and is never left running."""
        build = asyncio.ensure_future(self._build(key.id, reader))
        try:
            return await self._observe_with(key, state, reader, build)
        finally:
            if not build.done():
                build.cancel()
            await asyncio.gather(build, return_exceptions=True)

    async def _observe_with(
        self,
        key: ResourceKey,
        state: State,
        reader: RouterReader,
        build: asyncio.Future[ConfigurationBody],
    ) -> _Seen:
        now = self._clock()
        router_id = key.id
        desired, instance = await settled(
            self._desired(router_id, reader), self._provider.get(router_id=router_id)
        )
        router, ports = desired
        base = Observation(
            now=now,
            deleted=router is None,
            wanted_interfaces=frozenset(p.mac_address.lower() for p in ports),
            plugged_interfaces=instance.macs if instance else frozenset(),
            rebuild_allowed=self._breaker.allow_rebuild(now) if self._breaker else True,
        )
        if instance is None or router is None or state in (State.STOPPING, State.GONE):
            return _Seen(router, ports, instance, _present(base, instance))
        answering, healthy, applied = await self._probe(instance)
        observed = replace(_present(base, instance), agent_answering=answering, healthy=healthy)
        if not healthy:
            return _Seen(router, ports, instance, observed)
        wanted = await build
        observed = replace(
            observed,
            config_wanted=config_fingerprint(wanted),
            config_applied=None if applied is None else config_fingerprint(applied),
        )
        return _Seen(router, ports, instance, observed, wanted)

    async def _desired(
        self, router_id: str, reader: RouterReader
    ) -> tuple[RouterRecord | None, tuple[PortRecord, ...]]:
        """The router and the ports its instance carries; (None, ()) if it was deleted."""
        try:
            router, ports = await settled(
                reader.router(router_id=router_id), reader.router_ports(router_id=router_id)
            )
        except RouterGone:
            return None, ()
        return router, tuple(router_ports(router, ports))

    async def _probe(self, instance: Instance) -> tuple[bool, bool, ConfigurationBody | None]:
        """(agent answering, healthy, configuration applied) of ``instance``'s appliance.

        One ``GET /v1/system/config/``: an answer proves the agent alive and gives
        what it runs. (``/v1/status/`` would add nothing the reconcile uses, and
        it pings the upstream gateway when its neighbour entry is cold: up to a
        second per look where the upstream is slow or absent.)
        """
        if instance.management_address is None:
            return False, False, None
        try:
            applied = await self._appliance.get_config(instance.management_address)
        except ApplianceUnreachable:
            return False, False, None
        except Exception as exc:  # noqa: BLE001 - an agent answering with an error is unhealthy
            log.info("router %s: the agent answers but is unhealthy: %s", instance.router_id, exc)
            return True, False, None
        return True, True, applied

    async def _build(self, router_id: str, reader: RouterReader) -> ConfigurationBody:
        body = await build_config(
            router_id=router_id,
            reader=reader,
            management=self._management(router_id),
            orchestrator=self._orchestrator,
            asn=self._asn,
            neighbor_asn=self._neighbor_asn,
        )
        if body.configuration.asn is not None and not _peers_v6(body):
            # BGP peers with the external IPv6 gateway: a router without one speaks none
            # (the appliance would refuse the whole configuration)
            body = body.model_copy(
                update={
                    "configuration": body.configuration.model_copy(
                        update={"asn": None, "neighbor_asn": None}
                    )
                }
            )
        return body

    # -- act ----------------------------------------------------------------------------
    def _confirmed(
        self, decision: Decision, seen: _Seen, applied: ConfigurationBody | None
    ) -> Decision:
        """``decision``, or ACTIVE at once if it was a CONFIGURE the appliance confirmed.

        The appliance answers a PUT with the configuration it now runs; when that is
        the one wanted and nothing else differs, the router is converged and needs
        no verifying look (the next event or health miss brings the next one).
        """
        wanted = seen.observation.config_wanted
        if decision.action is not Action.CONFIGURE or applied is None or wanted is None:
            return decision
        if decision.failure or config_fingerprint(applied) != wanted:
            return decision
        after = decide(
            decision.next_state,
            replace(seen.observation, config_applied=wanted),
            boot_timeout=self._boot_timeout,
        )
        if after.action is not Action.NOTHING:
            return decision
        return Decision(
            after.next_state, Action.CONFIGURE, f"{decision.reason}; the appliance confirmed it"
        )

    async def _perform(
        self, router_id: str, action: Action, seen: _Seen, reader: RouterReader
    ) -> ConfigurationBody | None:
        """Perform ``action``; each is idempotent, so a repeat after a crash is harmless.

        Returns what the appliance answered a CONFIGURE with (None for the others).
        """
        if action in _FENCED and self._fence is not None and not await self._fence(router_id):
            raise LeaseLost(f"lease lost: {action.value} not taken")
        if action is Action.BOOT:
            await self._provider.boot(router_id=router_id, ports=await self._specs(seen.ports))
        elif action is Action.CONFIGURE:
            body = seen.config or await self._build(router_id, reader)
            if seen.instance is None:
                raise RuntimeError("CONFIGURE without an instance")
            return await self._appliance.put_config(_address(seen.instance), body)
        elif action is Action.REPLUG:
            await self._replug(router_id, seen)
        elif action in (Action.REBUILD, Action.STOP):
            await self._provider.destroy(router_id=router_id)
        # WAIT and NOTHING change nothing; the requeue (if any) is the caller's
        return None

    async def _replug(self, router_id: str, seen: _Seen) -> None:
        plugged = seen.instance.nics if seen.instance else ()
        have = {nic.mac for nic in plugged}
        wanted = {p.mac_address.lower() for p in seen.ports}
        for spec in await self._specs([p for p in seen.ports if p.mac_address.lower() not in have]):
            await self._provider.plug(router_id=router_id, port=spec)
        for nic in plugged:
            if nic.mac not in wanted and nic.port_id is not None:
                await self._provider.unplug(router_id=router_id, port_id=nic.port_id)

    async def _specs(self, ports: Sequence[PortRecord]) -> list[PortSpec]:
        if not ports:
            return []
        segments = await self._segments.segments(network_ids={p.network_id for p in ports})
        return ports_of(ports, segments)


class LeaseLost(Exception):  # noqa: N818 - a state, not a mistake
    """The router's lease is no longer this orchestrator's: the action was not taken."""


_FENCED = frozenset({Action.BOOT, Action.CONFIGURE, Action.REPLUG, Action.REBUILD, Action.STOP})
"""Actions taken only while the fence holds."""


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _present(base: Observation, instance: Instance | None) -> Observation:
    """``base`` with the instance's presence and boot time (unknown: long ago)."""
    if instance is None:
        return base
    booted = instance.booted_at.timestamp() if instance.booted_at is not None else 0.0
    return replace(base, instance_present=True, booted_at=booted)


def _address(instance: Instance) -> Address:
    if instance.management_address is None:
        raise RuntimeError(f"router {instance.router_id}'s instance has no management address")
    return instance.management_address


# -- the network API side ---------------------------------------------------------------


class HttpStatusSink:
    """``StatusSink`` over Neutron's API: ``PUT /v2.0/routers/{id}`` with the status, as admin.

    The client must carry admin credentials (``noauth_admin_headers()`` or an
    admin token). Neutron has no field for the reason: it is logged. A router
    deleted meanwhile (404) is not an error.

    A real Neutron has no place for the status Astara keeps: ``status`` is a
    read-only attribute of its routers, and a PUT of it is refused with 400
    ("Cannot update read-only attribute status"). The first 400 says so for
    every router: it is logged once, at INFO, and the sink writes nothing
    more (``writes_status`` turns False); the status stays readable through
    the orchestrator's admin API. Any other refusal is raised as before.
    """

    def __init__(self, *, client: httpx.AsyncClient) -> None:
        self._client = client
        self.writes_status = True
        """False once the network API refused a status write with 400: no more are tried."""

    async def __call__(self, router_id: str, status: ApiStatus, reason: str) -> None:
        path = f"/v2.0/routers/{router_id}"
        if reason:
            log.warning("router %s is %s: %s", router_id, status, reason)
        if not self.writes_status:
            return
        try:
            response = await self._client.put(path, json={"router": {"status": status}})
        except httpx.TransportError as exc:
            raise NetworkUnavailableError(f"PUT {path}: no answer: {exc!r}") from exc
        code = response.status_code
        if code == 404:
            return
        if code >= 500 or code == 429:
            raise NetworkUnavailableError(f"PUT {path}: the network API answered {code}")
        if code == 400:
            if self.writes_status:
                self.writes_status = False
                log.info(
                    "the network API keeps no router status (a PUT of it answered 400: %s):"
                    " router statuses are not written there; the orchestrator's admin API"
                    " shows them",
                    _neutron_message(response),
                )
            return
        if code != 200:
            raise NetworkResponseError(f"PUT {path}: answered {code}: {response.text[:200]}")


def _neutron_message(response: httpx.Response) -> str:
    """The ``NeutronError`` message of an error answer, else its first 200 characters."""
    try:
        message = response.json()["NeutronError"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
    return str(message)[:200]


class HttpNetworkSegments:
    """``NetworkSegments`` over Neutron's API: ``GET /v2.0/networks?id=...`` as admin.

    A network's segment is its ``provider:*`` attributes; a network of several
    segments (Neutron's ``segments`` list, without ``provider:*``) is taken by
    its first segment whose type the fabric knows. Without admin credentials
    Neutron shows neither: the network is ``local``.
    """

    def __init__(self, *, client: httpx.AsyncClient) -> None:
        self._client = client

    async def segments(self, *, network_ids: Collection[str]) -> Mapping[str, Segment]:
        wanted = sorted(set(network_ids))
        if not wanted:
            return {}
        found: dict[str, Segment] = {}
        for start in range(0, len(wanted), SUBNETS_PER_REQUEST):
            chunk = wanted[start : start + SUBNETS_PER_REQUEST]
            response = await neutron_get(
                self._client, "/v2.0/networks", tuple(("id", i) for i in chunk)
            )
            try:
                body = response.json()
            except ValueError as exc:
                raise NetworkResponseError("GET /v2.0/networks: the answer is not JSON") from exc
            networks = body.get("networks") if isinstance(body, dict) else None
            if not isinstance(networks, list):
                raise NetworkResponseError('GET /v2.0/networks: the answer has no "networks" list')
            found |= {
                n["id"]: _segment(n)
                for n in networks
                if isinstance(n, dict) and n.get("id") in wanted
            }
        return found


#: the segment types the fabric carries, as Neutron names them
_FABRIC_TYPES = ("flat", "vlan", "vxlan", "local")


def _segment(network: Mapping[str, Any]) -> Segment:
    mtu = network.get("mtu")
    provider: Mapping[str, Any] = network
    multi = network.get("segments")
    if not network.get("provider:network_type") and isinstance(multi, list) and multi:
        usable = [s for s in multi if isinstance(s, dict)]
        known = [s for s in usable if s.get("provider:network_type") in _FABRIC_TYPES]
        provider = (known or usable or [{}])[0]
    segmentation = provider.get("provider:segmentation_id")
    physnet = provider.get("provider:physical_network")
    return Segment(
        network_type=str(provider.get("provider:network_type") or "local"),
        segmentation_id=(
            segmentation
            if isinstance(segmentation, int) and not isinstance(segmentation, bool)
            else None
        ),
        physical_network=physnet if isinstance(physnet, str) and physnet else None,
        mtu=mtu if isinstance(mtu, int) and not isinstance(mtu, bool) else None,
    )
