"""Network API benchmarks (issue step 2): port creation and a filtered list, at the client.

- port create, sequential: p50 and p99 [p99 <= 20 ms];
- port create, 20 clients at once: p50 and p99 per request [p99 <= 100 ms];
- list of 1,000 ports with a filter (``device_id``, one match) [<= 100 ms, median].

A real ``astara network-api`` process per database (SQLite, the embedded
default; PostgreSQL when it answers at 127.0.0.1:5432), driven over HTTP from
this process: httpx one request at a time, ``loadgen`` (raw keep-alive
sockets) for the concurrent figure, since httpx's async client was the
bottleneck there.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench import loadgen
from bench.figure import Figure

# What limits the concurrent figure, from profiles of the service (see bench/README.md).
C20_LIMIT = (
    "Limit: throughput and scheduling, not locks: each create costs ~1.2 ms of CPU in the "
    "service process (~0.5 ms of SQLAlchemy Core work in the port create path, decision 14; "
    "the rest HTTP, JSON and two notifications) on one core (the GIL), and PostgreSQL and the "
    "client share the same 2 cores, so 20 in flight queue for ~20 x 1.5 ms and the tail is the "
    "scheduling of threads and processes on a busy machine. Worker processes "
    "(network-api --workers, decision 11) help where cores are spare; on SQLite they contend "
    "for the one writer."
)
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SEQUENTIAL = 300
CONCURRENT = 600
CLIENTS = 20
PORTS = 1000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@contextlib.contextmanager
def _server(db_url: str, workers: int = 1) -> Iterator[str]:
    port = _free_port()
    astara = str(Path(sys.executable).with_name("astara"))
    proc = subprocess.Popen(
        [
            *(astara, "--log-level", "WARNING", "network-api", "--port", str(port)),
            *("--db", db_url, "--workers", str(workers)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"network-api did not start: {proc.stderr.read()!r}"
                    ) from None  # type: ignore[union-attr]
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def _postgres() -> Iterator[str | None]:
    import sqlalchemy

    name = f"astara_bench_{secrets.token_hex(4)}"
    admin = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    except sqlalchemy.exc.OperationalError:
        yield None
        return
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def _concurrent(url: str, network_id: str) -> list[float]:
    port = int(url.rsplit(":", 1)[1])
    result = loadgen.run(
        port,
        method="POST",
        path="/v2.0/ports",
        body=lambda i: {"port": {"network_id": network_id, "device_id": f"c-{i}"}},
        total=CONCURRENT,
        connections=CLIENTS,
    )
    refused = [s for s in result.statuses if s != 201]
    if refused:
        raise RuntimeError(f"{len(refused)} creates failed: statuses {sorted(set(refused))}")
    addresses = {b["port"]["fixed_ips"][0]["ip_address"] for b in result.bodies}
    if len(addresses) != CONCURRENT:
        raise RuntimeError("concurrent creates got duplicate addresses")
    return result.latencies_ms


def _measure(url: str, label: str) -> list[Figure]:
    with httpx.Client(base_url=url, timeout=60) as client:
        net = client.post("/v2.0/networks", json={"network": {"name": "bench"}}).json()["network"]
        client.post(
            "/v2.0/subnets",
            json={"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.64.0.0/20"}},
        ).raise_for_status()
        for _ in range(10):  # warm up connections, caches and the query planner
            client.post(
                "/v2.0/ports", json={"port": {"network_id": net["id"], "device_id": "warm"}}
            ).raise_for_status()
        sequential = []
        for i in range(SEQUENTIAL):
            start = time.perf_counter()
            client.post(
                "/v2.0/ports", json={"port": {"network_id": net["id"], "device_id": f"s-{i}"}}
            ).raise_for_status()
            sequential.append((time.perf_counter() - start) * 1000)
        concurrent = _concurrent(url, net["id"])
        total = 10 + SEQUENTIAL + CONCURRENT
        for i in range(PORTS - total):
            client.post(
                "/v2.0/ports", json={"port": {"network_id": net["id"], "device_id": f"f-{i}"}}
            ).raise_for_status()
        listed = []
        for _ in range(20):
            start = time.perf_counter()
            ports = client.get("/v2.0/ports", params={"device_id": "s-7"}).json()["ports"]
            listed.append((time.perf_counter() - start) * 1000)
            assert len(ports) == 1
        count = len(client.get("/v2.0/ports", params={"fields": "id"}).json()["ports"])
    p50 = statistics.median
    return [
        Figure(
            f"port create, sequential, p99 ({label})",
            _percentile(sequential, 0.99),
            "ms",
            20,
            f"{SEQUENTIAL} creates one after another; p50 {p50(sequential):.1f} ms, max {max(sequential):.1f} ms",
        ),
        _concurrent_figure(concurrent, label),
        Figure(
            f"list of {count} ports with a filter, median ({label})",
            p50(listed),
            "ms",
            100,
            f"GET /v2.0/ports?device_id=… (one match), 20 times; max {max(listed):.1f} ms",
        ),
    ]


def _concurrent_figure(samples: list[float], label: str) -> Figure:
    figure = Figure(
        f"port create, {CLIENTS} at once, p99 ({label})",
        _percentile(samples, 0.99),
        "ms",
        100,
        f"{CONCURRENT} creates, {CLIENTS} in flight; p50 {statistics.median(samples):.1f} ms,"
        f" max {max(samples):.1f} ms",
    )
    if not figure.passed:
        figure.notes += ". " + C20_LIMIT
    return figure


def _concurrent_only(url: str, label: str) -> Figure:
    with httpx.Client(base_url=url, timeout=60) as client:
        net = client.post("/v2.0/networks", json={"network": {"name": "bench"}}).json()["network"]
        client.post(
            "/v2.0/subnets",
            json={"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.64.0.0/20"}},
        ).raise_for_status()
        for _ in range(10):
            client.post(
                "/v2.0/ports", json={"port": {"network_id": net["id"], "device_id": "warm"}}
            ).raise_for_status()
    return _concurrent_figure(_concurrent(url, net["id"]), label)


def run_network_benchmarks() -> list[Figure]:
    figures: list[Figure] = []
    with (
        tempfile.TemporaryDirectory(prefix="astara-bench-") as scratch,
        _server(f"sqlite:///{scratch}/network.db") as url,
    ):
        figures += _measure(url, "SQLite")
    with _postgres() as pg_url:
        if pg_url is None:
            print(
                "bench: PostgreSQL not reachable at 127.0.0.1:5432; its figures are left out",
                file=sys.stderr,
            )
        else:
            with _server(pg_url) as url:
                figures += _measure(url, "PostgreSQL")
    with _postgres() as pg_url:
        if pg_url is not None:
            with _server(pg_url, workers=2) as url:
                figures.append(_concurrent_only(url, "PostgreSQL, 2 workers"))
    return figures
