"""Intake end to end: the real network API's notifications, resolved through its real REST API.

An ``Intake`` subscribes to the network API's bus and runs on the server's
loop (where the embedded bus lives) with an ``HttpNetworkReader`` on the same
API as admin. Changes are driven through openstacksdk — two routers in one
project, interfaces, VM ports, a floating IP associated, moved and deleted —
and after each step the router ids enqueued are asserted exactly. Runs on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from openstack.connection import Connection

from astara.network.events import LoopEvents
from astara.orchestrator.intake import Intake, ResourceKey
from astara.orchestrator.neutron_reader import (
    HttpNetworkReader,
    NetworkResponseError,
    NetworkUnavailableError,
    PortRole,
    neutron_client,
    noauth_admin_headers,
)
from astara.wire.neutron_events import EXCHANGE
from tests.component.conftest import NetworkApi

SETTLE_SECONDS = 8.0


class Harness:
    """An Intake on the server's loop; ``take()`` waits for it to catch up and returns its keys."""

    def __init__(self, api: NetworkApi) -> None:
        self.api = api
        self.keys: list[ResourceKey] = []
        self.baseline = 0

    async def start(self) -> None:
        self.client = neutron_client(url=self.api.url, headers=noauth_admin_headers())
        self.reader = HttpNetworkReader(client=self.client)
        self.intake = Intake(bus=self.api.bus, reader=self.reader, enqueue=self.keys.append)
        await self.intake.open()
        self.baseline = self.api.bus.published
        self.task = asyncio.create_task(self.intake.run())

    async def stop(self) -> None:
        await self.intake.close()
        await asyncio.wait_for(self.task, timeout=5)
        await self.client.aclose()

    def take(self) -> list[str]:
        """The router ids enqueued since the last call, sorted, once every event is handled."""
        events = self.api.service.events
        assert isinstance(events, LoopEvents)
        events.drain()
        self.api.call(self._settle())
        assert all(k.kind == "router" for k in self.keys)
        taken = sorted(k.id for k in self.keys)
        self.keys.clear()
        return taken

    async def _settle(self) -> None:
        deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
        while True:
            s = self.intake.stats
            published = self.api.bus.published - self.baseline
            if s.received == published and s.malformed + s.resolved + s.dropped == published:
                return
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"the intake did not catch up: {s}, {published} published")
            await asyncio.sleep(0.01)


@pytest.fixture
def harness(network_api: NetworkApi) -> Iterator[Harness]:
    made = Harness(network_api)
    network_api.call(made.start())
    try:
        yield made
    finally:
        network_api.call(made.stop())


def _public(sdk: Connection) -> tuple[Any, Any]:
    public = sdk.network.create_network(
        name="public", is_router_external=True, provider_network_type="flat"
    )
    subnet = sdk.network.create_subnet(
        network_id=public.id, ip_version=4, cidr="203.0.113.0/24", is_dhcp_enabled=False
    )
    return public, subnet


def test_each_change_enqueues_exactly_the_routers_it_concerns(
    sdk: Connection, sdk_as: Callable[[str], Connection], harness: Harness
) -> None:
    public, public_sub = _public(sdk)
    assert harness.take() == []
    tenant = sdk_as("proj-a")
    net1 = tenant.network.create_network(name="net1")
    sub1 = tenant.network.create_subnet(network_id=net1.id, ip_version=4, cidr="10.1.0.0/24")
    net2 = tenant.network.create_network(name="net2")
    sub2 = tenant.network.create_subnet(network_id=net2.id, ip_version=4, cidr="10.2.0.0/24")
    assert harness.take() == []

    gateway = {"network_id": public.id}
    r1 = tenant.network.create_router(name="r1", external_gateway_info=gateway)
    assert harness.take() == [r1.id]
    r2 = tenant.network.create_router(name="r2", external_gateway_info=gateway)
    assert harness.take() == [r2.id]
    assert r1.project_id == r2.project_id == "proj-a"
    tenant.network.add_interface_to_router(r1, subnet_id=sub1.id)
    assert harness.take() == [r1.id]
    tenant.network.add_interface_to_router(r2, subnet_id=sub2.id)
    assert harness.take() == [r2.id]

    vm1 = tenant.network.create_port(network_id=net1.id, name="vm1", device_owner="compute:nova")
    assert harness.take() == [r1.id]
    vm2 = tenant.network.create_port(network_id=net2.id, name="vm2", device_owner="compute:nova")
    assert harness.take() == [r2.id]

    fip = tenant.network.create_ip(floating_network_id=public.id)
    assert harness.take() == []
    fip = tenant.network.update_ip(fip, port_id=vm1.id)
    assert harness.take() == [r1.id]
    fip = tenant.network.update_ip(fip, port_id=vm2.id)  # the move: both routers
    assert harness.take() == sorted([r1.id, r2.id])
    fip = tenant.network.update_ip(fip, port_id=None)
    assert harness.take() == [r2.id]
    fip = tenant.network.update_ip(fip, port_id=vm1.id)
    assert harness.take() == [r1.id]

    sdk.network.update_subnet(public_sub, dns_nameservers=["198.51.100.53"])
    assert harness.take() == sorted([r1.id, r2.id])  # both gateways
    tenant.network.update_network(net2, name="net2-renamed")
    assert harness.take() == [r2.id]
    tenant.network.update_port(vm2, name="vm2-renamed")
    assert harness.take() == [r2.id]

    tenant.network.delete_ip(fip)
    assert harness.take() == [r1.id]
    tenant.network.delete_port(vm1)
    assert harness.take() == [r1.id]
    tenant.network.remove_interface_from_router(r1, subnet_id=sub1.id)
    assert harness.take() == [r1.id]
    tenant.network.delete_port(vm2)
    assert harness.take() == [r2.id]
    tenant.network.remove_interface_from_router(r2, subnet_id=sub2.id)
    assert harness.take() == [r2.id]
    tenant.network.delete_router(r1)
    assert harness.take() == [r1.id]
    tenant.network.delete_subnet(sub1)
    tenant.network.delete_network(net1)
    assert harness.take() == []

    stats = harness.intake.stats
    assert (stats.malformed, stats.dropped) == (0, 0)
    assert stats.received == stats.resolved > 0


def test_malformed_messages_on_the_bus_do_not_stop_the_intake(
    network_api: NetworkApi, sdk: Connection, harness: Harness
) -> None:
    async def garbage() -> None:
        for key, body in [("notifications.info", b"nonsense"), ("notifications.error", b"[]")]:
            await network_api.bus.publish(exchange=EXCHANGE, routing_key=key, body=body)

    network_api.call(garbage())
    public, _ = _public(sdk)
    router = sdk.network.create_router(name="r", external_gateway_info={"network_id": public.id})
    assert harness.take() == [router.id]
    assert harness.intake.stats.malformed == 2


def test_the_http_reader_finds_router_ports_on_the_real_api(
    network_api: NetworkApi, sdk: Connection, sdk_as: Callable[[str], Connection]
) -> None:
    public, public_sub = _public(sdk)
    tenant = sdk_as("proj-a")
    net = tenant.network.create_network(name="n")
    sub = tenant.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.3.0.0/24")
    gateway = {"network_id": public.id}
    r1 = tenant.network.create_router(name="r1", external_gateway_info=gateway)
    r2 = tenant.network.create_router(name="r2", external_gateway_info=gateway)
    tenant.network.add_interface_to_router(r1, subnet_id=sub.id)
    tenant.network.create_port(network_id=net.id, device_owner="compute:nova")

    async def ask() -> dict[str, set[tuple[str, PortRole]]]:
        async with neutron_client(url=network_api.url, headers=noauth_admin_headers()) as client:
            reader = HttpNetworkReader(client=client)
            on_sub = await reader.router_ports_on_subnets(subnet_ids=[sub.id])
            on_public = await reader.router_ports_on_subnets(subnet_ids=[public_sub.id])
            on_net = await reader.router_ports_on_network(network_id=public.id)
            none = await reader.router_ports_on_network(network_id="no-such-network")
        return {
            name: {(p.router_id, p.role) for p in found}
            for name, found in [
                ("sub", on_sub),
                ("public", on_public),
                ("net", on_net),
                ("none", none),
            ]
        }

    gateways = {(r1.id, PortRole.GATEWAY), (r2.id, PortRole.GATEWAY)}
    assert network_api.call(ask()) == {
        "sub": {(r1.id, PortRole.INTERFACE)},
        "public": gateways,
        "net": gateways,
        "none": set(),
    }


def test_the_http_reader_says_what_to_do_when_the_api_fails(network_api: NetworkApi) -> None:
    async def ask(url: str) -> None:
        async with neutron_client(url=url, headers=noauth_admin_headers(), timeout=2) as client:
            await HttpNetworkReader(client=client).router_ports_on_network(network_id="n")

    with pytest.raises(NetworkResponseError):  # 404: not a Neutron endpoint
        network_api.call(ask(network_api.url + "/nowhere"))
    with pytest.raises(NetworkUnavailableError):  # nobody listens
        network_api.call(ask("http://127.0.0.1:9"))
