"""Operating ``astara up``'s orchestrator: bursts coalesce, debug mode holds, manage resumes.

``astara up`` runs as in ``test_up`` (its helpers, its names), with the admin
API on a free port. A router with one interface is made ACTIVE; then:

- 100 updates of its extra routes within a second or so (four senders at
  once) converge to the last one with a handful of reconciles: the admin
  API's history of the router counts the reconcile steps taken after the
  burst began;
- ``astara resource debug`` holds the router: a change made meanwhile is not
  applied (and the history says the reconcile was held); ``astara resource
  manage`` resumes and the change is applied. The same for the tenant and for
  everything (``astara tenant debug``, ``astara global-debug``), and the
  debug modes survive a restart of ``astara up`` (they are persisted).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from astara.orchestrator.queueing import DEFAULT_COOLDOWN as COOLDOWN
from astara.providers.naming import name_candidates
from tests.component.conftest import connect
from tests.netns.test_up import ASTARA, NETNS_PREFIX, Up, _addresses, _astara_up, _free_port, _until

pytestmark = [pytest.mark.netns, pytest.mark.database]

BURST = 100
SENDERS = 4
#: reconcile steps a burst of BURST updates may cost at most, however slow the machine
HANDFUL = 12


class Admin:
    """The admin API of one ``astara up``, and the ``astara`` commands that talk to it."""

    def __init__(self, up: Up, port: int) -> None:
        self.up = up
        self.url = f"http://127.0.0.1:{port}"
        state_dir = Path(up.flags[up.flags.index("--state-dir") + 1])
        self.token = (state_dir / "admin-token").read_text().strip()
        self.env_flags = ["--admin-url", self.url, "--admin-token", self.token]

    def get(self, path: str) -> Any:
        response = httpx.get(self.url + path, headers={"X-Auth-Token": self.token}, timeout=10)
        response.raise_for_status()
        return response.json()

    def astara(self, *argv: str) -> str:
        done = subprocess.run(
            [*ASTARA, *argv, *self.env_flags],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, f"astara {' '.join(argv)}: {done.stdout}{done.stderr}"
        return done.stdout

    def history(self, router_id: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.get(f"/v1/routers/{router_id}")["history"]
        return entries


@pytest.fixture
def admin() -> Iterator[Admin]:
    port = _free_port()
    with _astara_up(extra=["--admin-port", str(port)]) as up:
        yield Admin(up, port)


def _routes(netns: str) -> set[str]:
    out = subprocess.run(
        ["ip", "-j", "-n", netns, "route", "show"], capture_output=True, text=True, check=False
    )
    return {r["dst"] for r in json.loads(out.stdout or "[]")} if out.returncode == 0 else set()


def _router(admin: Admin, cidr: str) -> tuple[Any, Any, str]:
    """A router with one interface on a new VXLAN network, ACTIVE; (sdk, router, namespace)."""
    sdk = connect(admin.up.url)
    network = sdk.network.create_network(
        name="net",
        provider_network_type="vxlan",
        provider_segmentation_id=100_000 + secrets.randbelow(16_000_000),
    )
    gateway = str(ipaddress.ip_network(cidr)[1])
    subnet = sdk.network.create_subnet(
        network_id=network.id, cidr=cidr, ip_version=4, gateway_ip=gateway
    )
    router = sdk.network.create_router(name="r-ops")
    sdk.network.add_interface_to_router(router, subnet=subnet.id)
    netns = name_candidates(NETNS_PREFIX, router.id)[0]
    _until("the router's address", lambda: gateway in _addresses(netns), 60, admin.up.log)
    _until(
        "router ACTIVE",
        lambda: sdk.network.get_router(router.id).status == "ACTIVE",
        60,
        admin.up.log,
    )
    return sdk, router, netns


def _steps_since(entries: list[dict[str, Any]], since: float) -> list[dict[str, Any]]:
    return [e for e in entries if e["kind"] in ("transition", "failure") and e["at"] >= since]


def test_a_burst_of_updates_converges_with_a_handful_of_reconciles(admin: Admin) -> None:
    sdk, router, netns = _router(admin, "10.81.0.0/24")

    def updates(first: int) -> None:
        client = connect(admin.up.url)  # one connection per sender: the burst is concurrent
        for i in range(first, BURST, SENDERS):
            route = {"destination": f"10.200.{i}.0/24", "nexthop": "10.81.0.254"}
            client.network.update_router(router.id, routes=[route])

    began = time.time()
    with ThreadPoolExecutor(SENDERS) as pool:
        list(pool.map(updates, range(SENDERS)))
    spent = time.time() - began
    final = sdk.network.get_router(router.id).routes
    assert len(final) == 1
    last = final[0]["destination"]
    _until("the last route in the appliance", lambda: last in _routes(netns), 30, admin.up.log)
    _until(
        "router ACTIVE",
        lambda: sdk.network.get_router(router.id).status == "ACTIVE",
        30,
        admin.up.log,
    )
    time.sleep(1.0)  # let any verifying look land before counting
    routes = {r for r in _routes(netns) if r.startswith("10.200.")}
    assert routes == {last}  # the final state only
    steps = _steps_since(admin.history(router.id), began)
    print(f"{BURST} updates in {spent:.2f}s -> {len(steps)} reconcile steps")
    for step in steps:
        print(
            f"  {step['at'] - began:7.3f}s {step['from']} -> {step['to']} {step['action']}"
            f" {step['ms']:.1f} ms"
        )
    # about one reconcile per cooldown of the burst (plus the first and the last), however
    # long this machine takes to accept the 100 updates
    assert 1 <= len(steps) <= min(HANDFUL, int(spent / COOLDOWN) + 3), steps


def test_debug_holds_a_router_and_manage_resumes_it(admin: Admin) -> None:
    sdk, router, netns = _router(admin, "10.82.0.0/24")

    # one resource
    admin.astara("resource", "debug", router.id, "--reason", "looking at it")
    shown = admin.get(f"/v1/routers/{router.id}")
    assert shown["debug"]["scope"] == "resource"
    assert shown["debug"]["reason"] == "looking at it"
    held_at = time.time()
    sdk.network.update_router(
        router, routes=[{"destination": "10.201.0.0/24", "nexthop": "10.82.0.254"}]
    )
    _until(
        "the held reconcile in the history",
        lambda: any(e["kind"] == "held" and e["at"] >= held_at for e in admin.history(router.id)),
        15,
        admin.up.log,
    )
    time.sleep(1.0)
    assert "10.201.0.0/24" not in _routes(netns)  # held: not applied
    assert not _steps_since(admin.history(router.id), held_at)
    admin.astara("resource", "manage", router.id)
    _until("the route after manage", lambda: "10.201.0.0/24" in _routes(netns), 15, admin.up.log)

    # the router's tenant, persisted across a restart of astara up
    tenant = admin.get(f"/v1/routers/{router.id}")["tenant_id"]
    assert tenant
    admin.astara("tenant", "debug", tenant, "--reason", "maintenance")
    admin.up.restart()
    modes = admin.get("/v1/debug")["modes"]
    assert [(m["scope"], m["id"]) for m in modes] == [("tenant", tenant)]
    sdk.network.update_router(
        router, routes=[{"destination": "10.202.0.0/24", "nexthop": "10.82.0.254"}]
    )
    time.sleep(2.0)
    assert "10.202.0.0/24" not in _routes(netns)
    admin.astara("tenant", "manage", tenant)
    _until(
        "the route after tenant manage", lambda: "10.202.0.0/24" in _routes(netns), 15, admin.up.log
    )

    # everything
    admin.astara("global-debug", "enable", "--reason", "upgrade")
    sdk.network.update_router(
        router, routes=[{"destination": "10.203.0.0/24", "nexthop": "10.82.0.254"}]
    )
    time.sleep(2.0)
    assert "10.203.0.0/24" not in _routes(netns)
    admin.astara("global-debug", "disable")
    _until(
        "the route after global manage", lambda: "10.203.0.0/24" in _routes(netns), 15, admin.up.log
    )
    assert sdk.network.get_router(router.id).status == "ACTIVE"

    # and the operator's views of it
    listed = admin.astara("router", "show", router.id, "--url", admin.up.url)
    assert "held" in listed
    assert router.id in admin.astara("router", "list", "--url", admin.up.url)
