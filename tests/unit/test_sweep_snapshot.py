"""The startup sweep's whole-view read: used only while it is as fresh as a live read.

The reader's answers are checked against the live reader on the real network API in
tests/component/test_router_driver.py; here, when the orchestrator uses it and drops it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from astara.bus.embedded import EmbeddedBus
from astara.orchestrator import runner
from astara.orchestrator.appliance_client import ApplianceClient
from astara.orchestrator.resolution import ResourceKey
from astara.orchestrator.router_reader import HttpRouterReader, RouterRecord, SnapshotRouterReader
from astara.orchestrator.runner import Orchestrator
from astara.providers.base import Instance
from astara.providers.fake import FakeProvider

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

ROUTER = "00000000-0000-0000-0000-0000000000b1"
KEY = ResourceKey.router(ROUTER)


async def _mac(_instance: Instance) -> str:
    return "fa:16:3e:00:00:01"


def _view() -> SnapshotRouterReader:
    router = RouterRecord(id=ROUTER, name="r", project_id="p", gateway_network_id=None, routes=())
    return SnapshotRouterReader(
        routers=[router], ports=[], subnets=[], networks=[], floating_ips=[]
    )


@pytest.fixture
async def orchestrator() -> AsyncIterator[Orchestrator]:
    appliance = ApplianceClient(token="unused")
    made = Orchestrator(
        bus=EmbeddedBus(),
        network_url="http://127.0.0.1:9",  # never asked: the whole-view read is stubbed
        provider=FakeProvider(),
        appliance=appliance,
        management_mac=_mac,
    )
    try:
        yield made
    finally:
        await made.close()
        await appliance.aclose()


def _reading(monkeypatch: pytest.MonkeyPatch, during: Callable[[], None] = lambda: None) -> None:
    async def snapshot(_self: HttpRouterReader) -> SnapshotRouterReader:
        during()
        return _view()

    monkeypatch.setattr(HttpRouterReader, "snapshot", snapshot)


async def test_it_serves_until_the_first_notification(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _reading(monkeypatch)
    await orchestrator._take_snapshot()
    assert isinstance(orchestrator.reconciler.snapshot, SnapshotRouterReader)
    orchestrator._on_event("router.update.end", frozenset({KEY}))
    assert orchestrator.reconciler.snapshot is None


async def test_a_notification_during_the_read_discards_it(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _reading(monkeypatch, lambda: orchestrator._on_event("port.create.end", frozenset()))
    await orchestrator._take_snapshot()
    assert orchestrator.reconciler.snapshot is None


async def test_a_resync_drops_it(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _reading(monkeypatch)
    await orchestrator._take_snapshot()
    orchestrator._closing = True  # the resync itself is not what is tested: no task
    orchestrator._resync()
    assert orchestrator.reconciler.snapshot is None


async def test_it_expires(orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch) -> None:
    _reading(monkeypatch)
    monkeypatch.setattr(runner, "SNAPSHOT_TTL", 0.05)
    await orchestrator._take_snapshot()
    assert orchestrator.reconciler.snapshot is not None
    await asyncio.sleep(0.1)
    assert orchestrator.reconciler.snapshot is None


async def test_a_failed_read_leaves_live_reads(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail() -> None:
        raise OSError("connection refused")

    _reading(monkeypatch, fail)
    await orchestrator._take_snapshot()
    assert orchestrator.reconciler.snapshot is None


async def test_a_reconcile_looks_through_it(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _reading(monkeypatch)
    await orchestrator._take_snapshot()
    # the network API at 127.0.0.1:9 answers nothing: a look that completes read the view
    decision = await orchestrator.reconciler.step(KEY)
    assert decision is not None, "the look read the network live"


async def test_the_sweep_enqueues_each_router_once_its_instance_is_adopted(
    orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _reading(monkeypatch)
    provider = orchestrator._provider
    assert isinstance(provider, FakeProvider)
    adopted = "00000000-0000-0000-0000-0000000000c1"
    await provider.boot(router_id=adopted, ports=())
    order: list[str] = []

    async def router_ids() -> list[str]:
        return [ROUTER, adopted]

    async def adopt(instance: Instance) -> None:
        order.append(f"adopt {instance.router_id}")

    monkeypatch.setattr(orchestrator, "_router_ids", router_ids)
    monkeypatch.setattr(orchestrator, "_adopt", adopt)
    monkeypatch.setattr(orchestrator, "_enqueue", lambda key: order.append(f"enqueue {key.id}"))
    await orchestrator._sweep()
    # the router without an instance at once; the other after its adoption
    assert order == [f"enqueue {ROUTER}", f"adopt {adopted}", f"enqueue {adopted}"]
