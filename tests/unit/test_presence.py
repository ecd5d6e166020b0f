"""The orchestrator's presence watcher: a vanished appliance is noticed within a period or two."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from astara.bus.embedded import EmbeddedBus
from astara.orchestrator.appliance_client import ApplianceClient
from astara.orchestrator.queueing import shard_of
from astara.orchestrator.resolution import ResourceKey
from astara.orchestrator.runner import (
    ADOPT_CONCURRENCY,
    PRESENCE_PERIOD,
    Orchestrator,
    OrchestratorSettings,
)
from astara.providers.base import Instance
from astara.providers.fake import FakeProvider

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

ROUTER = "00000000-0000-0000-0000-0000000000a1"


async def _mac(_instance: Instance) -> str:
    return "fa:16:3e:00:00:01"


async def test_a_vanished_instance_is_reported_at_once_and_forgotten() -> None:
    provider = FakeProvider()
    instance = await provider.boot(router_id=ROUTER, ports=())
    present = {instance.name}
    appliance = ApplianceClient(token="unused")
    orchestrator = Orchestrator(
        bus=EmbeddedBus(),
        network_url="http://127.0.0.1:9",  # nothing answers: the watcher needs no network API
        provider=provider,
        appliance=appliance,
        management_mac=_mac,
        presence=lambda: frozenset(present),
    )
    reported: list[ResourceKey] = []
    orchestrator.health.notice_gone = reported.append  # type: ignore[method-assign]
    await orchestrator._remember(ROUTER, instance)
    assert orchestrator.appliance_addresses()
    watcher = asyncio.create_task(orchestrator._watch_presence(lambda: frozenset(present)))
    try:
        await asyncio.sleep(PRESENCE_PERIOD * 2.5)
        assert reported == []  # present: nothing to say

        present.clear()
        for _ in range(20):
            await asyncio.sleep(PRESENCE_PERIOD / 2)
            if reported:
                break
        assert reported == [ResourceKey.router(ROUTER)]
        assert not orchestrator.appliance_addresses()  # no longer probed
        await asyncio.sleep(PRESENCE_PERIOD * 2.5)
        assert reported == [ResourceKey.router(ROUTER)]  # reported once, not every period
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await orchestrator.close()
        await appliance.aclose()


async def test_a_sharded_orchestrator_adopts_and_reconciles_only_its_own_routers() -> None:
    provider = FakeProvider()
    routers = [f"00000000-0000-0000-0000-{n:012x}" for n in range(40)]
    for router_id in routers:
        await provider.boot(router_id=router_id, ports=())
    appliance = ApplianceClient(token="unused")
    orchestrator = Orchestrator(
        bus=EmbeddedBus(),
        network_url="http://127.0.0.1:9",
        provider=provider,
        appliance=appliance,
        management_mac=_mac,
        settings=OrchestratorSettings(shard_index=1, shards=3),
    )
    try:
        mine = {r for r in routers if shard_of(ResourceKey.router(r), 3) == 1}
        assert 0 < len(mine) < len(routers)
        provider.calls.clear()
        assert await orchestrator.readopt() == len(mine)
        adopted = {router_id for operation, router_id in provider.calls if operation == "boot"}
        assert adopted == mine  # the other shards' appliances are theirs to adopt
        assert orchestrator.queue.stats.queued == len(mine)
    finally:
        await orchestrator.close()
        await appliance.aclose()


async def test_instances_are_adopted_in_parallel_up_to_a_bound_with_the_macs_read_with_them() -> (
    None
):
    """A restart re-adopts every appliance: ``ADOPT_CONCURRENCY`` at a time, not one after the
    other; a MAC the provider read with the instance is used (no read of its own)."""
    provider = FakeProvider()
    routers = [f"00000000-0000-0000-0001-{n:012x}" for n in range(3 * ADOPT_CONCURRENCY)]
    for router_id in routers:
        await provider.boot(router_id=router_id, ports=())
    in_flight, most = 0, 0
    gate = asyncio.Event()

    async def adopt(instance: Instance) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if most >= ADOPT_CONCURRENCY:
            gate.set()
        await gate.wait()  # held until the bound is reached: they must run side by side
        in_flight -= 1

    reads: list[str] = []

    async def mac(instance: Instance) -> str:
        reads.append(instance.router_id)
        return "fa:16:3e:00:00:01"

    appliance = ApplianceClient(token="unused")
    orchestrator = Orchestrator(
        bus=EmbeddedBus(),
        network_url="http://127.0.0.1:9",
        provider=provider,
        appliance=appliance,
        management_mac=mac,
        adopt=adopt,
    )
    try:
        instances = [
            dataclasses.replace(i, management_mac=f"02:00:00:00:00:{n:02x}") if n % 2 else i
            for n, i in enumerate(await provider.list())
        ]
        await asyncio.wait_for(orchestrator._adopt_all(instances), timeout=5)
        assert most == ADOPT_CONCURRENCY
        assert len(orchestrator.appliance_addresses()) == len(routers)
        assert sorted(reads) == sorted(i.router_id for n, i in enumerate(instances) if not n % 2)
        odd = instances[1]
        assert orchestrator.management(odd.router_id).mac == "02:00:00:00:00:01"
    finally:
        await orchestrator.close()
        await appliance.aclose()
