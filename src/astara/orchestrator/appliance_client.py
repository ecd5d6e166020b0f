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
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from astara.wire.appliance_v1 import ConfigurationBody, InterfaceState, Status

__all__ = [
    "DEFAULT_PORT",
    "Address",
    "ApplianceBadResponseError",
    "ApplianceClient",
    "ApplianceError",
    "ApplianceFailed",
    "ApplianceRefused",
    "ApplianceUnreachable",
    "FieldError",
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

    async def status(self, address: Address) -> Status:
        """``GET /v1/status/``: whether the appliance reaches its IPv4 and IPv6 gateways."""
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
