"""``HttpStatusSink`` and ``HttpNetworkSegments`` against the answers a real Neutron gives."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import httpx
import pytest

from astara.orchestrator.neutron_reader import NetworkResponseError, NetworkUnavailableError
from astara.orchestrator.reconcile import HttpNetworkSegments, HttpStatusSink, Segment

READ_ONLY = {
    "NeutronError": {
        "type": "HTTPBadRequest",
        "message": "Cannot update read-only attribute status",
        "detail": "",
    }
}


def _client(
    answer: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request]
) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    return httpx.AsyncClient(base_url="http://neutron/", transport=httpx.MockTransport(handler))


async def test_a_neutron_without_a_writable_status_is_told_once_then_left_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[httpx.Request] = []
    async with _client(lambda _: httpx.Response(400, json=READ_ONLY), seen) as client:
        sink = HttpStatusSink(client=client)
        with caplog.at_level(logging.INFO, logger="astara.orchestrator.reconcile"):
            await sink("r1", "ACTIVE", "")
            await sink("r2", "BUILD", "")
            await sink("r1", "ERROR", "it broke")
    assert len(seen) == 1  # detected once: no more writes tried
    assert json.loads(seen[0].content) == {"router": {"status": "ACTIVE"}}
    assert not sink.writes_status
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1
    assert "keeps no router status" in infos[0].getMessage()
    assert "Cannot update read-only attribute status" in infos[0].getMessage()
    # the reason of an ERROR is still logged, as Neutron has no field for it anyway
    assert any("it broke" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


@pytest.mark.parametrize(
    ("code", "error"),
    [(403, NetworkResponseError), (500, NetworkUnavailableError), (429, NetworkUnavailableError)],
)
async def test_other_refusals_are_still_errors_and_writes_go_on(
    code: int, error: type[Exception]
) -> None:
    seen: list[httpx.Request] = []
    async with _client(lambda _: httpx.Response(code, json={}), seen) as client:
        sink = HttpStatusSink(client=client)
        for _ in range(2):
            with pytest.raises(error):
                await sink("r1", "ACTIVE", "")
    assert len(seen) == 2
    assert sink.writes_status


async def test_a_deleted_router_and_a_written_status_are_fine() -> None:
    seen: list[httpx.Request] = []
    codes = iter([404, 200, 200])
    async with _client(lambda _: httpx.Response(next(codes), json={}), seen) as client:
        sink = HttpStatusSink(client=client)
        for status in ("DOWN", "ACTIVE", "BUILD"):
            await sink("r1", status, "")  # type: ignore[arg-type]
    assert len(seen) == 3
    assert sink.writes_status


NETWORKS = [
    {  # a flat network as Neutron shows it: no segmentation id
        "id": "flat",
        "mtu": 1500,
        "provider:network_type": "flat",
        "provider:physical_network": "physnet1",
        "provider:segmentation_id": None,
    },
    {  # a tenant network ML2 made vxlan
        "id": "vx",
        "mtu": 1450,
        "provider:network_type": "vxlan",
        "provider:physical_network": None,
        "provider:segmentation_id": 1564,
    },
    {  # several segments: Neutron shows a segments list and no provider:* attributes
        "id": "multi",
        "mtu": 1500,
        "segments": [
            {"provider:network_type": "geneve", "provider:segmentation_id": 7},
            {
                "provider:network_type": "vlan",
                "provider:physical_network": "physnet2",
                "provider:segmentation_id": 120,
            },
        ],
    },
    {"id": "plain", "mtu": 1500},  # what a non-admin sees
    {"id": "other", "provider:network_type": "vxlan", "provider:segmentation_id": 9},
]


async def test_segments_as_a_real_neutron_shows_them() -> None:
    seen: list[httpx.Request] = []
    async with _client(lambda _: httpx.Response(200, json={"networks": NETWORKS}), seen) as client:
        found = await HttpNetworkSegments(client=client).segments(
            network_ids={"flat", "vx", "multi", "plain"}
        )
    assert found == {
        "flat": Segment("flat", None, "physnet1", 1500),
        "vx": Segment("vxlan", 1564, None, 1450),
        "multi": Segment("vlan", 120, "physnet2", 1500),
        "plain": Segment("local", None, None, 1500),
    }
    assert sorted(seen[0].url.params.get_list("id")) == ["flat", "multi", "plain", "vx"]


@pytest.mark.parametrize(
    ("code", "error"), [(400, NetworkResponseError), (503, NetworkUnavailableError)]
)
async def test_segment_lookups_sort_their_failures(code: int, error: type[Exception]) -> None:
    async with _client(lambda _: httpx.Response(code, json={}), []) as client:
        with pytest.raises(error):
            await HttpNetworkSegments(client=client).segments(network_ids={"x"})


async def test_no_networks_asks_nothing() -> None:
    seen: list[httpx.Request] = []
    async with _client(lambda _: httpx.Response(500), seen) as client:
        assert await HttpNetworkSegments(client=client).segments(network_ids=()) == {}
    assert seen == []
