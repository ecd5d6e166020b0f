"""Health: a cheap, periodic probe of every appliance, feeding the reconcile queue.

Every ``period`` seconds (jittered by ±``jitter`` of it, so many
orchestrators never probe in lockstep) one sweep asks every target
``GET /v1/status/`` through the client. An unhealthy appliance is not
repaired here: its key is handed to ``enqueue``, the same path as any event,
and the state machine decides (reading ``health(key)`` for its Observation).

Invariants:

- A *miss* is a probe that got no valid answer: unreachable, timed out
  (``probe_timeout``), refused, failed. An answer with ``v4``/``v6`` false is
  not a miss (the agent is up; its gateways are not); it is recorded in the
  state.
- Misses are consecutive: one answer resets them to 0.
- When a key's misses reach ``misses`` it is enqueued exactly once; it is
  enqueued again only after an answer ended that outage. ``notice_gone``
  (the provider saw the namespace or agent disappear) enqueues at once,
  resets the count and marks the outage reported: the probes' misses that
  follow do not enqueue it again until an answer ends the outage.
- Every miss is told to ``on_miss`` (if given; the metrics count them).
- Every probe result goes to the breaker (``record``: alive iff answered),
  stamped with ``clock()``.
- Targets are read afresh each sweep; a key no longer there is forgotten
  here and in the breaker. A key whose address changed starts afresh.
- Cheap: one long-lived task (the loop) and, per sweep, at most
  ``concurrency`` short-lived worker tasks pulling from the sweep's list; no
  task per appliance. Each sweep ends before the next sleep, so sweeps never
  overlap. ``close`` (or cancelling ``run``) leaves no task behind.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from astara.domain.breaker import CircuitBreaker
from astara.orchestrator.appliance_client import Address
from astara.orchestrator.resolution import ResourceKey
from astara.wire.appliance_v1 import Status

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MISSES",
    "DEFAULT_PERIOD",
    "HealthMonitor",
    "HealthState",
    "StatusProbe",
]

log = logging.getLogger(__name__)

DEFAULT_PERIOD = 2.0
"""Seconds between the end of one sweep and the start of the next, before jitter."""

DEFAULT_MISSES = 3
"""Consecutive misses that make an appliance unhealthy."""

DEFAULT_CONCURRENCY = 64
"""Probes in flight at once."""


class StatusProbe(Protocol):
    """What the monitor needs of ``ApplianceClient``."""

    async def status(self, address: Address) -> Status: ...


@dataclass(frozen=True, slots=True)
class HealthState:
    """One appliance's health as the state machine reads it.

    ``answering``: the latest probe got an answer. ``healthy``: answering and
    no ``notice_gone`` since. ``misses``: consecutive misses so far.
    ``last_seen``: ``clock()`` of the latest answer (None: never).
    ``v4``/``v6``: the latest answer's gateway reachability.
    """

    answering: bool
    healthy: bool
    misses: int
    last_seen: float | None
    last_error: str | None
    v4: bool | None
    v6: bool | None


@dataclass(slots=True)
class _Entry:
    address: Address
    misses: int = 0
    probed: bool = False
    gone: bool = False
    reported: bool = False
    last_seen: float | None = None
    last_error: str | None = None
    status: Status | None = None


class HealthMonitor:
    """Probes every target each period; see the module for the invariants."""

    def __init__(
        self,
        *,
        client: StatusProbe,
        targets: Callable[[], Mapping[ResourceKey, Address]],
        enqueue: Callable[[ResourceKey], None],
        breaker: CircuitBreaker[ResourceKey],
        period: float = DEFAULT_PERIOD,
        jitter: float = 0.2,
        misses: int = DEFAULT_MISSES,
        probe_timeout: float | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        on_miss: Callable[[ResourceKey], None] | None = None,
    ) -> None:
        if period <= 0:
            raise ValueError(f"period must be positive, not {period}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), not {jitter}")
        if misses < 1 or concurrency < 1:
            raise ValueError("misses and concurrency must be at least 1")
        self._client = client
        self._targets = targets
        self._enqueue = enqueue
        self._breaker = breaker
        self._period = period
        self._jitter = jitter
        self._threshold = misses
        self._probe_timeout = probe_timeout if probe_timeout is not None else period
        self._concurrency = concurrency
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._on_miss = on_miss
        self._entries: dict[ResourceKey, _Entry] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False

    # -- reading -------------------------------------------------------------------------
    def health(self, key: ResourceKey) -> HealthState | None:
        """``key``'s health, or None if it was never probed (or is not a target)."""
        entry = self._entries.get(key)
        if entry is None or not (entry.probed or entry.gone):
            return None
        answering = entry.probed and entry.misses == 0 and not entry.gone
        status = entry.status
        return HealthState(
            answering=answering,
            healthy=answering,
            misses=entry.misses,
            last_seen=entry.last_seen,
            last_error=entry.last_error,
            v4=status.v4 if status else None,
            v6=status.v6 if status else None,
        )

    def next_delay(self) -> float:
        """The pause before the next sweep: ``period`` ± ``jitter`` * ``period``."""
        spread = self._period * self._jitter
        return self._period + self._rng.uniform(-spread, spread)

    # -- events --------------------------------------------------------------------------
    def notice_gone(self, key: ResourceKey) -> None:
        """The provider saw ``key``'s namespace or agent disappear: enqueue it now."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.misses = 0
            entry.gone = True
            entry.reported = True  # this outage is reported; the next after an answer
            entry.status = None
            entry.last_error = "gone (provider notice)"
        self._report(key)

    # -- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        """Sweep, sleep, repeat, until ``close``; cancelling ``run`` stops it too."""
        if self._closed:
            return
        self._loop_task = asyncio.create_task(self._loop(), name="health-loop")
        try:
            await self._loop_task
        except asyncio.CancelledError:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            if not self._closed or _cancelling():
                raise
        finally:
            self._loop_task = None

    async def close(self) -> None:
        """Stop the loop (an ongoing sweep is abandoned) and wait until no task is left."""
        self._closed = True
        task = self._loop_task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        while not self._closed:
            await self.sweep()
            await self._sleep(self.next_delay())

    async def sweep(self) -> None:
        """Probe every current target once (at most ``concurrency`` at a time)."""
        targets = dict(self._targets())
        self._forget_others(targets)
        for key, address in targets.items():
            entry = self._entries.get(key)
            if entry is None or entry.address != address:
                self._entries[key] = _Entry(address)
        work = iter(list(targets.items()))
        workers = min(self._concurrency, len(targets))
        if workers:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(self._worker(work))
        await asyncio.sleep(0)  # yield even when there is nothing to probe

    async def _worker(self, work: Iterator[tuple[ResourceKey, Address]]) -> None:
        for key, address in work:
            await self._probe(key, address)

    async def _probe(self, key: ResourceKey, address: Address) -> None:
        try:
            async with asyncio.timeout(self._probe_timeout):
                status = await self._client.status(address)
        except Exception as exc:  # noqa: BLE001 - any failure is a miss, never a crash
            self._missed(key, address, f"{type(exc).__name__}: {exc}")
        else:
            self._answered(key, address, status)

    # -- bookkeeping ---------------------------------------------------------------------
    def _current(self, key: ResourceKey, address: Address) -> _Entry | None:
        entry = self._entries.get(key)
        return entry if entry is not None and entry.address == address else None

    def _answered(self, key: ResourceKey, address: Address, status: Status) -> None:
        entry = self._current(key, address)
        if entry is None:
            return
        now = self._clock()
        entry.probed, entry.gone, entry.reported = True, False, False
        entry.misses, entry.last_seen, entry.last_error = 0, now, None
        entry.status = status
        self._breaker.record(key, alive=True, now=now)

    def _missed(self, key: ResourceKey, address: Address, error: str) -> None:
        entry = self._current(key, address)
        if entry is None:
            return
        entry.probed = True
        entry.misses += 1
        entry.last_error = error
        self._breaker.record(key, alive=False, now=self._clock())
        if self._on_miss is not None:
            self._on_miss(key)
        log.debug("health: %s at %s missed (%d): %s", key, address, entry.misses, error)
        if entry.misses >= self._threshold and not entry.reported:
            entry.reported = True
            log.warning("health: %s at %s unhealthy after %d misses", key, address, entry.misses)
            self._report(key)

    def _report(self, key: ResourceKey) -> None:
        try:
            self._enqueue(key)
        except Exception:
            log.exception("health: enqueue of %s failed", key)

    def _forget_others(self, targets: Mapping[ResourceKey, Address]) -> None:
        for key in [k for k in self._entries if k not in targets]:
            del self._entries[key]
            self._breaker.forget(key)


def _cancelling() -> bool:
    """Whether the current task itself was asked to cancel (not just its child)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
