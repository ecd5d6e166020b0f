"""neutron_get: one retry of a GET whose kept-alive connection the server had closed."""

from __future__ import annotations

import httpx
import pytest

from astara.orchestrator.neutron_reader import NetworkUnavailableError, neutron_get


def _client(failures: list[Exception]) -> tuple[httpx.AsyncClient, list[str]]:
    sent: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        if failures:
            raise failures.pop(0)
        return httpx.Response(200, json={"routers": []})

    client = httpx.AsyncClient(base_url="http://neutron/", transport=httpx.MockTransport(handle))
    return client, sent


async def test_a_connection_closed_under_the_request_is_retried_once() -> None:
    client, sent = _client([httpx.ReadError("closed")])
    async with client:
        response = await neutron_get(client, "/v2.0/routers", None)
    assert response.json() == {"routers": []}
    assert sent == ["/v2.0/routers", "/v2.0/routers"]


async def test_a_second_failure_is_the_network_api_unavailable() -> None:
    client, sent = _client([httpx.ReadError("closed"), httpx.RemoteProtocolError("again")])
    async with client:
        with pytest.raises(NetworkUnavailableError, match=r"did not answer GET /v2\.0/routers"):
            await neutron_get(client, "/v2.0/routers", None)
    assert len(sent) == 2


async def test_a_refused_connection_is_not_retried() -> None:
    client, sent = _client([httpx.ConnectError("refused")])
    async with client:
        with pytest.raises(NetworkUnavailableError):
            await neutron_get(client, "/v2.0/routers", None)
    assert len(sent) == 1
