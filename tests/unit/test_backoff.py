"""Backoff delays (monotonic, capped, bounded jitter) and failure records (ERROR, still retried)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from astara.domain.backoff import Backoff, FailureRecord


def test_nominal_delays_double_up_to_the_cap() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=60.0, jitter=0.0)
    assert [backoff.nominal(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


@pytest.mark.parametrize(
    ("base", "factor", "cap"), [(1.0, 2.0, 300.0), (0.5, 1.5, 7.0), (3.0, 1.0, 9.0)]
)
def test_nominal_is_monotonic_and_capped(base: float, factor: float, cap: float) -> None:
    backoff = Backoff(base=base, factor=factor, cap=cap)
    delays = [backoff.nominal(n) for n in range(1, 200)]
    assert delays == sorted(delays)
    assert all(base <= d <= cap for d in delays)


def test_a_huge_attempt_number_neither_overflows_nor_passes_the_cap() -> None:
    backoff = Backoff(base=1.0, factor=10.0, cap=300.0)
    assert backoff.nominal(10**9) == 300.0


def test_jitter_only_shortens_and_stays_within_its_fraction() -> None:
    backoff = Backoff(base=1.0, cap=60.0, jitter=0.25, rng=random.Random(42))
    for attempt in range(1, 50):
        nominal = backoff.nominal(attempt)
        for _ in range(20):
            assert nominal * 0.75 <= backoff.delay(attempt) <= nominal <= 60.0


def test_a_seeded_rng_makes_delays_reproducible_and_jitter_spreads_them() -> None:
    first = [Backoff(jitter=0.1, rng=random.Random(7)).delay(n) for n in range(1, 10)]
    second = [Backoff(jitter=0.1, rng=random.Random(7)).delay(n) for n in range(1, 10)]
    assert first == second
    spread = {Backoff(jitter=0.1, rng=random.Random(seed)).delay(3) for seed in range(20)}
    assert len(spread) > 1


def test_no_jitter_is_exactly_nominal() -> None:
    backoff = Backoff(base=2.0, cap=100.0, jitter=0.0, rng=random.Random(0))
    assert [backoff.delay(n) for n in range(1, 8)] == [backoff.nominal(n) for n in range(1, 8)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": 0.0},
        {"base": 10.0, "cap": 5.0},
        {"factor": 0.5},
        {"jitter": 1.0},
        {"jitter": -0.1},
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        Backoff().nominal(0)


def test_error_after_max_failures_with_the_last_reason_and_still_a_retry() -> None:
    backoff = Backoff(base=1.0, cap=30.0, jitter=0.0)
    record = FailureRecord(max_failures=3)
    assert record.retry_delay(backoff) is None
    for n in range(1, 3):
        record = record.failed(f"boot timed out {n}")
        assert not record.in_error
        assert record.retry_delay(backoff) == backoff.nominal(n)
    record = record.failed("configure refused")
    assert record.in_error
    assert record.reason == "configure refused"
    delays = []
    for _ in range(10):
        record = record.failed("still failing")
        delay = record.retry_delay(backoff)
        assert record.in_error
        assert delay is not None
        delays.append(delay)
    assert delays == sorted(delays)
    assert delays[-1] == 30.0


def test_success_clears_the_record() -> None:
    record = FailureRecord(max_failures=1).failed("agent lost")
    assert record.in_error
    cleared = record.succeeded()
    assert (cleared.failures, cleared.reason, cleared.in_error) == (0, "", False)
    assert cleared.max_failures == 1
    assert record.failures == 1  # records are values: the old one is unchanged


@pytest.mark.parametrize("kwargs", [{"max_failures": 0}, {"failures": -1}])
def test_bad_records_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FailureRecord(**kwargs)
