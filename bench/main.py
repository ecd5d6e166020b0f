"""Entry point of every benchmark: run them, then write the results file.

Results go to ``bench/results/<date>-<host>.md`` and ``.json``: each figure,
its target, pass/fail, and the machine it ran on.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import sys
from pathlib import Path

from bench.appliance import run_appliance_benchmarks
from bench.figure import Figure
from bench.network import run_network_benchmarks
from bench.orchestrator import run_orchestrator_benchmarks

RESULTS = Path(__file__).parent / "results"


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


def _markdown(figures: list[Figure], machine: dict[str, str], when: str) -> str:
    lines = [
        f"# Benchmark results, {when}",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()),
        "",
        "| figure | measured | target | result | notes |",
        "|---|---|---|---|---|",
    ]
    for f in figures:
        verdict = "pass" if f.passed else "**missed**"
        lines.append(
            f"| {f.name} | {f.value:.1f} {f.unit} | {f.target_text} | {verdict} | {f.notes} |"
        )
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
        choices=["appliance", "network", "orchestrator"],
        help="run one group of figures (default: all); the results file holds what ran",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (network namespaces)", file=sys.stderr)
        return 1
    figures: list[Figure] = []
    if args.only in (None, "appliance"):
        figures += run_appliance_benchmarks(appliances=args.appliances, repeat=args.repeat)
    if args.only in (None, "network"):
        figures += run_network_benchmarks()
    if args.only in (None, "orchestrator"):
        figures += run_orchestrator_benchmarks()
    machine = _machine()
    now = datetime.datetime.now(datetime.UTC)
    # a partial run gets its own file, so it never replaces a full run's figures
    stem = f"{now:%Y-%m-%d}-{machine['host']}" + (f"-{args.only}" if args.only else "")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.md").write_text(
        _markdown(figures, machine, now.isoformat(timespec="seconds"))
    )
    (RESULTS / f"{stem}.json").write_text(
        json.dumps(
            {
                "when": now.isoformat(),
                "machine": machine,
                "figures": [f.as_dict() for f in figures],
            },
            indent=2,
        )
    )
    print((RESULTS / f"{stem}.md").read_text())
    return 0 if all(f.passed for f in figures) else 2


if __name__ == "__main__":
    sys.exit(main())
