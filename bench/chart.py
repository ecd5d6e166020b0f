"""The P1 latency distribution as a PNG: a CDF of the P1a and P1b samples, with the targets.

``bench.main`` calls ``p1_samples`` on a run's figures and, when P1 ran, ``p1_chart``
to write ``bench/results/<stem>-p1.png``. matplotlib (the ``dev`` extra) is imported
here only, with the Agg backend: no display is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: P1's targets, ms (bench.orchestrator.P1_TARGETS): the vertical lines
P1_TARGETS = (100.0, 300.0)
#: the figures whose samples are drawn, by the start of their name
P1_KINDS = {
    "P1a": "P1a interface add -> traffic",
    "P1b": "P1b floating IP associate -> traffic",
}


def p1_samples(figures: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    """The raw P1a and P1b samples (ms) of a run's figures (``Figure.as_dict()``), by kind.

    Empty when P1 did not run (no figure named ``P1a``/``P1b`` with ``samples_ms``).
    """
    found: dict[str, list[float]] = {}
    for figure in figures:
        name = str(figure.get("name", ""))
        for kind in P1_KINDS:
            if name.startswith(kind + " ") and figure.get("samples_ms"):
                found.setdefault(kind, []).extend(float(s) for s in figure["samples_ms"])
    return found


def p1_chart(
    samples: Mapping[str, Sequence[float]],
    path: Path,
    title: str,
    targets: Sequence[float] = P1_TARGETS,
) -> Path:
    """Write the CDF of each kind's samples (ms) to ``path`` (PNG), targets as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 4.5), dpi=100)
    try:
        for kind, values in samples.items():
            ordered = sorted(values)
            if not ordered:
                continue
            fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
            label = f"{P1_KINDS.get(kind, kind)} (n={len(ordered)})"
            axes.step(ordered, fractions, where="post", label=label)
        for target, style, name in zip(targets, ("--", ":"), ("p50", "p99"), strict=False):
            axes.axvline(target, color="black", linestyle=style, linewidth=1)
            axes.annotate(
                f"{name} target {target:g} ms",
                (target, 0.02),
                xytext=(4, 0),
                textcoords="offset points",
                rotation=90,
                va="bottom",
                fontsize=8,
            )
        axes.axhline(0.5, color="grey", linewidth=0.5)
        axes.axhline(0.99, color="grey", linewidth=0.5)
        axes.set_xlabel("API call -> traffic flows (ms)")
        axes.set_ylabel("fraction of trials (CDF)")
        axes.set_ylim(0, 1.02)
        axes.set_xlim(left=0)
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize=8)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png")
    finally:
        pyplot.close(figure)
    return path
