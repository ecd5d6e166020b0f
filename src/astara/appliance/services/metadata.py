"""Instance-metadata proxy: tenant instances to the orchestrator, over the management network.

Owns, for one appliance (one namespace): an asyncio TCP listener per internal
network that has an IPv4 address (the router's address there, port 9602),
the table that maps a client's source address to its allocation, and one
outbound connection per request to the orchestrator's metadata port. The
agent calls ``apply`` with each new plan and ``stop`` when the appliance goes;
one agent process runs one MetadataProxy per namespace it serves.

Invariants:
- every socket (listener or upstream) is created inside the appliance's
  namespace, so the proxy sees the tenant networks and reaches the
  orchestrator only over that namespace's routes;
- the source address of a connection is the only identity of an instance,
  looked up only among the allocations of the network whose listener took the
  connection; an unknown address gets 404 and nothing is forwarded;
- the identity headers (X-Forwarded-For, X-Instance-ID, X-Tenant-ID,
  X-Neutron-Network-ID) are always the proxy's own: whatever a client sends
  under those names (or other forwarding headers) is dropped;
- a listener that stays in the plan is never reopened; the lookup table is
  replaced as a whole, so a request sees either the old or the new one;
- every read is bounded in size and time; one request per connection
  (``Connection: close``); a connection's task belongs to its listener and is
  cancelled when the listener closes;
- a response carries a status and a short reason, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass, field

from astara.appliance.errors import ApplyError, ConfigError
from astara.appliance.plan import IPAddress, NetworkKind, PlannedNetwork, RouterPlan, same_networks
from astara.appliance.system.http1 import (
    HOP_BY_HOP,
    Headers,
    HttpError,
    RequestHead,
    ResponseHead,
    connection_tokens,
    error_response,
    has_body,
    parse_request_head,
    parse_response_head,
    read_body,
    read_head,
    render_request,
    render_response,
)
from astara.appliance.system.netns import Netns

log = logging.getLogger(__name__)

# Linux's value; the socket module names it only from Python 3.12.
_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
_HEADER_SAFE = re.compile(r"[\x20-\x7e]*")
# Set by the proxy itself: a client's own values must never reach the orchestrator.
_SET_BY_PROXY = frozenset(
    [
        "host",
        "content-length",
        "expect",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "x-instance-id",
        "x-instance-id-signature",
        "x-tenant-id",
        "x-neutron-network-id",
        "x-neutron-router-id",
    ]
)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True)
class ProxyLimits:
    """Bounds on what one connection may cost."""

    max_head_bytes: int = 16 * 1024  # request line and headers; also each upstream head
    max_headers: int = 64
    max_request_body: int = 64 * 1024
    max_response_body: int = 4 * 1024 * 1024  # user-data is at most 64 KiB in Nova
    client_timeout: float = 10.0  # for the request head, again for its body and for the answer
    upstream_timeout: float = 30.0  # to connect, send and receive a whole response


@dataclass(frozen=True)
class InstanceIdentity:
    """Who a request comes from, as the orchestrator is told."""

    address: IPAddress
    device_id: str
    tenant_id: str | None
    network_id: str

    def headers(self) -> Headers:
        found = [
            ("X-Forwarded-For", str(self.address)),
            ("X-Instance-ID", self.device_id),
            ("X-Neutron-Network-ID", self.network_id),
        ]
        if self.tenant_id is not None:
            found.append(("X-Tenant-ID", self.tenant_id))
        return tuple(found)


def forwarded_headers(client: Headers, identity: InstanceIdentity) -> Headers:
    """The client's end-to-end headers, minus any the proxy sets, plus the identity headers."""
    dropped = HOP_BY_HOP | _SET_BY_PROXY | connection_tokens(client)
    kept = tuple((n, v) for n, v in client if n.lower() not in dropped)
    return kept + identity.headers()


def _authority(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


# -- the proxy -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Routes:
    """Everything a request is checked and forwarded with; ``apply`` replaces it whole."""

    hosts: dict[str, dict[IPAddress, str]]  # network id -> instance address -> device id
    tenant_id: str | None
    orchestrator: tuple[IPAddress, int] | None

    def identify(self, network_id: str, client: IPAddress | None) -> InstanceIdentity:
        device_id = self.hosts.get(network_id, {}).get(client) if client else None
        if client is None or device_id is None:
            raise HttpError(404, f"no instance has address {client} on this network")
        return InstanceIdentity(client, device_id, self.tenant_id, network_id)


@dataclass
class _Listener:
    address: ipaddress.IPv4Address
    server: asyncio.Server
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def _routes_of(plan: RouterPlan) -> _Routes:
    hosts = {
        net.network_id: {ip: host.device_id for host in net.hosts for ip, _ in host.addresses}
        for net in plan.internals
    }
    return _Routes(hosts, plan.tenant_id, plan.orchestrator)


def _wanted_listeners(plan: RouterPlan) -> dict[str, ipaddress.IPv4Address]:
    wanted: dict[str, ipaddress.IPv4Address] = {}
    for net in plan.internals:
        own = net.own_address(4)
        if own is not None and isinstance(own.ip, ipaddress.IPv4Address):
            wanted[net.network_id] = own.ip
    return wanted


def _require_header_safe(where: str, value: str) -> None:
    if not _HEADER_SAFE.fullmatch(value):
        raise ConfigError(where, "must be printable ASCII to travel in a metadata request header")


def _listen_socket(netns: Netns, address: ipaddress.IPv4Address, port: int) -> socket.socket:
    sock = netns.socket(socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # the address may still be on its way to the interface when we bind
        sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        sock.setblocking(False)
        sock.bind((str(address), port))
    except BaseException:
        sock.close()
        raise
    return sock


def _peer_address(writer: asyncio.StreamWriter) -> IPAddress | None:
    peer = writer.get_extra_info("peername")
    try:
        return ipaddress.ip_address(peer[0])
    except (TypeError, IndexError, ValueError):
        return None


class MetadataProxy:
    """The metadata proxy of one appliance; ``apply`` is idempotent, ``stop`` too."""

    def __init__(
        self, *, netns: Netns, port: int = 9602, limits: ProxyLimits | None = None
    ) -> None:
        self._netns = netns
        self._port = port
        self._limits = limits or ProxyLimits()
        self._listeners: dict[str, _Listener] = {}
        self._routes = _Routes({}, None, None)
        # the networks (objects) and identity fields last applied: a push that
        # keeps them all is a no-op without rebuilding the lookup table
        self._applied: tuple[tuple[PlannedNetwork, ...], tuple[object, ...]] | None = None

    def listening(self) -> dict[str, tuple[ipaddress.IPv4Address, int]]:
        """Network id -> the address and port its listener is bound to."""
        found: dict[str, tuple[ipaddress.IPv4Address, int]] = {}
        for network_id, listener in self._listeners.items():
            for sock in listener.server.sockets:
                found[network_id] = (listener.address, sock.getsockname()[1])
        return found

    async def check(self, plan: RouterPlan) -> None:
        """Refuse identity values that cannot be sent as header values; touch nothing."""
        for index, net in enumerate(plan.networks):
            if net.kind is not NetworkKind.INTERNAL:
                continue
            _require_header_safe(f"networks.{index}.network_id", net.network_id)
            for number, host in enumerate(net.hosts):
                where = f"networks.{index}.address_allocations.{number}.device_id"
                _require_header_safe(where, host.device_id)
        if plan.tenant_id is not None:
            _require_header_safe("tenant_id", plan.tenant_id)

    async def apply(self, plan: RouterPlan) -> bool:
        """Converge listeners and the lookup table on ``plan``; return whether anything changed.

        Raises ConfigError (nothing touched) or ApplyError when a listener cannot
        be opened; what is open then stays recorded, so applying again converges.
        """
        internals = plan.internals
        key = (plan.tenant_id, plan.orchestrator)
        if (
            self._applied is not None
            and self._applied[1] == key
            and same_networks(self._applied[0], internals)
        ):
            return False  # the very networks already served (plan.build_plan keeps them)
        await self.check(plan)
        wanted = _wanted_listeners(plan)
        routes = _routes_of(plan)
        changed = routes != self._routes
        self._routes = routes
        for network_id, listener in list(self._listeners.items()):
            if wanted.get(network_id) != listener.address:
                await self._close(network_id)
                changed = True
        for network_id, address in wanted.items():
            if network_id not in self._listeners:
                self._listeners[network_id] = await self._open(network_id, address)
                changed = True
        self._applied = (internals, key)
        return changed

    async def stop(self) -> None:
        """Close every listener and cancel requests in flight; safe to call twice."""
        for network_id in list(self._listeners):
            await self._close(network_id)
        self._routes = _Routes({}, None, None)
        self._applied = None

    async def _open(self, network_id: str, address: ipaddress.IPv4Address) -> _Listener:
        tasks: set[asyncio.Task[None]] = set()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # our own task rather than the one asyncio would make for a coroutine callback:
            # the listener owns it, and Python 3.11 logs an error when that one is cancelled
            task = asyncio.get_running_loop().create_task(self._serve(network_id, reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        where = f"{address}:{self._port} in namespace {self._netns.label}"
        try:
            sock = await asyncio.to_thread(_listen_socket, self._netns, address, self._port)
        except OSError as exc:
            raise ApplyError("metadata", f"cannot listen on {where}: {exc}") from exc
        try:
            server = await asyncio.start_server(
                on_connect, sock=sock, limit=self._limits.max_head_bytes
            )
        except OSError as exc:
            sock.close()
            raise ApplyError("metadata", f"cannot listen on {where}: {exc}") from exc
        log.info("metadata proxy listening on %s for network %s", where, network_id)
        return _Listener(address, server, tasks)

    async def _close(self, network_id: str) -> None:
        listener = self._listeners.pop(network_id)
        listener.server.close()
        in_flight = list(listener.tasks)
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
        await listener.server.wait_closed()
        log.info("metadata proxy for network %s closed", network_id)

    async def _serve(
        self, network_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            await self._exchange(network_id, reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _exchange(
        self, network_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        client = _peer_address(writer)
        method, target = "-", "-"
        try:
            head = await self._read_request_head(reader, started)
            method, target = head.method, head.target
            response, status = await self._answer(network_id, client, head, reader, writer)
        except HttpError as exc:
            response, status = error_response(exc.status, exc.reason), exc.status
        except Exception:  # a bug must still leave the client with an answer, and us with a log
            log.exception("metadata %s: failed on a request from %s", self._netns.label, client)
            response, status = error_response(500, "internal error"), 500
        await self._send(writer, response)
        elapsed = (loop.time() - started) * 1000
        log.debug(
            "metadata %s: %s %s from %s on network %s -> %d (%.1f ms)",
            self._netns.label,
            method,
            target,
            client,
            network_id,
            status,
            elapsed,
        )

    async def _read_request_head(self, reader: asyncio.StreamReader, started: float) -> RequestHead:
        try:
            async with asyncio.timeout_at(started + self._limits.client_timeout):
                data = await read_head(reader)
        except TimeoutError:
            raise HttpError(408, "request not received in time") from None
        return parse_request_head(data, max_headers=self._limits.max_headers)

    async def _answer(
        self,
        network_id: str,
        client: IPAddress | None,
        head: RequestHead,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> tuple[bytes, int]:
        routes = self._routes
        identity = routes.identify(network_id, client)
        if routes.orchestrator is None:
            raise HttpError(503, "no metadata service is configured for this router")
        if head.expects_continue and (head.chunked or head.content_length):
            writer.write(_CONTINUE)
        try:
            async with asyncio.timeout(self._limits.client_timeout):
                body = await read_body(
                    reader,
                    length=head.content_length,
                    chunked=head.chunked,
                    to_eof=False,
                    limit=self._limits.max_request_body,
                )
        except TimeoutError:
            raise HttpError(408, "request body not received in time") from None
        request = render_request(
            head.method,
            head.target,
            forwarded_headers(head.headers, identity),
            body,
            authority=_authority(*routes.orchestrator),
        )
        upstream, upstream_body = await self._forward(routes.orchestrator, request, head.method)
        answer = render_response(upstream.status, upstream.reason, upstream.headers, upstream_body)
        return answer, upstream.status

    async def _forward(
        self, orchestrator: tuple[IPAddress, int], request: bytes, method: str
    ) -> tuple[ResponseHead, bytes | None]:
        try:
            async with asyncio.timeout(self._limits.upstream_timeout):
                reader, writer = await self._connect(*orchestrator)
                try:
                    return await self._relay(reader, writer, request, method)
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except TimeoutError:
            raise HttpError(504, "the metadata service did not answer in time") from None
        except OSError as exc:
            reason = f"the metadata service is unreachable ({exc.strerror or exc})"
            raise HttpError(502, reason) from exc

    async def _connect(
        self, address: IPAddress, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = await asyncio.to_thread(self._netns.socket, family)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (str(address), port))
            return await asyncio.open_connection(sock=sock, limit=self._limits.max_head_bytes)
        except BaseException:
            sock.close()
            raise

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: bytes,
        method: str,
    ) -> tuple[ResponseHead, bytes | None]:
        writer.write(request)
        await writer.drain()
        try:
            head = parse_response_head(
                await read_head(reader), max_headers=self._limits.max_headers
            )
            while 100 <= head.status < 200:  # interim responses are not relayed
                data = await read_head(reader)
                head = parse_response_head(data, max_headers=self._limits.max_headers)
            if not has_body(method, head.status):
                return head, None
            body = await read_body(
                reader,
                length=head.content_length,
                chunked=head.chunked,
                to_eof=True,
                limit=self._limits.max_response_body,
            )
        except HttpError as exc:
            raise HttpError(502, f"bad response from the metadata service: {exc.reason}") from exc
        return head, body

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        try:
            writer.write(data)
            async with asyncio.timeout(self._limits.client_timeout):
                await writer.drain()
        except (OSError, TimeoutError) as exc:
            log.debug("metadata %s: client went away: %s", self._netns.label, exc)
