"""The circuit breaker: trips when most of a large enough population looks dead, then recovers."""

from __future__ import annotations

from typing import Any

import pytest

from astara.domain.breaker import CircuitBreaker

WINDOW = 60.0


def _probe_all(breaker: CircuitBreaker[str], *, alive: int, dead: int, now: float) -> None:
    for n in range(alive):
        breaker.record(f"alive-{n}", alive=True, now=now)
    for n in range(dead):
        breaker.record(f"dead-{n}", alive=False, now=now)


def test_trips_when_more_than_half_of_ten_look_dead() -> None:
    breaker: CircuitBreaker[str] = CircuitBreaker(window_seconds=WINDOW)
    _probe_all(breaker, alive=4, dead=6, now=0.0)
    assert breaker.counts(0.0) == (6, 10)
    assert not breaker.allow_rebuild(0.0)


def test_exactly_half_dead_does_not_trip() -> None:
    breaker: CircuitBreaker[str] = CircuitBreaker(window_seconds=WINDOW)
    _probe_all(breaker, alive=5, dead=5, now=0.0)
    assert breaker.dead_fraction(0.0) == 0.5
    assert breaker.allow_rebuild(0.0)


def test_below_the_population_minimum_it_never_trips() -> None:
    breaker: CircuitBreaker[str] = CircuitBreaker(window_seconds=WINDOW)
    _probe_all(breaker, alive=0, dead=9, now=0.0)
    assert breaker.allow_rebuild(0.0)
    breaker.record("one-more", alive=False, now=0.0)
    assert not breaker.allow_rebuild(0.0)


def test_recovers_when_the_probes_come_back_alive() -> None:
    breaker: CircuitBreaker[str] = CircuitBreaker(window_seconds=WINDOW)
    _probe_all(breaker, alive=2, dead=10, now=0.0)
    assert not breaker.allow_rebuild(1.0)
    for n in range(5):
        breaker.record(f"dead-{n}", alive=True, now=2.0)
    assert breaker.counts(2.0) == (5, 12)
    assert breaker.allow_rebuild(2.0)


def test_old_results_leave_the_window() -> None:
    breaker: CircuitBreaker[str] = CircuitBreaker(window_seconds=WINDOW)
    _probe_all(breaker, alive=0, dead=11, now=0.0)
    _probe_all(breaker, alive=10, dead=0, now=30.0)
    assert not breaker.allow_rebuild(30.0)
    assert not breaker.allow_rebuild(WINDOW)  # a result exactly WINDOW old still counts
    assert breaker.counts(WINDOW + 1) == (0, 10)
    assert breaker.allow_rebuild(WINDOW + 1)


def test_each_resource_counts_once_with_its_latest_result() -> None:
    breaker: CircuitBreaker[str] = CircuitBreaker(window_seconds=WINDOW, min_population=2)
    for t in range(5):
        breaker.record("flappy", alive=False, now=float(t))
    breaker.record("steady", alive=True, now=0.0)
    assert breaker.counts(4.0) == (1, 2)
    breaker.record("flappy", alive=True, now=5.0)
    assert breaker.counts(5.0) == (0, 2)


def test_forgotten_resources_do_not_count() -> None:
    breaker: CircuitBreaker[str] = CircuitBreaker(window_seconds=WINDOW)
    _probe_all(breaker, alive=4, dead=6, now=0.0)
    breaker.forget("dead-0")
    breaker.forget("never-seen")
    assert breaker.counts(0.0) == (5, 9)
    assert breaker.allow_rebuild(0.0)


def test_threshold_and_population_are_configurable() -> None:
    breaker: CircuitBreaker[str] = CircuitBreaker(
        window_seconds=WINDOW, threshold_fraction=0.25, min_population=4
    )
    _probe_all(breaker, alive=3, dead=1, now=0.0)
    assert breaker.allow_rebuild(0.0)
    breaker.record("dead-1", alive=False, now=0.0)
    assert not breaker.allow_rebuild(0.0)


def test_empty_breaker_allows_and_reports_zero() -> None:
    breaker: CircuitBreaker[str] = CircuitBreaker(window_seconds=WINDOW)
    assert breaker.dead_fraction(0.0) == 0.0
    assert breaker.allow_rebuild(0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_seconds": 0.0},
        {"window_seconds": 1.0, "threshold_fraction": 0.0},
        {"window_seconds": 1.0, "threshold_fraction": 1.0},
        {"window_seconds": 1.0, "min_population": 0},
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)
