"""Entry point of every benchmark: run them, then write the results file.

Results go to ``bench/results/<date>-<host>.md`` and ``.json``: each figure,
its target, pass/fail, and the machine it ran on, grouped by benchmark group
with an ID column (P1…P8; M and N for the memory and network-API figures),
and ``<stem>-p1.png`` (the P1 latency distribution) when P1 ran. A group that
raises is reported as that group's failure, with its error, and the other
groups still run (each cleans up after itself, whatever happens).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.appliance import run_appliance_benchmarks
from bench.chart import p1_chart, p1_samples
from bench.figure import Figure
from bench.ingest import run_ingest_benchmarks
from bench.network import run_network_benchmarks
from bench.orchestrator import run_orchestrator_benchmarks
from bench.ring import run_ring_benchmarks
from bench.scale import ROUTERS, run_scale_benchmarks
from bench.throughput import run_throughput_benchmarks

RESULTS = Path(__file__).parent / "results"

#: every group, in the order a full run runs them, with the title of its section
GROUPS = {
    "appliance": "Appliance (P8, memory)",
    "network": "Network API (N)",
    "orchestrator": "Orchestrator (P1, P2, P4)",
    "scale": "Scale (P3, P6)",
    "throughput": "Throughput (P7)",
    "ingest": "Ingest (P5)",
    "ring": "Several orchestrators (P5 takeover, ingest 1 vs 3)",
}
#: IDs of the figures whose name does not start with one (first matching prefix wins)
NAMED_IDS = (
    ("memory per extra appliance", "M1"),
    ("port create, sequential", "N1"),
    ("port create,", "N2"),
    ("list of ", "N3"),
)


def _runners(args: argparse.Namespace) -> dict[str, Callable[[], list[Figure]]]:
    return {
        "appliance": lambda: run_appliance_benchmarks(
            appliances=args.appliances, repeat=args.repeat
        ),
        "network": run_network_benchmarks,
        "orchestrator": run_orchestrator_benchmarks,
        # P3/P6: bench/scale.py's call site (its author's)
        "scale": lambda: run_scale_benchmarks(routers=args.routers),
        "throughput": lambda: run_throughput_benchmarks(seconds=args.seconds),
        "ingest": run_ingest_benchmarks,
        "ring": run_ring_benchmarks,
    }


@dataclass
class GroupRun:
    """What one group gave: its figures, or the error that ended it."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    traceback: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": "failed" if self.error else "ok",
            "seconds": round(self.seconds, 1),
            "error": self.error,
            "traceback": self.traceback,
        }


def run_group(name: str, runner: Callable[[], list[Figure]]) -> GroupRun:
    """Run one group; an exception is its failure (kept with the error), not the run's end."""
    print(f"bench: {name} group", file=sys.stderr)
    started = time.monotonic()
    done = GroupRun(name)
    try:
        done.figures = runner()
    except Exception as exc:  # noqa: BLE001 - reported in the results file; the rest still runs
        done.error = f"{type(exc).__name__}: {exc}"
        done.traceback = traceback.format_exc()
        print(f"bench: the {name} group failed:\n{done.traceback}", file=sys.stderr)
    done.seconds = time.monotonic() - started
    return done


def figure_id(name: str) -> str:
    """``P1a``… from the figure's name, else its ``NAMED_IDS`` entry, else ``-``."""
    found = re.match(r"P\d+[a-z]?\b", name)
    if found:
        return found.group(0)
    return next((fid for prefix, fid in NAMED_IDS if name.startswith(prefix)), "-")


def _machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            memory_kb = int(line.split()[1])
    return {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{memory_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _cell(text: str) -> str:
    """Text that stays in one markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _value(figure: Figure) -> str:
    number = f"{figure.value:.2f}" if abs(figure.value) < 10 else f"{figure.value:.1f}"
    return f"{number} {figure.unit}".rstrip()


def markdown(
    groups: list[GroupRun], machine: dict[str, str], when: str, chart: str | None = None
) -> str:
    """The results file: per group, its figures (or its failure), then the P1 chart."""
    lines = [
        f"# Benchmark results, {when}",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()),
    ]
    for group in groups:
        lines += ["", f"## {GROUPS.get(group.name, group.name)}", ""]
        if group.error is not None:
            lines += [
                f"**The group failed** after {group.seconds:.0f} s: `{_cell(group.error)[:1000]}`"
                " (traceback in the JSON). Its figures are missing from this run.",
            ]
            if not group.figures:
                continue
            lines.append("")
        lines += [
            f"Ran in {group.seconds:.0f} s.",
            "",
            "| ID | figure | measured | target | result | notes |",
            "|---|---|---|---|---|---|",
        ]
        for f in group.figures:
            verdict = "pass" if f.passed else "**missed**"
            lines.append(
                f"| {figure_id(f.name)} | {_cell(f.name)} | {_value(f)} | {f.target_text} "
                f"| {verdict} | {_cell(f.notes)} |"
            )
        if group.name == "orchestrator" and chart is not None:
            lines += ["", f"P1 latency distribution: [![P1 CDF]({chart})]({chart})"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description="Astara benchmarks")
    parser.add_argument(
        "--appliances", type=int, default=20, help="appliances for the memory figure"
    )
    parser.add_argument(
        "--repeat", type=int, default=20, help="repetitions of the incremental apply"
    )
    parser.add_argument(
        "--only",
        choices=list(GROUPS),
        help="run one group of figures (default: all); the results file holds what ran",
    )
    parser.add_argument(
        "--routers", type=int, default=ROUTERS, help=f"routers of the scale group ({ROUTERS})"
    )
    parser.add_argument(
        "--seconds", type=int, default=10, help="iperf3 -t of each throughput test (10)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (network namespaces)", file=sys.stderr)
        return 1
    runners = _runners(args)
    groups = [run_group(name, runners[name]) for name in GROUPS if args.only in (None, name)]
    figures = [f for g in groups for f in g.figures]
    machine = _machine()
    now = datetime.datetime.now(datetime.UTC)
    # a partial run gets its own file, so it never replaces a full run's figures
    stem = f"{now:%Y-%m-%d}-{machine['host']}" + (f"-{args.only}" if args.only else "")
    RESULTS.mkdir(exist_ok=True)
    dicts = [
        {"group": g.name, "id": figure_id(f.name), **f.as_dict()} for g in groups for f in g.figures
    ]
    chart: str | None = None
    samples = p1_samples(dicts)
    if samples:  # P1 ran
        try:
            title = f"P1 change -> traffic, {now:%Y-%m-%d %H:%M} UTC, {machine['host']}"
            chart = p1_chart(samples, RESULTS / f"{stem}-p1.png", title).name
        except Exception as exc:  # noqa: BLE001 - the figures are written even without it
            print(f"bench: no P1 chart: {exc}", file=sys.stderr)
    (RESULTS / f"{stem}.md").write_text(
        markdown(groups, machine, now.isoformat(timespec="seconds"), chart)
    )
    (RESULTS / f"{stem}.json").write_text(
        json.dumps(
            {
                "when": now.isoformat(),
                "machine": machine,
                "groups": [g.as_dict() for g in groups],
                "figures": dicts,
                "charts": [chart] if chart else [],
            },
            indent=2,
        )
    )
    print((RESULTS / f"{stem}.md").read_text())
    failed = any(g.error is not None for g in groups)
    return 0 if all(f.passed for f in figures) and not failed else 2


if __name__ == "__main__":
    sys.exit(main())
