"""bench.main: a failing group is reported as such, the others' figures stay; figure IDs."""

from __future__ import annotations

from bench.figure import Figure
from bench.main import figure_id, markdown, run_group


def _boom() -> list[Figure]:
    raise RuntimeError("astara up exited (1)")


def test_a_failing_group_is_reported_and_the_next_runs() -> None:
    failed = run_group("scale", _boom)
    ok = run_group("throughput", lambda: [Figure("P7a x", 0.95, "", 0.9, higher_is_better=True)])
    assert failed.error == "RuntimeError: astara up exited (1)"
    assert failed.figures == []
    assert failed.as_dict()["status"] == "failed"
    assert ok.error is None
    text = markdown([failed, ok], {"host": "vm"}, "2026-12-02T00:00:00+00:00")
    assert "## Scale (P3, P6)" in text
    assert "**The group failed**" in text
    assert "RuntimeError: astara up exited (1)" in text
    assert "| P7a | P7a x | 0.95 | >= 0.9 | pass |" in text


def test_figure_ids() -> None:
    assert figure_id("P1a interface add -> traffic, p50") == "P1a"
    assert figure_id("P1 both kinds -> traffic, p99") == "P1"
    assert figure_id("P8b one floating-IP change on that router (median)") == "P8b"
    assert figure_id("memory per extra appliance (20 served by one agent)") == "M1"
    assert figure_id("port create, sequential, p99 (SQLite)") == "N1"
    assert figure_id("port create, 20 at once, p99 (SQLite)") == "N2"
    assert figure_id("list of 1000 ports with a filter, median (SQLite)") == "N3"


def test_chart_is_linked_under_the_orchestrator_group() -> None:
    group = run_group("orchestrator", lambda: [Figure("P1a x, p50", 196.0, "ms", 100)])
    text = markdown([group], {"host": "vm"}, "now", chart="2026-12-02-vm-p1.png")
    assert "(2026-12-02-vm-p1.png)" in text
    assert "| P1a | P1a x, p50 | 196.0 ms | <= 100 ms | **missed** |" in text
