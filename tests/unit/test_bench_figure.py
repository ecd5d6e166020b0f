"""bench.figure.Figure: "at most" targets, and "at least" ones (higher_is_better)."""

from __future__ import annotations

from bench.figure import Figure
from bench.orchestrator import SampledFigure


def test_lower_is_better_by_default() -> None:
    figure = Figure("P8a", 628.9, "ms", 1000)
    assert figure.passed
    assert figure.target_text == "<= 1000 ms"
    assert not Figure("P8a", 1000.1, "ms", 1000).passed
    assert Figure("P8a", 1000, "ms", 1000).passed


def test_higher_is_better_passes_at_or_above_the_target() -> None:
    assert Figure("P7a", 0.95, "", 0.9, higher_is_better=True).passed
    assert Figure("P7a", 0.9, "", 0.9, higher_is_better=True).passed
    assert not Figure("P7a", 0.89, "", 0.9, higher_is_better=True).passed


def test_higher_is_better_target_text() -> None:
    assert Figure("P7a", 0.95, "", 0.9, higher_is_better=True).target_text == ">= 0.9"
    assert Figure("t", 9.0, "Gbit/s", 8, higher_is_better=True).target_text == ">= 8 Gbit/s"


def test_json_shape_unchanged_for_at_most_figures() -> None:
    assert Figure("P8a", 628.9, "ms", 1000, "one PUT").as_dict() == {
        "name": "P8a",
        "value": 628.9,
        "unit": "ms",
        "target": 1000,
        "passed": True,
        "notes": "one PUT",
    }


def test_json_says_higher_is_better() -> None:
    out = Figure("P7a", 0.8, "", 0.9, higher_is_better=True).as_dict()
    assert out["higher_is_better"] is True
    assert out["passed"] is False


def test_subclass_positional_fields_still_follow_notes() -> None:
    figure = SampledFigure("P1a", 120.0, "ms", 100, "n", [1.0, 2.0], [{"ms": 1.0}])
    assert figure.samples == [1.0, 2.0]
    assert not figure.higher_is_better
    assert figure.as_dict()["samples_ms"] == [1.0, 2.0]
