"""Keystone token validation (``auth_strategy = keystone``), as keystonemiddleware's auth_token.

An ASGI middleware in front of every route (so, as in Neutron, an unknown
path without a token is a 401 too; only the version document at ``/`` is
open) reads ``X-Auth-Token`` and validates it against Keystone v3::

    GET {keystone}/v3/auth/tokens?nocatalog
    X-Auth-Token: <the service's own token>   X-Subject-Token: <the caller's token>

The service token comes from the service user's password
(``POST /v3/auth/tokens``, project-scoped); it is fetched again shortly
before it expires, or when Keystone answers 401 to it (then the validation
is retried once). The caller's ``Context`` is built from the token body:
project id, user id, role names, admin when a role is ``admin``. Identity
headers the caller sent (``X-Project-Id``, ``X-Roles``) are ignored.

Validated tokens are cached, keyed by their SHA-256, until the sooner of
their ``expires_at`` and a TTL (default 300 s), with a bounded size (least
recently used first out). Answers, in Neutron's error body:

- no token, a token Keystone does not know (404), an expired or unscoped
  token → 401 ``HTTPUnauthorized`` with ``WWW-Authenticate: Keystone uri=…``;
- Keystone unreachable, failing (5xx) or refusing the service user → 503
  ``HTTPServiceUnavailable``.

Everything runs on the event loop with an async HTTP client: handlers only
read the result (``context``), which does no I/O. Neither tokens nor the
password are ever logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request

from astara.network.api.auth import request_id
from astara.network.context import Context
from astara.network.errors import NeutronError
from astara.settings import NetworkSettings

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: where the middleware leaves the validated identity for ``context``
SCOPE_KEY = "astara.keystone.identity"
#: paths served without a token (Neutron's version document)
OPEN_PATHS = frozenset({"/"})
#: a service token this close to its expiry is replaced before use
SERVICE_TOKEN_MARGIN = 60.0
UNAUTHENTICATED = "The request you have made requires authentication."
UNAVAILABLE = "The Keystone service is temporarily unavailable."


class Unauthenticated(NeutronError):  # noqa: N818 -- Neutron's names
    status = 401
    type = "HTTPUnauthorized"


class KeystoneUnavailable(NeutronError):  # noqa: N818
    status = 503
    type = "HTTPServiceUnavailable"


@dataclass(frozen=True)
class Identity:
    """What a validated token says about its bearer."""

    project_id: str
    user_id: str | None
    roles: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class TokenCache:
    """Validated tokens by SHA-256, each until a deadline (epoch seconds); LRU-bounded."""

    def __init__(self, *, ttl: float, max_size: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self.clock = clock
        self._entries: OrderedDict[str, tuple[Identity, float]] = OrderedDict()

    @staticmethod
    def key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str) -> Identity | None:
        key = self.key(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        identity, deadline = entry
        if self.clock() >= deadline:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return identity

    def put(self, token: str, identity: Identity, expires_at: float) -> None:
        if self.ttl <= 0 or self.max_size <= 0:
            return
        self._entries[self.key(token)] = (identity, min(expires_at, self.clock() + self.ttl))
        self._entries.move_to_end(self.key(token))
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def _expiry(token: dict[str, Any]) -> float:
    """``expires_at`` (ISO 8601, UTC) as epoch seconds; ValueError/KeyError/TypeError if absent or bad."""
    moment = datetime.fromisoformat(str(token["expires_at"]))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _token_body(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    token = body["token"] if isinstance(body, dict) else None
    if not isinstance(token, dict):
        raise TypeError("no token object in the body")
    return token


class KeystoneAuthenticator:
    """Validates ``X-Auth-Token`` with Keystone v3; ``install`` puts it in front of an app."""

    def __init__(
        self,
        *,
        auth_url: str,
        username: str,
        password: str,
        project: str = "service",
        user_domain: str = "Default",
        project_domain: str = "Default",
        cache_ttl: float = 300.0,
        cache_size: int = 10_000,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not auth_url:
            raise ValueError("keystone: the Keystone URL is empty")
        if not password:
            raise ValueError("keystone: the service user's password is empty")
        base = auth_url.rstrip("/")
        self.public_url = base
        self.identity_url = base if base.endswith("/v3") else base + "/v3"
        self.username = username
        self._password = password
        self.project = project
        self.user_domain = user_domain
        self.project_domain = project_domain
        self.clock = clock
        self.cache = TokenCache(ttl=cache_ttl, max_size=cache_size, clock=clock)
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._service_token: tuple[str, float] | None = None
        self._service_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: NetworkSettings) -> KeystoneAuthenticator:
        return cls(
            auth_url=settings.keystone_url,
            username=settings.keystone_username,
            password=settings.keystone_password,
            project=settings.keystone_project,
            user_domain=settings.keystone_user_domain,
            project_domain=settings.keystone_project_domain,
            cache_ttl=settings.keystone_token_cache_ttl,
            cache_size=settings.keystone_token_cache_size,
            timeout=settings.keystone_timeout,
        )

    def __repr__(self) -> str:
        return f"KeystoneAuthenticator({self.identity_url!r}, user={self.username!r})"

    # -- the Authenticator protocol ------------------------------------------

    def context(self, request: Request) -> Context:
        identity = request.scope.get(SCOPE_KEY)
        if not isinstance(identity, Identity):
            # the middleware is not installed in front of this app: refuse, never guess
            raise Unauthenticated(UNAUTHENTICATED, detail="No validated token.")
        return Context(
            project_id=identity.project_id,
            is_admin=identity.is_admin,
            user_id=identity.user_id,
            roles=identity.roles,
            request_id=request_id(request),
        )

    def install(self, app: FastAPI) -> None:
        """Validate tokens in front of ``app``'s routes."""
        app.add_middleware(TokenMiddleware, authenticator=self)

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- validation ------------------------------------------------------------

    async def identify(self, token: str | None) -> Identity:
        """The bearer of ``token``; Unauthenticated (401) or KeystoneUnavailable (503)."""
        token = (token or "").strip()
        if not token:
            raise Unauthenticated(UNAUTHENTICATED, detail="No X-Auth-Token header.")
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        body = await self._validate(token)
        try:
            expires_at = _expiry(body)
            project = body.get("project") or {}
            user = body.get("user") or {}
            roles = tuple(str(r["name"]) for r in body.get("roles") or [])
            project_id = project.get("id")
        except (KeyError, TypeError, ValueError, AttributeError):
            log.warning("keystone: a token's body could not be read; refusing it")
            raise Unauthenticated(UNAUTHENTICATED, detail="Token authorization failed.") from None
        if expires_at <= self.clock():
            raise Unauthenticated(UNAUTHENTICATED, detail="The token has expired.")
        if not project_id:
            raise Unauthenticated(UNAUTHENTICATED, detail="A project-scoped token is required.")
        user_id = user.get("id")
        identity = Identity(
            project_id=str(project_id), user_id=str(user_id) if user_id else None, roles=roles
        )
        self.cache.put(token, identity, expires_at)
        return identity

    async def _validate(self, token: str) -> dict[str, Any]:
        """The token body Keystone returns for ``token``, re-authenticating the service once."""
        refused: str | None = None
        for attempt in (1, 2):
            service = await self._service(refused=refused)
            response = await self._request(
                "GET",
                "/auth/tokens",
                params={"nocatalog": ""},
                headers={"X-Auth-Token": service, "X-Subject-Token": token},
            )
            if response.status_code == 200:
                try:
                    return _token_body(response)
                except (ValueError, KeyError, TypeError):
                    log.warning("keystone: a token validation answer was not a token; refusing it")
                    raise Unauthenticated(
                        UNAUTHENTICATED, detail="Token authorization failed."
                    ) from None
            if response.status_code == 404:
                raise Unauthenticated(UNAUTHENTICATED, detail="The token is invalid or expired.")
            if response.status_code == 401 and attempt == 1:
                log.info("keystone: the service token was refused; authenticating again")
                refused = service
                continue
            if response.status_code in (401, 403):
                log.error(
                    "keystone: %s refused to let user %r validate tokens (HTTP %d): "
                    "check its password and that it has the service or admin role",
                    self.identity_url,
                    self.username,
                    response.status_code,
                )
                raise KeystoneUnavailable(
                    UNAVAILABLE, detail="The network service could not validate the token."
                )
            break
        log.error(
            "keystone: token validation at %s answered HTTP %d",
            self.identity_url,
            response.status_code,
        )
        raise KeystoneUnavailable(UNAVAILABLE, detail="Token validation failed in Keystone.")

    async def _service(self, *, refused: str | None = None) -> str:
        """The service's own token: fetched when missing, about to expire, or ``refused``."""
        async with self._service_lock:
            current = self._service_token
            if (
                current is not None
                and current[0] != refused
                and current[1] - self.clock() > SERVICE_TOKEN_MARGIN
            ):
                return current[0]  # still good, or already replaced by a concurrent request
            self._service_token = None
            self._service_token = await self._authenticate_service()
            return self._service_token[0]

    async def _authenticate_service(self) -> tuple[str, float]:
        request = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": self.username,
                            "domain": {"name": self.user_domain},
                            "password": self._password,
                        }
                    },
                },
                "scope": {
                    "project": {"name": self.project, "domain": {"name": self.project_domain}}
                },
            }
        }
        response = await self._request("POST", "/auth/tokens", json=request)
        if response.status_code in (401, 403):
            log.error(
                "keystone: %s refused the credentials of service user %r (HTTP %d)",
                self.identity_url,
                self.username,
                response.status_code,
            )
            raise KeystoneUnavailable(
                UNAVAILABLE, detail="The network service could not authenticate to Keystone."
            )
        token = response.headers.get("x-subject-token")
        try:
            if response.status_code != 201 or not token:
                raise ValueError(f"HTTP {response.status_code}")
            expires_at = _expiry(_token_body(response))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("keystone: no service token from %s: %s", self.identity_url, exc)
            raise KeystoneUnavailable(
                UNAVAILABLE, detail="The network service could not authenticate to Keystone."
            ) from None
        log.info("keystone: service user %r authenticated", self.username)
        return token, expires_at

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, self.identity_url + path, **kwargs)
        except httpx.HTTPError as exc:
            log.warning(
                "keystone: %s unreachable: %s: %s", self.identity_url, type(exc).__name__, exc
            )
            raise KeystoneUnavailable(
                UNAVAILABLE, detail="Keystone could not be reached."
            ) from None


async def _reply(send: Send, exc: NeutronError, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(
        {"NeutronError": {"type": exc.type, "message": exc.message, "detail": exc.detail}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": exc.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class TokenMiddleware:
    """ASGI: validate ``X-Auth-Token`` before routing; leave the identity in the scope."""

    def __init__(self, app: ASGIApp, *, authenticator: KeystoneAuthenticator) -> None:
        self.app = app
        self.authenticator = authenticator
        uri = authenticator.public_url.replace('"', "")
        self.challenge = (b"www-authenticate", f'Keystone uri="{uri}"'.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        token = None
        for name, value in scope.get("headers", []):
            if name == b"x-auth-token":
                token = value.decode("latin-1")
                break
        try:
            scope[SCOPE_KEY] = await self.authenticator.identify(token)
        except Unauthenticated as exc:
            await _reply(send, exc, [self.challenge])
            return
        except KeystoneUnavailable as exc:
            await _reply(send, exc, [])
            return
        await self.app(scope, receive, send)
