"""The orchestrator publishes a router's status through the real network API, as admin only."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from openstack.connection import Connection

from astara.domain.lifecycle import ApiStatus
from astara.orchestrator.neutron_reader import neutron_client, noauth_admin_headers
from astara.orchestrator.reconcile import HttpNetworkSegments, HttpStatusSink
from tests.component.conftest import NetworkApi


async def test_an_admin_sets_a_router_status_and_a_member_may_not(
    network_api: NetworkApi, sdk: Connection, sdk_as: Callable[[str], Connection]
) -> None:
    router = sdk_as("proj-a").network.create_router(name="r1")
    network = sdk.network.create_network(name="n1")
    async with neutron_client(url=network_api.url, headers=noauth_admin_headers()) as admin:
        sink = HttpStatusSink(client=admin)
        statuses: tuple[ApiStatus, ...] = ("BUILD", "ERROR", "ACTIVE")
        for status in statuses:
            await sink(router.id, status, "")
            assert sdk.network.get_router(router.id).status == status
        await sink("00000000-0000-4000-8000-00000000dead", "DOWN", "")  # gone: not an error
        bad = await admin.put(f"/v2.0/routers/{router.id}", json={"router": {"status": "UP"}})
        assert bad.status_code == 400
        segments = await HttpNetworkSegments(client=admin).segments(network_ids={network.id})
        assert segments[network.id].network_type == network.provider_network_type
    member = {"X-Project-Id": "proj-a", "X-Roles": "member,reader"}
    async with httpx.AsyncClient(base_url=network_api.url, headers=member) as client:
        refused = await client.put(
            f"/v2.0/routers/{router.id}", json={"router": {"status": "ERROR"}}
        )
    assert refused.status_code == 403
    assert sdk.network.get_router(router.id).status == "ACTIVE"
