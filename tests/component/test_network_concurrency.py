"""Many clients at once: every port gets its own address, nobody gets a 5xx."""

from __future__ import annotations

import asyncio

import httpx
from openstack.connection import Connection

from tests.component.conftest import NetworkApi


async def test_200_concurrent_port_creates_get_200_distinct_addresses(
    network_api: NetworkApi, sdk: Connection
) -> None:
    net = sdk.network.create_network(name="busy")
    sdk.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.20.0.0/22")
    async with httpx.AsyncClient(
        base_url=network_api.url, timeout=60, limits=httpx.Limits(max_connections=200)
    ) as client:
        answers = await asyncio.gather(
            *(
                client.post("/v2.0/ports", json={"port": {"network_id": net.id, "name": f"p{i}"}})
                for i in range(200)
            )
        )
    assert [a.status_code for a in answers] == [201] * 200, {a.status_code: a.text for a in answers}
    addresses = [a.json()["port"]["fixed_ips"][0]["ip_address"] for a in answers]
    assert len(set(addresses)) == 200
    assert len(set(a.json()["port"]["mac_address"] for a in answers)) == 200
    listed = {p.fixed_ips[0]["ip_address"] for p in sdk.network.ports(network_id=net.id)}
    assert listed == set(addresses)
