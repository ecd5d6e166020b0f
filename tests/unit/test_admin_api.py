"""The admin API against a real orchestrator: the real network API (SQLite, served on this
loop as ``astara up`` serves it), the embedded bus, the fake provider, an in-test appliance.

Requests go to the real FastAPI app through httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from astara.bus.embedded import EmbeddedBus
from astara.cli.up import _served
from astara.network.server import build_app
from astara.orchestrator.admin import TOKEN_HEADER, create_admin_app
from astara.orchestrator.appliance_client import ApplianceUnreachable
from astara.orchestrator.control_store import ControlStore
from astara.orchestrator.neutron_reader import neutron_client, noauth_admin_headers
from astara.orchestrator.runner import Orchestrator, OrchestratorSettings
from astara.providers.base import Instance
from astara.providers.fake import FakeProvider
from astara.settings import NetworkSettings
from astara.wire.appliance_v1 import ConfigurationBody, Status

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

TOKEN = "s3cret-admin-token"
TENANT = "tenant-a"


@dataclass
class Appliance:
    """Every appliance: answering or silent; keeps the configurations pushed."""

    answering: bool = True
    configs: dict[str, ConfigurationBody] = field(default_factory=dict)
    #: when set, a push waits for it (a slow appliance), after setting ``pushing``
    gate: asyncio.Event | None = None
    pushing: asyncio.Event = field(default_factory=asyncio.Event)

    async def status(self, address: object) -> Status:
        if not self.answering:
            raise ApplianceUnreachable(f"{address}: connect timeout")
        return Status(v4=True, v6=False)

    async def get_config(self, address: object) -> ConfigurationBody | None:
        if not self.answering:
            raise ApplianceUnreachable(f"{address}: connect timeout")
        return self.configs.get(str(address))

    async def put_config(self, address: object, body: ConfigurationBody) -> ConfigurationBody:
        if self.gate is not None:
            self.pushing.set()
            await self.gate.wait()
        self.configs[str(address)] = body
        return body


@dataclass
class World:
    orchestrator: Orchestrator
    provider: FakeProvider
    appliance: Appliance
    network: httpx.AsyncClient
    admin: httpx.AsyncClient

    async def create_router(self, name: str) -> str:
        response = await self.network.post("/v2.0/routers", json={"router": {"name": name}})
        assert response.status_code == 201, response.text
        return str(response.json()["router"]["id"])

    async def router(self, router_id: str) -> dict[str, Any]:
        response = await self.admin.get(f"/v1/routers/{router_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _mac(_instance: Instance) -> str:
    return "fa:16:3e:00:00:01"


async def until(check: Callable[[], Any], what: str, timeout: float = 15.0) -> None:
    """Wait until ``await check()`` is true."""
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")  # pragma: no cover - timeout raises first


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    port = _free_port()
    bus = EmbeddedBus()
    settings = NetworkSettings(
        host="127.0.0.1", port=port, db_url=f"sqlite:///{tmp_path / 'network.db'}"
    )
    app, service = build_app(settings, bus=bus)
    url = f"http://127.0.0.1:{port}"
    provider = FakeProvider()
    appliance = Appliance()
    control = ControlStore(f"sqlite:///{tmp_path / 'orchestrator.db'}")
    orchestrator = Orchestrator(
        bus=bus,
        network_url=url,
        provider=provider,
        appliance=appliance,  # type: ignore[arg-type]
        settings=OrchestratorSettings(health_period=0.1, poll_delay=0.05, settle_delay=0.05),
        management_mac=_mac,
        control=control,
    )
    network = neutron_client(url=url, headers=noauth_admin_headers(project=TENANT))
    admin = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_admin_app(orchestrator.operations, TOKEN)),
        base_url="http://admin",
        headers={TOKEN_HEADER: TOKEN},
    )
    try:
        async with _served(app, "network-api", host="127.0.0.1", port=port):
            running = asyncio.create_task(orchestrator.run(), name="orchestrator")
            try:
                yield World(orchestrator, provider, appliance, network, admin)
            finally:
                await orchestrator.close()
                await running
    finally:
        await admin.aclose()
        await network.aclose()
        await bus.close()
        control.close()
        service.db.close()


async def _active(world: World, router_id: str) -> None:
    async def check() -> bool:
        response = await world.admin.get(f"/v1/routers/{router_id}")
        return response.status_code == 200 and response.json()["state"] == "ACTIVE"

    await until(check, f"router {router_id} ACTIVE")


async def test_every_v1_path_needs_the_token_and_metrics_do_not(world: World) -> None:
    bare = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_admin_app(world.orchestrator.operations, TOKEN)),
        base_url="http://admin",
    )
    async with bare:
        for method, path in [
            ("GET", "/v1/routers"),
            ("GET", "/v1/routers/x"),
            ("POST", "/v1/routers/x/rebuild"),
            ("PUT", "/v1/debug/resources/x"),
            ("DELETE", "/v1/debug/global"),
            ("GET", "/v1/debug"),
            ("POST", "/v1/poll"),
            ("GET", "/v1/workers"),
        ]:
            response = await bare.request(method, path, json={"reason": "r"})
            assert response.status_code == 401, (method, path)
            assert response.json()["error"]["code"] == 401
            assert TOKEN_HEADER in response.json()["error"]["message"]
            wrong = await bare.request(
                method, path, json={"reason": "r"}, headers={TOKEN_HEADER: TOKEN + "x"}
            )
            assert wrong.status_code == 401
        metrics = await bare.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "astara_reconcile_seconds_bucket" in metrics.text
    assert world.provider.calls.count(("destroy", "x")) == 0  # nothing was done unauthorised


async def test_a_new_router_is_shown_converged_with_its_history(world: World) -> None:
    created = time.time()
    router_id = await world.create_router("r1")
    await _active(world, router_id)
    view = await world.router(router_id)
    assert view["id"] == router_id
    assert view["tenant_id"] == TENANT
    assert view["status"] == "ACTIVE"
    assert view["failures"] == 0
    assert view["reason"] == ""
    assert view["debug"] is None
    instance = await world.provider.get(router_id=router_id)
    assert instance is not None
    assert view["appliance"] == {
        "name": instance.name,
        "management_address": str(instance.management_address),
    }
    events = [e["event"] for e in view["history"] if e["kind"] == "event"]
    assert events[0] == "router.create.end"
    # publishing the router's status is an update, which the intake hears too
    assert view["last_event"]["type"] == events[-1] == "router.update.end"
    assert isinstance(view["last_event"]["at"], float)
    assert isinstance(view["converge_ms"], float)
    assert view["converge_ms"] > 0
    kinds = [e["kind"] for e in view["history"]]
    assert kinds[0] == "event"
    assert "transition" in kinds
    last = [e for e in view["history"] if e["kind"] == "transition"][-1]
    assert last["to"] == "ACTIVE"
    assert last["ms"] >= 0
    assert set(last) == {"at", "kind", "event", "from", "to", "action", "reason", "ms"}
    # the convergence ran from the create event (or the startup sweep's enqueue, if that read
    # the new router first) to the first step that reached ACTIVE
    reached = next(e for e in view["history"] if e["kind"] == "transition" and e["to"] == "ACTIVE")
    since_event = (reached["at"] - view["history"][0]["at"]) * 1000
    since_create = (reached["at"] - created) * 1000
    assert since_event - 0.001 <= view["converge_ms"] <= since_create
    ats = [e["at"] for e in view["history"]]
    assert ats == sorted(ats)  # oldest first

    async def answering() -> bool:
        return (await world.router(router_id))["health"]["answering"] is True

    await until(answering, "a health probe")
    health = (await world.router(router_id))["health"]
    assert health["misses"] == 0
    assert abs(health["last_seen"] - view["last_event"]["at"]) < 60  # epoch seconds

    listing = (await world.admin.get("/v1/routers")).json()["routers"]
    assert [r["id"] for r in listing] == [router_id]
    assert "history" not in listing[0]
    assert listing[0]["state"] == "ACTIVE"

    metrics = (await world.admin.get("/metrics")).text
    assert 'astara_events_total{event_type="router.create.end"} 1.0' in metrics
    assert 'astara_routers{state="ACTIVE"} 1.0' in metrics
    assert 'astara_reconciles_total{action="CONFIGURE",outcome="ok"}' in metrics
    assert "astara_reconcile_seconds_count" in metrics


async def test_an_unknown_router_is_404(world: World) -> None:
    response = await world.admin.get("/v1/routers/nope")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": 404, "message": "router nope was never seen by this orchestrator"}
    }


async def test_rebuild_destroys_then_converges_again(world: World) -> None:
    router_id = await world.create_router("r1")
    await _active(world, router_id)
    before = await world.provider.get(router_id=router_id)
    response = await world.admin.post(f"/v1/routers/{router_id}/rebuild")
    assert response.status_code == 202
    assert response.json() == {"router_id": router_id, "queued": True}

    async def rebuilt() -> bool:
        history = (await world.router(router_id))["history"]
        marks = [
            i
            for i, e in enumerate(history)
            if e["kind"] == "rebuild" and e["reason"] == "forced rebuild: instance destroyed"
        ]
        # ACTIVE again by a transition after the rebuild (not the state before it)
        return bool(marks) and any(
            e["kind"] == "transition" and e["to"] == "ACTIVE" for e in history[marks[-1] + 1 :]
        )

    await until(rebuilt, "the rebuild")
    assert ("destroy", router_id) in world.provider.calls
    destroyed = world.provider.calls.index(("destroy", router_id))
    assert ("boot", router_id) in world.provider.calls[destroyed:]
    after = await world.provider.get(router_id=router_id)
    assert before is not None and after is not None
    assert after.booted_at is not None and before.booted_at is not None
    assert after.booted_at >= before.booted_at


async def test_a_router_in_debug_mode_is_held_until_managed(world: World) -> None:
    router_id = await world.create_router("r1")
    await _active(world, router_id)
    response = await world.admin.put(
        f"/v1/debug/resources/{router_id}", json={"reason": "looking at it"}
    )
    assert response.status_code == 200
    mode = response.json()
    assert mode["scope"] == "resource"
    assert mode["id"] == router_id
    assert mode["reason"] == "looking at it"
    assert isinstance(mode["since"], float)
    assert (await world.admin.get("/v1/debug")).json() == {"modes": [mode]}
    assert (await world.router(router_id))["debug"] == mode

    await world.admin.post(f"/v1/routers/{router_id}/rebuild")

    async def held() -> bool:
        return any(e["kind"] == "held" for e in (await world.router(router_id))["history"])

    await until(held, "a held reconcile")
    assert ("destroy", router_id) not in world.provider.calls
    assert "astara_events_held_total 1.0" in (await world.admin.get("/metrics")).text

    managed = await world.admin.delete(f"/v1/debug/resources/{router_id}")
    assert managed.status_code == 200
    assert managed.json() == {"managed": mode}
    # managing released it: the rebuild asked meanwhile happens now
    await until(lambda: _has(world, ("destroy", router_id)), "the rebuild after manage", timeout=10)
    again = await world.admin.delete(f"/v1/debug/resources/{router_id}")
    assert again.status_code == 404
    assert again.json()["error"]["code"] == 404
    assert (await world.admin.get("/v1/debug")).json() == {"modes": []}


async def _has(world: World, call: tuple[str, str]) -> bool:
    return call in world.provider.calls


async def test_tenant_and_global_modes(world: World) -> None:
    router_id = await world.create_router("r1")
    await _active(world, router_id)
    tenant = await world.admin.put(f"/v1/debug/tenants/{TENANT}", json={"reason": "maintenance"})
    assert tenant.status_code == 200
    assert tenant.json()["scope"] == "tenant"
    assert tenant.json()["id"] == TENANT
    assert (await world.router(router_id))["debug"] == tenant.json()
    everything = await world.admin.put("/v1/debug/global", json={"reason": "freeze"})
    assert everything.status_code == 200
    assert everything.json()["scope"] == "global"
    assert everything.json()["id"] == "*"
    modes = (await world.admin.get("/v1/debug")).json()["modes"]
    assert [(m["scope"], m["id"]) for m in modes] == [("tenant", TENANT), ("global", "*")]

    # a router never seen is held by the tenant mode too: its tenant is read first
    second = await world.create_router("r2")

    async def held() -> bool:
        response = await world.admin.get(f"/v1/routers/{second}")
        return response.status_code == 200 and any(
            e["kind"] == "held" for e in response.json()["history"]
        )

    await until(held, "the new router held")
    assert ("boot", second) not in world.provider.calls

    assert (await world.admin.delete("/v1/debug/global")).json()["managed"] == everything.json()
    managed = await world.admin.delete(f"/v1/debug/tenants/{TENANT}")
    assert managed.status_code == 200
    assert managed.json() == {"managed": tenant.json()}
    await _active(world, second)  # released: it is reconciled now
    missing = await world.admin.delete("/v1/debug/global")
    assert missing.status_code == 404


async def test_a_bad_debug_body_is_a_400(world: World) -> None:
    response = await world.admin.put("/v1/debug/resources/r", json={"why": "x"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400
    assert "reason" in response.json()["error"]["message"]
    assert (await world.admin.get("/v1/debug")).json() == {"modes": []}


async def test_poll_and_workers(world: World) -> None:
    first = await world.create_router("r1")
    await _active(world, first)
    # an instance the API does not know (its router was deleted behind our back)
    orphan = "0000aaaa-0000-4000-8000-000000000001"
    await world.provider.boot(router_id=orphan, ports=())
    response = await world.admin.post("/v1/poll")
    assert response.status_code == 202
    assert response.json() == {"queued": 2}

    async def orphan_destroyed() -> bool:
        return await world.provider.get(router_id=orphan) is None

    await until(orphan_destroyed, "the orphan destroyed")
    workers = (await world.admin.get("/v1/workers")).json()["workers"]
    assert len(workers) == 1
    worker = workers[0]
    assert worker["pid"] == os.getpid()
    assert (worker["shard"], worker["shards"]) == (0, 1)
    assert worker["concurrency"] == world.orchestrator.settings.concurrency
    assert isinstance(worker["running"], list)
    assert isinstance(worker["queued"], int)


async def test_health_misses_are_counted(world: World) -> None:
    router_id = await world.create_router("r1")
    await _active(world, router_id)
    world.appliance.answering = False

    async def missed() -> bool:
        view = await world.router(router_id)
        return bool(view["health"]["misses"] >= 1 and view["health"]["answering"] is False)

    await until(missed, "a missed probe")
    metrics = (await world.admin.get("/metrics")).text
    line = next(m for m in metrics.splitlines() if m.startswith("astara_health_misses_total "))
    assert float(line.split()[1]) >= 1.0


async def test_debug_returns_once_the_running_reconcile_of_the_router_ended(world: World) -> None:
    router_id = await world.create_router("r1")
    await _active(world, router_id)
    world.appliance.gate = asyncio.Event()
    world.appliance.configs.clear()  # the appliance lost its configuration: a push is due
    assert (await world.admin.post("/v1/poll")).json() == {"queued": 1}
    async with asyncio.timeout(10):
        await world.appliance.pushing.wait()
    workers = (await world.admin.get("/v1/workers")).json()["workers"]
    assert workers[0]["running"] == [router_id]
    put = asyncio.create_task(
        world.admin.put(f"/v1/debug/resources/{router_id}", json={"reason": "hold"})
    )
    await asyncio.sleep(0.3)
    assert not put.done()  # the reconcile in flight is waited for
    world.appliance.gate.set()
    response = await put
    returned = time.time()
    assert response.status_code == 200
    await asyncio.sleep(0.5)
    history = (await world.router(router_id))["history"]
    assert not [e for e in history if e["kind"] in ("transition", "failure") and e["at"] > returned]
    workers = (await world.admin.get("/v1/workers")).json()["workers"]
    assert router_id not in workers[0]["running"]
