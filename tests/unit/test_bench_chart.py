"""bench.chart: the P1 distribution PNG, from a run's figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.chart import p1_chart, p1_samples

pytest.importorskip("matplotlib")  # the dev extra

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_chart_is_a_png(tmp_path: Path) -> None:
    samples = {"P1a": [150.0, 190.5, 205.0, 355.2], "P1b": [120.0, 131.0, 162.0]}
    path = p1_chart(samples, tmp_path / "run-p1.png", "P1, 2026-12-02, vm")
    assert path == tmp_path / "run-p1.png"
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_samples_come_from_the_p1a_and_p1b_figures() -> None:
    figures = [
        {"name": "P1a interface add -> traffic, p50", "samples_ms": [1.0, 2.0]},
        {"name": "P1a interface add -> traffic, p99", "samples_ms": []},
        {"name": "P1b floating IP associate -> traffic, p50", "samples_ms": [3.0]},
        {"name": "P1 both kinds -> traffic, p50", "samples_ms": [1.0, 2.0, 3.0]},
        {"name": "P2 new router -> first NATed packet, p99", "samples_ms": [500.0]},
    ]
    assert p1_samples(figures) == {"P1a": [1.0, 2.0], "P1b": [3.0]}


def test_no_p1_no_samples() -> None:
    assert p1_samples([{"name": "P8a first config", "value": 1.0}]) == {}
