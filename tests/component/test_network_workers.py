"""``astara network-api --workers N``: several processes on one socket and one database.

A real command in a subprocess, on SQLite (writes from two processes: the
transaction takes the lock when it begins) and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.component.conftest import _free_port

WORKERS = 2


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@contextlib.contextmanager
def _network_api(
    db_url: str, workers: int = WORKERS
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    astara = str(Path(sys.executable).with_name("astara"))
    proc = subprocess.Popen(
        [astara, "network-api", "--port", str(port), "--db", db_url, "--workers", str(workers)],
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
                    pytest.fail(f"network-api did not start: {proc.stderr.read()!r}")  # type: ignore[union-attr]
                time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


async def _create_ports(url: str, network_id: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=httpx.Limits(max_connections=40)
    ) as client:
        return await asyncio.gather(
            *(
                client.post(
                    "/v2.0/ports", json={"port": {"network_id": network_id, "name": f"p{i}"}}
                )
                for i in range(count)
            )
        )


def test_workers_share_the_load_and_the_addresses(database_url: str) -> None:
    with _network_api(database_url) as (url, proc):
        workers = _children(proc.pid)
        assert len(workers) == WORKERS
        with httpx.Client(base_url=url, timeout=30) as client:
            net = client.post("/v2.0/networks", json={"network": {"name": "busy"}}).json()
            network_id = net["network"]["id"]
            client.post(
                "/v2.0/subnets",
                json={"subnet": {"network_id": network_id, "ip_version": 4, "cidr": "10.9.0.0/22"}},
            ).raise_for_status()
        answers = asyncio.run(_create_ports(url, network_id, 200))
        assert [a.status_code for a in answers] == [201] * 200, {
            a.status_code: a.text for a in answers
        }
        addresses = {a.json()["port"]["fixed_ips"][0]["ip_address"] for a in answers}
        assert len(addresses) == 200
        with httpx.Client(base_url=url, timeout=30) as client:
            listed = client.get("/v2.0/ports", params={"network_id": network_id}).json()["ports"]
        assert {p["fixed_ips"][0]["ip_address"] for p in listed} == addresses
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived the command"


def test_a_worker_that_dies_ends_the_command(database_url: str) -> None:
    with _network_api(database_url) as (_url, proc):
        workers = _children(proc.pid)
        os.kill(workers[0], signal.SIGKILL)
        assert proc.wait(timeout=30) == 1  # for its supervisor to start it again
        stderr = proc.stderr.read().decode()  # type: ignore[union-attr]
        assert f"network API worker {workers[0]} ended" in stderr
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists()
