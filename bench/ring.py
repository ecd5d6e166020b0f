"""P5, several orchestrators (issue 6): takeover after a SIGKILL, and ingest with 1 vs 3.

- P5 takeover: three ``astara orchestrator --coordination redis://…``
  processes on one tooz ring, sharing one appliance agent and a PostgreSQL
  database, share ``routers`` routers (no ports: each an appliance with its
  management NIC, configured); a batch of 30 new routers is created and one
  orchestrator SIGKILLed while some of them boot on it. The figure is the time
  from the survivors' *detection* (the first of them logging the new members:
  tooz's membership timeout, 3 s) until every router has a live lease held by
  a survivor and is ACTIVE with its configuration saved by the agent.
  [<= 5 s] The machinery is ``tests/netns/test_ring.py``'s (``ring_lab``,
  ``kill_one``), so the bench measures exactly what the test checks.
- P5 ingest 1 vs 3: ``bench.ingest.measure_ingest`` with 1, then 3
  consumer processes of one queue, recording into one PostgreSQL database
  (as several orchestrators share): the ratio of the rates. [>= 2.5x]

Root, Redis (127.0.0.1:6379), RabbitMQ and PostgreSQL (``ASTARA_TEST_PG``)
needed; everything made is named for the run and removed after.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.figure import Figure
from bench.ingest import measure_ingest

ROUTERS = 300
TAKEOVER_TARGET = 5.0
SCALING_TARGET = 2.5
NOTIFICATIONS = 20_000


def measure_takeover(routers: int = ROUTERS) -> Figure:
    from tests.netns.test_ring import kill_one, ring_lab
    from tests.netns.test_up import _until

    with ring_lab() as lab:
        ids = lab.create(routers, "r")
        _until("routers ACTIVE", lambda: lab.active(ids), 60 + routers, lab.members[0].log)
        measured, every = kill_one(lab, ids, lab.members[0])
    return Figure(
        "P5 takeover after a SIGKILL (detection -> all owned and converged)",
        measured.takeover,
        "s",
        TAKEOVER_TARGET,
        notes=(
            f"3 orchestrators, {routers} routers + a batch of {len(every) - routers} created"
            f" right before the kill; the killed one held {measured.orphans}; detection"
            f" (tooz membership timeout 3 s, lease TTL 4 s) took {measured.detection:.2f} s"
            f" after the SIGKILL; every router leased by a survivor {measured.owned:.2f} s after"
            " detection, then all ACTIVE with their configuration saved"
        ),
    )


def measure_scaling(notifications: int = NOTIFICATIONS) -> Figure:
    from tests.conftest import scratch_database

    with scratch_database("postgresql", Path(tempfile.gettempdir()), "bench_ring") as url:
        one = measure_ingest(consumers=1, notifications=notifications, db_url=url)
    with scratch_database("postgresql", Path(tempfile.gettempdir()), "bench_ring") as url:
        three = measure_ingest(consumers=3, notifications=notifications, db_url=url)
    ratio = three.rate / one.rate if one.rate and three.lost == 0 and one.lost == 0 else 0.0
    return Figure(
        "P5 ingest, 3 orchestrators vs 1",
        ratio,
        "x",
        SCALING_TARGET,
        notes=(
            f"{notifications} notifications, competing consumers of one queue, pending rows in"
            f" one PostgreSQL database: 1 consumer {one.rate:.0f}/s ({one.lost} lost, the"
            f" machine's {os.cpu_count()} cores {one.cpu_busy:.0%} busy), 3 consumers"
            f" {three.rate:.0f}/s ({three.lost} lost, {three.cpu_busy:.0%} busy). The"
            " consumers, RabbitMQ and PostgreSQL share the cores: once they are full, more"
            " consumers cannot go faster, so on this machine the ratio is bounded by about"
            f" {min(1.0, three.cpu_busy) / max(one.cpu_busy, 0.01):.2f}x (the CPU the 3-consumer"
            " run could use over what the 1-consumer run used), whatever the design; each"
            " consumer is its own process, with its own connection"
        ),
        higher_is_better=True,
    )


def run_ring_benchmarks(routers: int = ROUTERS) -> list[Figure]:
    return [measure_takeover(routers), measure_scaling()]


if __name__ == "__main__":
    import sys

    count = int(sys.argv[1]) if len(sys.argv) > 1 else ROUTERS
    for figure in run_ring_benchmarks(count):
        print(f"{figure.name}: {figure.value:.2f} {figure.unit} ({figure.notes})")
