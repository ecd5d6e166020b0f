"""The metadata proxy: HTTP parsing and header rules as pure functions, then end to end on loopback.

The end-to-end tests run the proxy in our own namespace (``Netns(None)``) on
127.0.0.1 with a fake orchestrator on loopback; clients pick their source
address (127.0.0.1 is allocated, 127.0.0.2 is not) by binding before connecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from astara.appliance.errors import ConfigError
from astara.appliance.plan import (
    IPAddress,
    NetworkKind,
    PlannedHost,
    PlannedNetwork,
    RouterPlan,
)
from astara.appliance.services.metadata import (
    InstanceIdentity,
    MetadataProxy,
    ProxyLimits,
    forwarded_headers,
)
from astara.appliance.system.http1 import (
    HttpError,
    parse_request_head,
    parse_response_head,
    read_body,
    render_request,
    render_response,
)
from astara.appliance.system.netns import Netns

LOOP4 = ipaddress.IPv4Address("127.0.0.1")
NET_ID = "31a242a0-95aa-49cd-b2db-cc00f33dfe88"


# -- pure functions ---------------------------------------------------------------------------------
def test_parse_request_head_reads_line_headers_and_length() -> None:
    head = parse_request_head(
        b"POST /openstack/latest/password?x=1 HTTP/1.1\r\nHost: 169.254.169.254\r\n"
        b"Content-Length: 5\r\nAccept:  */* \r\n\r\n"
    )
    assert head.method == "POST"
    assert head.target == "/openstack/latest/password?x=1"
    assert head.headers == (
        ("Host", "169.254.169.254"),
        ("Content-Length", "5"),
        ("Accept", "*/*"),
    )
    assert head.content_length == 5
    assert not head.chunked
    assert not head.expects_continue


def test_parse_request_head_chunked_and_expect() -> None:
    head = parse_request_head(
        b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    )
    assert head.chunked
    assert head.content_length is None
    assert head.expects_continue


@pytest.mark.parametrize(
    "data",
    [
        b"garbage\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET http://example.test/ HTTP/1.1\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\n",
    ],
)
def test_parse_request_head_refuses_malformed(data: bytes) -> None:
    with pytest.raises(HttpError) as caught:
        parse_request_head(data)
    assert caught.value.status == 400


def test_parse_request_head_bounds_header_count() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(5)) + b"\r\n"
    assert len(parse_request_head(data, max_headers=5).headers) == 5
    with pytest.raises(HttpError) as caught:
        parse_request_head(data, max_headers=4)
    assert caught.value.status == 431


def test_parse_response_head() -> None:
    head = parse_response_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n")
    assert (head.status, head.reason, head.content_length) == (404, "Not Found", 3)
    assert parse_response_head(b"HTTP/1.0 200\r\n\r\n").reason == ""
    for bad in (
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"SPDY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 O\nK\r\n\r\n",
    ):
        with pytest.raises(HttpError):
            parse_response_head(bad)


IDENTITY = InstanceIdentity(ipaddress.ip_address("10.0.1.10"), "dev-1", "proj-a", NET_ID)


def test_forwarded_headers_drop_hop_by_hop_and_spoofed_identity() -> None:
    client = (
        ("Host", "169.254.169.254"),
        ("Accept", "text/plain"),
        ("Connection", "keep-alive, X-Secret"),
        ("X-Secret", "hop"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "3"),
        ("X-Forwarded-For", "10.0.1.99"),
        ("x-instance-id", "someone-else"),
        ("X-Tenant-ID", "proj-b"),
        ("X-Instance-ID-Signature", "forged"),
        ("User-Agent", "cloud-init"),
    )
    assert forwarded_headers(client, IDENTITY) == (
        ("Accept", "text/plain"),
        ("User-Agent", "cloud-init"),
        ("X-Forwarded-For", "10.0.1.10"),
        ("X-Instance-ID", "dev-1"),
        ("X-Neutron-Network-ID", NET_ID),
        ("X-Tenant-ID", "proj-a"),
    )


def test_forwarded_headers_without_tenant() -> None:
    identity = InstanceIdentity(ipaddress.ip_address("10.0.1.10"), "dev-1", None, NET_ID)
    names = [n for n, _ in forwarded_headers((), identity)]
    assert "X-Tenant-ID" not in names


def test_render_request_sets_host_length_and_close() -> None:
    data = render_request("POST", "/p?q=1", (("A", "b"),), b"hello", authority="[fd00::2]:9697")
    assert data == (
        b"POST /p?q=1 HTTP/1.1\r\nHost: [fd00::2]:9697\r\nA: b\r\n"
        b"Content-Length: 5\r\nConnection: close\r\n\r\nhello"
    )
    assert b"Content-Length" not in render_request("GET", "/", (), b"", authority="h:1")


def test_render_response_replaces_framing() -> None:
    headers = (("Transfer-Encoding", "chunked"), ("Content-Type", "text/plain"))
    data = render_response(200, "OK", headers, b"i-1")
    assert data == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
        b"Connection: close\r\n\r\ni-1"
    )
    head_only = render_response(200, "", (("Content-Length", "42"),), None)
    assert head_only == b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\nConnection: close\r\n\r\n"


async def _body(data: bytes, **kwargs: object) -> bytes:
    reader = asyncio.StreamReader(limit=1024)
    reader.feed_data(data)
    reader.feed_eof()
    return await read_body(reader, **kwargs)  # type: ignore[arg-type]


async def test_read_body_framings() -> None:
    chunked = b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: x\r\n\r\n"
    assert await _body(chunked, length=None, chunked=True, to_eof=False, limit=10) == b"abcde"
    assert await _body(b"abcdef", length=3, chunked=False, to_eof=False, limit=10) == b"abc"
    assert await _body(b"abc", length=None, chunked=False, to_eof=False, limit=10) == b""
    assert await _body(b"abc", length=None, chunked=False, to_eof=True, limit=10) == b"abc"


@pytest.mark.parametrize(
    ("data", "kwargs", "status"),
    [
        (b"x" * 11, {"length": 11, "chunked": False, "to_eof": False}, 413),
        (b"x" * 11, {"length": None, "chunked": False, "to_eof": True}, 413),
        (b"b\r\nhello world\r\n0\r\n\r\n", {"length": None, "chunked": True, "to_eof": False}, 413),
        (b"zz\r\nab\r\n0\r\n\r\n", {"length": None, "chunked": True, "to_eof": False}, 400),
        (b"2\r\nabXX0\r\n\r\n", {"length": None, "chunked": True, "to_eof": False}, 400),
        (b"abc", {"length": 5, "chunked": False, "to_eof": False}, 400),
        (b"5\r\nab", {"length": None, "chunked": True, "to_eof": False}, 400),
    ],
)
async def test_read_body_limits_and_errors(
    data: bytes, kwargs: dict[str, object], status: int
) -> None:
    with pytest.raises(HttpError) as caught:
        await _body(data, limit=10, **kwargs)
    assert caught.value.status == status


# -- end to end on loopback -------------------------------------------------------------------------
@dataclass
class FakeOrchestrator:
    """An upstream that records each request and answers with ``reply``."""

    reply: bytes = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\ni-1"
    hang: bool = False
    seen: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = parse_request_head(await reader.readuntil(b"\r\n\r\n"))
            body = await reader.readexactly(head.content_length or 0)
            headers = {n.lower(): v for n, v in head.headers}
            self.seen.append((f"{head.method} {head.target}", headers, body))
            if self.hang:
                await asyncio.sleep(30)
            writer.write(self.reply)
            await writer.drain()
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]],
    host: str = "127.0.0.1",
) -> AsyncIterator[int]:
    """Serve ``handler`` on ``host``; yield the port; close it and cancel its handlers after."""
    tasks: set[asyncio.Task[None]] = set()

    def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(handler(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(tracked, host, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        in_flight = list(tasks)
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
        await server.wait_closed()


def make_plan(
    orchestrator: tuple[IPAddress, int] | None,
    *,
    address: str = "127.0.0.1/8",
    hosts: tuple[tuple[str, str], ...] = (("127.0.0.1", "dev-1"),),
    tenant_id: str | None = "proj-a",
    network_id: str = NET_ID,
) -> RouterPlan:
    planned_hosts = tuple(
        PlannedHost(
            f"fa:16:3e:00:00:{i:02x}", f"vm-{i}", device, ((ipaddress.ip_address(ip), True),)
        )
        for i, (ip, device) in enumerate(hosts)
    )
    net = PlannedNetwork(
        network_id=network_id,
        name="",
        kind=NetworkKind.INTERNAL,
        ifname="lo",
        mac="00:00:00:00:00:00",
        addresses=(ipaddress.ip_interface(address),),
        mtu=None,
        up=True,
        subnets=(),
        hosts=planned_hosts,
    )
    return RouterPlan((net,), (), None, None, (), None, tenant_id, None, orchestrator)


@contextlib.asynccontextmanager
async def running(
    plan: RouterPlan, limits: ProxyLimits | None = None
) -> AsyncIterator[tuple[MetadataProxy, int]]:
    proxy = MetadataProxy(netns=Netns(None), port=0, limits=limits)
    try:
        assert await proxy.apply(plan)
        yield proxy, proxy.listening()[NET_ID][1]
    finally:
        await proxy.stop()


async def send_raw(port: int, data: bytes, *, source: str = "127.0.0.1") -> bytes:
    """Send ``data`` from ``source``; return everything the proxy answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return raw


async def request(port: int, data: bytes, *, source: str = "127.0.0.1") -> tuple[int, bytes]:
    """Send ``data`` from ``source``; return the answer's status and the raw answer."""
    raw = await send_raw(port, data, source=source)
    return int(raw.split(b" ", 2)[1]), raw


GET = b"GET /latest/meta-data/instance-id?a=1 HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"


async def test_forwards_with_identity_and_relays_the_answer() -> None:
    fake = FakeOrchestrator()
    async with serving(fake.handle) as up, running(make_plan((LOOP4, up))) as (_, port):
        spoofed = GET.replace(b"\r\n\r\n", b"\r\nX-Instance-ID: evil\r\n\r\n")
        status, raw = await request(port, spoofed)
    assert status == 200
    assert raw.endswith(b"\r\n\r\ni-1")
    assert b"Connection: close\r\n" in raw
    [(line, headers, body)] = fake.seen
    assert line == "GET /latest/meta-data/instance-id?a=1"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-instance-id"] == "dev-1"
    assert headers["x-tenant-id"] == "proj-a"
    assert headers["x-neutron-network-id"] == NET_ID
    assert headers["host"] == f"127.0.0.1:{up}"
    assert body == b""


async def test_relays_post_body_and_chunked_answer_over_ipv6() -> None:
    reply = (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-Server: fake\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n"
    )
    fake = FakeOrchestrator(reply=reply)
    loop6 = ipaddress.IPv6Address("::1")
    async with serving(fake.handle, "::1") as up, running(make_plan((loop6, up))) as (_, port):
        post = b"POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 6\r\n\r\nsecret"
        status, raw = await request(port, post)
    assert status == 201
    assert b"X-Server: fake\r\n" in raw
    assert b"Transfer-Encoding" not in raw
    assert raw.endswith(b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
    [(line, headers, body)] = fake.seen
    assert (line, body) == ("POST /openstack/latest/password", b"secret")
    assert headers["host"] == f"[::1]:{up}"


async def test_head_answer_keeps_the_upstream_length_without_a_body() -> None:
    fake = FakeOrchestrator(reply=b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
    async with serving(fake.handle) as up, running(make_plan((LOOP4, up))) as (_, port):
        status, raw = await request(port, GET.replace(b"GET", b"HEAD", 1))
    assert status == 200
    assert raw.endswith(b"Content-Length: 3\r\nConnection: close\r\n\r\n")


async def test_unknown_source_gets_404_and_nothing_is_forwarded() -> None:
    fake = FakeOrchestrator()
    async with serving(fake.handle) as up, running(make_plan((LOOP4, up))) as (_, port):
        status, raw = await request(port, GET, source="127.0.0.2")
    assert status == 404
    assert b"Traceback" not in raw
    assert fake.seen == []


async def test_upstream_down_is_502() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with running(make_plan((LOOP4, closed_port))) as (_, port):
        status, raw = await request(port, GET)
    assert status == 502
    assert b"unreachable" in raw


async def test_bad_upstream_answer_is_502() -> None:
    fake = FakeOrchestrator(reply=b"this is not http\r\n\r\n")
    async with serving(fake.handle) as up, running(make_plan((LOOP4, up))) as (_, port):
        status, _ = await request(port, GET)
    assert status == 502


async def test_no_orchestrator_is_503() -> None:
    async with running(make_plan(None)) as (_, port):
        status, _ = await request(port, GET)
    assert status == 503


async def test_garbage_is_400_and_oversized_requests_are_refused() -> None:
    fake = FakeOrchestrator()
    limits = ProxyLimits(max_head_bytes=1024, max_request_body=16)
    async with serving(fake.handle) as up, running(make_plan((LOOP4, up)), limits) as (_, port):
        assert (await request(port, b"\x16\x03\x01 hello tls\r\n\r\n"))[0] == 400
        huge_head = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 2048 + b"\r\n\r\n"
        assert (await request(port, huge_head))[0] == 431
        big_body = b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n" + b"x" * 17
        assert (await request(port, big_body))[0] == 413
    assert fake.seen == []


async def test_timeouts_on_client_and_upstream() -> None:
    fake = FakeOrchestrator(hang=True)
    limits = ProxyLimits(client_timeout=0.2, upstream_timeout=0.2)
    async with serving(fake.handle) as up, running(make_plan((LOOP4, up)), limits) as (_, port):
        assert (await request(port, b"GET / HTTP/1.1\r\n"))[0] == 408
        assert (await request(port, GET))[0] == 504


async def test_expect_continue_gets_an_interim_answer() -> None:
    fake = FakeOrchestrator()
    async with serving(fake.handle) as up, running(make_plan((LOOP4, up))) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"PUT /x HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.write(b"hi")
            final = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
            await writer.wait_closed()
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert final.startswith(b"HTTP/1.1 200 OK\r\n")
    assert fake.seen[0][2] == b"hi"
    assert "expect" not in fake.seen[0][1]


async def test_apply_converges_without_reopening_listeners() -> None:
    fake = FakeOrchestrator()
    async with serving(fake.handle) as up:
        proxy = MetadataProxy(netns=Netns(None), port=0)
        try:
            plan = make_plan((LOOP4, up), hosts=())
            assert await proxy.apply(plan)
            assert not await proxy.apply(plan)
            bound = proxy.listening()
            assert (await request(bound[NET_ID][1], GET))[0] == 404
            # the allocation arrives: the same listener now forwards
            assert await proxy.apply(make_plan((LOOP4, up)))
            assert proxy.listening() == bound
            assert (await request(bound[NET_ID][1], GET))[0] == 200
            # the network goes away: its listener closes
            assert await proxy.apply(make_plan((LOOP4, up), network_id="other"))
            assert NET_ID not in proxy.listening()
            with pytest.raises(OSError):
                await request(bound[NET_ID][1], GET)
        finally:
            await proxy.stop()
            await proxy.stop()
    assert proxy.listening() == {}


async def test_ipv6_only_network_has_no_listener() -> None:
    proxy = MetadataProxy(netns=Netns(None), port=0)
    try:
        plan = make_plan(None, address="fd00:1::1/64", hosts=())
        await proxy.apply(plan)
        assert proxy.listening() == {}
        assert not await proxy.apply(plan)
    finally:
        await proxy.stop()


async def test_stop_cancels_requests_in_flight() -> None:
    fake = FakeOrchestrator(hang=True)
    async with serving(fake.handle) as up:
        proxy = MetadataProxy(netns=Netns(None), port=0)
        try:
            await proxy.apply(make_plan((LOOP4, up)))
            port = proxy.listening()[NET_ID][1]
            pending = asyncio.ensure_future(send_raw(port, GET))
            async with asyncio.timeout(5):
                while not fake.seen:
                    await asyncio.sleep(0.01)
        finally:
            await proxy.stop()
        assert await pending == b""  # closed without an answer


async def test_check_refuses_values_that_cannot_be_headers() -> None:
    proxy = MetadataProxy(netns=Netns(None), port=0)
    bad = make_plan(None, hosts=(("127.0.0.1", "dev\r\nX-Evil: 1"),))
    with pytest.raises(ConfigError) as caught:
        await proxy.apply(bad)
    assert caught.value.field == "networks.0.address_allocations.0.device_id"
    assert proxy.listening() == {}
    with pytest.raises(ConfigError):
        await proxy.check(make_plan(None, tenant_id="proj\u00e9"))
