"""Circuit breaker: no mass rebuilds when most appliances look dead at once.

What it owns: the latest probe result of each resource over a sliding
window, and the verdict ``allow_rebuild``. The health checker calls
``record`` for every probe (alive or not) and ``forget`` when a resource is
deleted; the reconciler asks ``allow_rebuild(now)`` and passes it to
``lifecycle.decide`` as ``Observation.rebuild_allowed``.

Why: appliances fail one at a time. When more than ``threshold_fraction`` of
them look dead at the same moment, the likelier cause is the probe itself
(the management network, the orchestrator's host, a firewall), and
rebuilding them all would turn a monitoring outage into a real one. The
breaker then holds every rebuild; boots of missing instances, configuration
and replugs go on.

Invariants:

- Only results younger than ``window_seconds`` count; each resource counts
  once, with its latest result.
- Below ``min_population`` counted resources the breaker never trips: with
  few appliances, "most are dead" is not evidence against the probe.
- It trips when dead / counted > ``threshold_fraction`` (strictly more), and
  closes again by itself as soon as the fraction is back at or under it:
  there is no latch to reset by hand.
- Pure: the clock is the caller's ``now`` (seconds, non-decreasing).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class _Probe:
    at: float
    alive: bool


class CircuitBreaker(Generic[K]):
    """Holds rebuilds while more than ``threshold_fraction`` of recent probes say dead.

    ``K`` is the resource key type (the orchestrator's ``ResourceKey``).
    """

    def __init__(
        self,
        *,
        window_seconds: float,
        threshold_fraction: float = 0.5,
        min_population: int = 10,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, not {window_seconds}")
        if not 0 < threshold_fraction < 1:
            raise ValueError(f"threshold_fraction must be in (0, 1), not {threshold_fraction}")
        if min_population < 1:
            raise ValueError(f"min_population must be at least 1, not {min_population}")
        self.window_seconds = window_seconds
        self.threshold_fraction = threshold_fraction
        self.min_population = min_population
        self._latest: dict[K, _Probe] = {}

    def record(self, resource: K, *, alive: bool, now: float) -> None:
        """Remember ``resource``'s probe result at ``now``, replacing any older one."""
        self._latest[resource] = _Probe(now, alive)

    def forget(self, resource: K) -> None:
        """Stop counting ``resource`` (deleted); unknown resources are ignored."""
        self._latest.pop(resource, None)

    def counts(self, now: float) -> tuple[int, int]:
        """(dead, counted) among the results inside the window ending at ``now``."""
        self._expire(now)
        dead = sum(1 for probe in self._latest.values() if not probe.alive)
        return dead, len(self._latest)

    def dead_fraction(self, now: float) -> float:
        """The fraction of counted resources whose latest probe said dead (0 if none)."""
        dead, counted = self.counts(now)
        return dead / counted if counted else 0.0

    def allow_rebuild(self, now: float) -> bool:
        """Whether a rebuild may go ahead at ``now``; false while the breaker is open."""
        dead, counted = self.counts(now)
        if counted < self.min_population:
            return True
        return dead <= self.threshold_fraction * counted

    def _expire(self, now: float) -> None:
        horizon = now - self.window_seconds
        stale = [key for key, probe in self._latest.items() if probe.at < horizon]
        for key in stale:
            del self._latest[key]
