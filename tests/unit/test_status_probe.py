"""``KeepAliveStatus``: the health probe's status over kept-open connections, against a
canned HTTP server on 127.0.0.1 (the real agent answers it in tests/netns)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from astara.orchestrator.appliance_client import (
    ApplianceBadResponseError,
    ApplianceClient,
    ApplianceFailed,
    ApplianceRefused,
    ApplianceUnreachable,
    KeepAliveStatus,
)
from astara.wire.appliance_v1 import Status

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

OK = json.dumps({"v4": True, "v6": False}).encode()


def _answer(code: int, body: bytes, *, close: bool = False) -> bytes:
    head = f"HTTP/1.1 {code} X\r\ncontent-type: application/json\r\n"
    head += f"content-length: {len(body)}\r\n" + ("connection: close\r\n" if close else "")
    return head.encode() + b"\r\n" + body


@dataclass
class Server:
    """Answers each request with the next of ``answers`` (then OK); counts connections."""

    answers: list[bytes] = field(default_factory=list)
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    drop_after: int | None = None  # close each connection after this many answers
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(request)
                answer = self.answers.pop(0) if self.answers else _answer(200, OK)
                writer.write(answer)
                await writer.drain()
                served += 1
                if b"connection: close" in answer or served == self.drop_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()
    listener = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = listener.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        listener.close()
        await listener.wait_closed()


async def test_probes_reuse_one_connection_and_send_the_token(server: Server) -> None:
    probe = KeepAliveStatus(token="secret", port=server.port)
    try:
        for _ in range(5):
            assert await probe.status("127.0.0.1") == Status(v4=True, v6=False)
    finally:
        await probe.aclose()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"GET /v1/status/ HTTP/1.1\r\n")
    assert b"Authorization: Bearer secret\r\n" in first
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in first


async def test_a_connection_the_server_closed_is_retried_once_on_a_new_one(
    server: Server,
) -> None:
    server.drop_after = 1  # the agent ends every connection after one answer
    probe = KeepAliveStatus(token="t", port=server.port)
    try:
        for _ in range(3):
            assert (await probe.status("127.0.0.1")).v4
            await asyncio.sleep(0.01)  # the server's close arrives
    finally:
        await probe.aclose()
    assert server.connections == 3


async def test_errors_are_the_appliance_clients(server: Server) -> None:
    refused = json.dumps({"error": {"code": "unauthorized", "message": "bad token"}}).encode()
    server.answers = [
        _answer(401, refused),
        _answer(500, b'{"error": {"code": "x", "message": "y"}}'),
        _answer(200, b"not json"),
        _answer(200, b'{"v4": "maybe"}'),
    ]
    probe = KeepAliveStatus(token="t", port=server.port)
    try:
        with pytest.raises(ApplianceRefused) as refusal:
            await probe.status("127.0.0.1")
        assert (refusal.value.status, refusal.value.code) == (401, "unauthorized")
        with pytest.raises(ApplianceFailed):
            await probe.status("127.0.0.1")
        with pytest.raises(ApplianceBadResponseError):
            await probe.status("127.0.0.1")
        with pytest.raises(ApplianceBadResponseError):
            await probe.status("127.0.0.1")
        assert (await probe.status("127.0.0.1")).v4  # and the connection still serves
    finally:
        await probe.aclose()
    assert server.connections == 1


async def test_no_listener_or_no_answer_is_unreachable(server: Server) -> None:
    closed = KeepAliveStatus(token="t", port=1)
    with pytest.raises(ApplianceUnreachable):
        await closed.status("127.0.0.1")
    await closed.aclose()

    ended = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # no answer, until the probe gives up and closes
        writer.close()
        ended.set()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    slow = KeepAliveStatus(token="t", port=port, timeout=0.1)
    try:
        with pytest.raises(ApplianceUnreachable, match="TimeoutError"):
            await slow.status("127.0.0.1")
        await asyncio.wait_for(ended.wait(), timeout=5)  # the probe closed its connection
    finally:
        await slow.aclose()
        listener.close()
        await listener.wait_closed()


async def test_idle_connections_are_closed(server: Server) -> None:
    probe = KeepAliveStatus(token="t", port=server.port, idle=0.05)
    try:
        await probe.status("127.0.0.1")
        await asyncio.sleep(0.1)
        await probe.status("127.0.0.1")  # the sweep closed the idle one: a new connection
    finally:
        await probe.aclose()
    assert server.connections == 2


async def test_the_client_uses_it_unless_a_transport_is_injected(server: Server) -> None:
    client = ApplianceClient(token="t", port=server.port)
    try:
        assert await client.status("127.0.0.1") == Status(v4=True, v6=False)
        assert await client.status("127.0.0.1") == Status(v4=True, v6=False)
    finally:
        await client.aclose()
    assert server.connections == 1
