"""ASGI middleware in front of every route: the bearer token, then the body size.

Runs before routing, so an unknown path without a credential is a 401 too,
and an oversized body is refused (413) before anything buffers it whole.
The token is compared in constant time.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY = 4 * 1024 * 1024


class BodyTooLargeError(Exception):
    """Raised inside ``receive`` when a streamed body passes the limit."""


async def _reply(send: Send, status: int, code: str, message: str, extra: list[Any]) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + extra})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Bearer-token authentication and a body size limit."""

    def __init__(self, app: ASGIApp, *, token: str, max_body: int = DEFAULT_MAX_BODY) -> None:
        if not token:
            raise ValueError("the API token is empty")
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.max_body = max_body

    def _authorised(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                return hmac.compare_digest(value, self.expected)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._authorised(scope):
            await _reply(
                send,
                401,
                "unauthorized",
                "missing or wrong bearer token",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await _reply(
                send,
                413,
                "body_too_large",
                f"the body is too large: more than {self.max_body} bytes",
                [],
            )
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise BodyTooLargeError
            return message

        # a streamed body that passes the limit raises BodyTooLargeError in the reader
        await self.app(scope, limited, send)
