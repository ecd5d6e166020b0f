"""Prometheus metrics of one orchestrator, on its own ``CollectorRegistry`` (never the global one).

- ``astara_events_total{event_type}``: notifications resolved by the intake;
- ``astara_reconciles_total{action,outcome}``: reconcile steps (``outcome``
  ``ok``, or ``failed`` when the step raised; ``action`` ``NONE`` when it
  failed before deciding);
- ``astara_reconcile_seconds``: the duration of each reconcile step;
- ``astara_routers{state}``: routers per lifecycle state (from the journal,
  computed when scraped);
- ``astara_health_misses_total``: health probes that got no valid answer;
- ``astara_events_held_total``: reconciles skipped because of a debug mode.

Fed by the journal's entries (``observe``), the intake (``event``) and the
health monitor (``health_miss``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from astara.orchestrator.journal import Entry

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _RouterStates(Collector):
    def __init__(self, states: Callable[[], Mapping[str, int]]) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("astara_routers", "Routers per lifecycle state", labels=["state"])
        for state, count in sorted(self._states().items()):
            gauge.add_metric([state], count)
        yield gauge


class Metrics:
    """The orchestrator's metrics; ``states`` counts routers per state when scraped."""

    def __init__(self, *, states: Callable[[], Mapping[str, int]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "astara_events",
            "Notifications resolved by the intake",
            ["event_type"],
            registry=self.registry,
        )
        self.reconciles = Counter(
            "astara_reconciles",
            "Reconcile steps, by action and outcome",
            ["action", "outcome"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "astara_reconcile_seconds",
            "Duration of one reconcile step",
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.health_misses = Counter(
            "astara_health_misses", "Health probes without a valid answer", registry=self.registry
        )
        self.events_held = Counter(
            "astara_events_held",
            "Reconciles skipped because the router is in debug mode",
            registry=self.registry,
        )
        self.registry.register(_RouterStates(states))

    def event(self, event_type: str) -> None:
        self.events.labels(event_type=event_type).inc()

    def health_miss(self, *_: object) -> None:
        self.health_misses.inc()

    def observe(self, router_id: str, entry: Entry) -> None:
        """A journal listener: counts steps, their durations and the held reconciles."""
        if entry.kind in ("transition", "failure"):
            outcome = "ok" if entry.kind == "transition" else "failed"
            self.reconciles.labels(action=entry.action or "NONE", outcome=outcome).inc()
            if entry.ms is not None:
                self.reconcile_seconds.observe(entry.ms / 1000.0)
        elif entry.kind == "held":
            self.events_held.inc()

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
