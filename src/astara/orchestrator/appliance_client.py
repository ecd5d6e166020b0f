"""The orchestrator's client of the appliance API v1 (``astara.wire.appliance_v1``).

One ``ApplianceClient`` talks to every appliance over one shared
``httpx.AsyncClient`` (one connection pool, one bearer token). An appliance
is named by its management address (IPv4 or IPv6; IPv6 goes in brackets in
the URL) and the API port (5000 unless told).

Invariants:

- Every failure is an ``ApplianceError``; nothing of httpx leaks out:

  - ``ApplianceUnreachable``: no answer (connect error, timeout, connection
    dropped). Temporary: the next try may work.
  - ``ApplianceRefused(status, code, message, fields)``: a 4xx, with the
    appliance's error body (``{"error": {"code", "message", "fields"}}``,
    see ``astara.appliance.api.errors``) parsed. Permanent: the same request
    gets the same answer (422: the configuration is wrong; 401: the token).
  - ``ApplianceFailed``: a 5xx (e.g. ``apply_failed``, the appliance restored
    its previous configuration). Temporary.
  - ``ApplianceBadResponseError``: a 2xx whose body is not what v1 promises.
    Permanent (a version mismatch, not bad luck).

- ``ApplianceError.temporary`` says whether retrying the same request makes
  sense; the state machine's backoff decides when.
- Bodies are validated with the wire models both ways: what is sent was a
  ``ConfigurationBody``; what comes back becomes one (or ``Status``, or
  ``InterfaceState``) or raises ``ApplianceBadResponseError``.

The status (the health probe's: every appliance, every period) does not go
through httpx but ``KeepAliveStatus`` (unless a transport was given: tests).
With 1,000 appliances every 5 s that is 200 requests a second, and through
httpx each cost the orchestrator's loop ~1.5-3.5 ms of CPU (its pool is
searched per request, and with more appliances than kept-alive connections
every probe opened a new connection, which the agent accepted and set up
too). ``KeepAliveStatus`` writes the one request by hand and reads the answer
with asyncio streams, keeping one HTTP/1.1 connection per appliance open
between probes (the agent keeps them 30 s): the same answers and errors as
above; a kept connection the agent closed meanwhile is retried once on a new
one; one request per connection at a time (a probe takes its address's
connection out while it runs); connections unused for ``IDLE_CLOSE`` seconds
(an appliance gone) are closed, ``aclose`` closes them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from astara.wire.appliance_v1 import ConfigurationBody, InterfaceState, Status

__all__ = [
    "DEFAULT_PORT",
    "IDLE_CLOSE",
    "Address",
    "ApplianceBadResponseError",
    "ApplianceClient",
    "ApplianceError",
    "ApplianceFailed",
    "ApplianceRefused",
    "ApplianceUnreachable",
    "FieldError",
    "KeepAliveStatus",
]

DEFAULT_PORT = 5000
"""The appliance API's port."""

Address = str | ipaddress.IPv4Address | ipaddress.IPv6Address
"""An appliance's management address."""


class ApplianceError(Exception):
    """Any failure to talk to an appliance; ``temporary`` says whether to retry."""

    temporary: bool = False


class ApplianceUnreachable(ApplianceError):  # noqa: N818 - the names the brief and callers use
    """No answer: connect error, timeout or a dropped connection."""

    temporary = True


class ApplianceBadResponseError(ApplianceError):
    """A success status whose body does not match the v1 contract."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One entry of an error body's ``fields``: the dotted field path and why it is wrong."""

    field: str
    reason: str


class _StatusError(ApplianceError):
    def __init__(
        self, status: int, code: str, message: str, fields: tuple[FieldError, ...] = ()
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields


class ApplianceRefused(_StatusError):  # noqa: N818 - the names the brief and callers use
    """A 4xx: the appliance understood and said no; the same request gets the same answer."""


class ApplianceFailed(_StatusError):  # noqa: N818 - the names the brief and callers use
    """A 5xx: the appliance failed (and kept its previous configuration); retry later."""

    temporary = True


def base_url(address: Address, port: int = DEFAULT_PORT) -> str:
    """``http://10.0.0.1:5000`` or ``http://[fd00::1]:5000``; ValueError if not an address."""
    parsed = ipaddress.ip_address(str(address))
    host = f"[{parsed}]" if parsed.version == 6 else str(parsed)
    return f"http://{host}:{port}"


def _error_from(response: httpx.Response) -> _StatusError:
    """The appliance's error body as an exception; tolerant of bodies not in its shape."""
    code, message = "unknown", response.reason_phrase
    fields: tuple[FieldError, ...] = ()
    try:
        error = response.json()["error"]
        code = str(error.get("code", code))
        message = str(error.get("message", message))
        fields = tuple(
            FieldError(str(f.get("field", "")), str(f.get("reason", "")))
            for f in error.get("fields", [])
            if isinstance(f, dict)
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    kind = ApplianceRefused if response.status_code < 500 else ApplianceFailed
    return kind(response.status_code, code, message, fields)


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], data: Any, what: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApplianceBadResponseError(f"{what}: not a v1 {model.__name__}: {exc}") from None


IDLE_CLOSE = 60.0
"""Seconds after which a connection nobody used is closed."""
_MAX_HEADERS = 64
_MAX_BODY = 1 << 20


class _Dropped(Exception):  # noqa: N818 - internal: the kept connection was closed
    """The connection ended before an answer: retried on a new one if it was a kept one."""


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    used: float

    def close(self) -> None:
        self.writer.close()


class KeepAliveStatus:
    """``status(address)`` over kept-open connections; see the module."""

    def __init__(
        self,
        *,
        token: str,
        port: int = DEFAULT_PORT,
        timeout: float = 5.0,
        idle: float = IDLE_CLOSE,
    ) -> None:
        self._port = port
        self._timeout = timeout
        self._idle = idle
        self._tail = (
            f"\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\n\r\n".encode()
        )
        self._kept: dict[str, _Connection] = {}
        self._swept = time.monotonic()

    async def status(self, address: Address) -> Status:
        host = str(ipaddress.ip_address(address))
        where = f"GET http://{_authority(host, self._port)}/v1/status/"
        self._sweep()
        connection = self._kept.pop(host, None)
        try:
            async with asyncio.timeout(self._timeout):
                if connection is not None:
                    try:
                        code, body, keep = await self._exchange(connection, host)
                    except (_Dropped, OSError):
                        connection.close()
                        connection = None
                if connection is None:
                    connection = await self._open(host)
                    code, body, keep = await self._exchange(connection, host)
        except (_Dropped, OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            if connection is not None:
                connection.close()
            raise ApplianceUnreachable(f"{where}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            if connection is not None:
                connection.close()
            raise
        self._keep(host, connection, keep)
        if code >= 400:
            raise _error_from(httpx.Response(code, content=body))
        try:
            data = json.loads(body)
        except ValueError:
            raise ApplianceBadResponseError(f"{where}: the body is not JSON") from None
        return _parse(Status, data, "status")

    async def aclose(self) -> None:
        for connection in self._kept.values():
            connection.close()
        self._kept.clear()

    # -- the wire --------------------------------------------------------------------
    async def _open(self, host: str) -> _Connection:
        reader, writer = await asyncio.open_connection(host, self._port)
        return _Connection(reader, writer, time.monotonic())

    async def _exchange(self, connection: _Connection, host: str) -> tuple[int, bytes, bool]:
        """Send the request, read the answer: (status code, body, whether to keep it)."""
        request = b"GET /v1/status/ HTTP/1.1\r\nHost: "
        connection.writer.write(request + _authority(host, self._port).encode() + self._tail)
        await connection.writer.drain()
        line = await connection.reader.readline()
        if not line:
            raise _Dropped("closed before an answer")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP answer: {line[:80]!r}")
        code = int(parts[1])
        length: int | None = None
        keep = parts[0] == b"HTTP/1.1"
        for _ in range(_MAX_HEADERS):
            header = await connection.reader.readline()
            if header in (b"\r\n", b"\n"):
                break
            if not header:
                raise _Dropped("closed in the headers")
            name, _, value = header.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
            elif name == b"transfer-encoding":
                raise ValueError("a chunked answer (not what the appliance sends)")
        else:
            raise ValueError("too many headers")
        if length is None:
            keep = False
            body = await connection.reader.read(_MAX_BODY)
        elif length > _MAX_BODY:
            raise ValueError(f"a body of {length} bytes")
        else:
            body = await connection.reader.readexactly(length)
        return code, body, keep

    # -- keeping ---------------------------------------------------------------------
    def _keep(self, host: str, connection: _Connection, keep: bool) -> None:
        if not keep or host in self._kept:
            connection.close()
            return
        connection.used = time.monotonic()
        self._kept[host] = connection

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._swept < self._idle:
            return
        self._swept = now
        for host, connection in list(self._kept.items()):
            if now - connection.used > self._idle:
                del self._kept[host]
                with contextlib.suppress(OSError):
                    connection.close()


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ApplianceClient:
    """Appliance API v1 over one shared connection pool; see the module for the errors."""

    def __init__(
        self,
        *,
        token: str,
        timeout: float = 5.0,
        port: int = DEFAULT_PORT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not token:
            raise ValueError("the appliance API token is empty")
        self._port = port
        self._http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout),
            transport=transport,
            trust_env=False,
        )
        #: the status without httpx (see the module); not with an injected transport
        self._status = (
            KeepAliveStatus(token=token, port=port, timeout=timeout) if transport is None else None
        )

    async def status(self, address: Address) -> Status:
        """``GET /v1/status/``: whether the appliance reaches its IPv4 and IPv6 gateways."""
        if self._status is not None:
            return await self._status.status(address)
        return _parse(Status, await self._json("GET", address, "/v1/status/"), "status")

    async def get_config(self, address: Address) -> ConfigurationBody | None:
        """``GET /v1/system/config/``: the applied configuration, None if none was pushed."""
        data = await self._json("GET", address, "/v1/system/config/")
        if isinstance(data, dict) and data.get("configuration", ...) is None:
            return None
        return _parse(ConfigurationBody, data, "config")

    async def put_config(self, address: Address, body: ConfigurationBody) -> ConfigurationBody:
        """``PUT /v1/system/config/``: apply ``body``; returns what the appliance applied."""
        content = body.model_dump_json().encode()
        data = await self._json(
            "PUT",
            address,
            "/v1/system/config/",
            content=content,
            headers={"Content-Type": "application/json"},
        )
        return _parse(ConfigurationBody, data, "config")

    async def interfaces(self, address: Address) -> list[InterfaceState]:
        """``GET /v1/system/interfaces``: the appliance's NICs as the kernel sees them."""
        data = await self._json("GET", address, "/v1/system/interfaces")
        items = data.get("interfaces") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ApplianceBadResponseError("interfaces: no 'interfaces' list in the body")
        return [_parse(InterfaceState, item, "interface") for item in items]

    async def aclose(self) -> None:
        """Close the connection pool; the client is unusable afterwards."""
        if self._status is not None:
            await self._status.aclose()
        await self._http.aclose()

    async def _json(self, method: str, address: Address, path: str, **kwargs: Any) -> Any:
        url = base_url(address, self._port) + path
        try:
            response = await self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise ApplianceUnreachable(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise _error_from(response)
        try:
            return response.json()
        except (ValueError, json.JSONDecodeError):
            raise ApplianceBadResponseError(f"{method} {url}: the body is not JSON") from None
