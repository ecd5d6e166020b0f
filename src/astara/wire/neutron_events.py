"""Neutron notifications as oslo.messaging publishes them (driver ``messagingv2``).

This is the event contract between the network service (or a real Neutron)
and the orchestrator. Captured examples from Neutron 29 are in
``../shared/fixtures/neutron/notifications/``; ``tests/contract`` checks this
module against every one of them.

The AMQP body is the oslo v2 envelope, two keys, in this order::

    {"oslo.version": "2.0", "oslo.message": "<the message, as a JSON string>"}

The message has ``MESSAGE_KEYS`` then the request context flattened into the
``CONTEXT_KEYS`` (``_context_*``), in Neutron's order. ``timestamp`` and
``_context_timestamp`` are naive UTC ``YYYY-MM-DD HH:MM:SS.ffffff``.
Published to exchange ``EXCHANGE``, routing key ``ROUTING_KEY``, content type
``CONTENT_TYPE``.

Invariants:

- ``encode_notification`` of a decoded fixture gives back the fixture's bytes
  exactly (same keys, same order, same separators, same escaping).
- ``decode_notification`` raises ``MalformedEventError`` — never anything else —
  for any body that is not such an envelope; absent ``_context_*`` keys are
  tolerated (older Neutron sent ``_context_tenant_id``), present ones must
  have their types.
- Encoding never publishes a credential: ``_context_auth_token`` is always null.

Who builds which event type and payload is ``astara.network.notify``'s business.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

EXCHANGE = "neutron"
ROUTING_KEY = "notifications.info"
CONTENT_TYPE = "application/json"
OSLO_VERSION = "2.0"
PRIORITY = "INFO"

ENVELOPE_KEYS = ("oslo.version", "oslo.message")
MESSAGE_KEYS = (
    "message_id",
    "publisher_id",
    "event_type",
    "priority",
    "payload",
    "timestamp",
    "_unique_id",
)
CONTEXT_KEYS = (
    "_context_user",
    "_context_project_id",
    "_context_system_scope",
    "_context_project",
    "_context_domain",
    "_context_user_domain",
    "_context_project_domain",
    "_context_is_admin",
    "_context_read_only",
    "_context_show_deleted",
    "_context_auth_token",
    "_context_request_id",
    "_context_global_request_id",
    "_context_resource_uuid",
    "_context_roles",
    "_context_user_identity",
    "_context_is_admin_project",
    "_context_user_id",
    "_context_timestamp",
    "_context_project_name",
    "_context_user_name",
    "_context_has_global_access",
    "_context_can_set_project_id",
)


class MalformedEventError(ValueError):
    """A bus message that is not a Neutron notification; drop it (and log), do not retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestContext:
    """Who made the API request an event reports: what oslo.context flattens into ``_context_*``."""

    project_id: str | None
    user_id: str | None = None
    is_admin: bool = False
    roles: tuple[str, ...] = ()
    #: ``req-<uuid>``, as returned in ``X-OpenStack-Request-ID``
    request_id: str
    #: a caller's ``X-OpenStack-Request-ID`` (nova's), if it sent one
    global_request_id: str | None = None
    #: when the request arrived; None: the notification's own timestamp
    started_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """One decoded notification. ``payload`` is the JSON object as sent; do not mutate it."""

    event_type: str
    payload: Mapping[str, Any]
    publisher_id: str
    priority: str
    timestamp: datetime  # aware, UTC
    message_id: str
    unique_id: str | None
    context: RequestContext


def new_request_id() -> str:
    """A fresh request id in oslo's form, ``req-<uuid4>``."""
    return f"req-{uuid.uuid4()}"


def format_timestamp(when: datetime) -> str:
    """``2026-11-25 11:31:34.617890``: naive UTC, always six fraction digits."""
    if when.tzinfo is None:
        raise ValueError("notification timestamps must be timezone-aware")
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def encode_notification(
    *,
    event_type: str,
    payload: Mapping[str, Any],
    context: RequestContext,
    publisher_id: str,
    timestamp: datetime,
    message_id: str | None = None,
    unique_id: str | None = None,
) -> bytes:
    """The AMQP body for one INFO notification; fresh ids unless given.

    Raises ``ValueError`` for an empty ``event_type`` or a naive ``timestamp``,
    ``TypeError``/``ValueError`` when ``payload`` is not plain JSON data.
    """
    if not event_type:
        raise ValueError("event_type must not be empty")
    when = format_timestamp(timestamp)
    message: dict[str, Any] = {
        "message_id": message_id or str(uuid.uuid4()),
        "publisher_id": publisher_id,
        "event_type": event_type,
        "priority": PRIORITY,
        "payload": dict(payload),
        "timestamp": when,
        "_unique_id": unique_id or uuid.uuid4().hex,
    }
    message.update(_context_fields(context, when))
    inner = json.dumps(message, allow_nan=False)
    return json.dumps({"oslo.version": OSLO_VERSION, "oslo.message": inner}).encode()


def _context_fields(ctx: RequestContext, when: str) -> dict[str, Any]:
    started = when if ctx.started_at is None else format_timestamp(ctx.started_at)
    values: tuple[Any, ...] = (
        ctx.user_id,  # _context_user
        ctx.project_id,
        None,  # system_scope
        ctx.project_id,  # _context_project
        None,  # domain
        None,  # user_domain
        None,  # project_domain
        ctx.is_admin,
        False,  # read_only
        False,  # show_deleted
        None,  # auth_token: never published
        ctx.request_id,
        ctx.global_request_id,
        None,  # resource_uuid
        list(ctx.roles),
        f"{ctx.user_id or '-'} {ctx.project_id or '-'} - - -",  # user_identity
        True,  # is_admin_project: oslo.context's default, no admin project configured
        ctx.user_id,
        started,
        None,  # project_name
        None,  # user_name
        ctx.is_admin,  # has_global_access
        ctx.is_admin,  # can_set_project_id
    )
    return dict(zip(CONTEXT_KEYS, values, strict=True))


class _Envelope(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)

    version: Literal["2.0"] = Field(alias="oslo.version")
    message: str = Field(alias="oslo.message")


class _Message(BaseModel):
    """The inner message: what is required, and the context keys read back (others ignored)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    message_id: str
    publisher_id: str
    event_type: Annotated[str, StringConstraints(min_length=1)]
    priority: str
    payload: dict[str, Any]
    timestamp: str
    unique_id: str | None = Field(None, alias="_unique_id")
    user_id: str | None = Field(None, alias="_context_user_id")
    user: str | None = Field(None, alias="_context_user")
    project_id: str | None = Field(None, alias="_context_project_id")
    tenant_id: str | None = Field(None, alias="_context_tenant_id")
    is_admin: bool = Field(False, alias="_context_is_admin")
    roles: list[str] | None = Field(None, alias="_context_roles")
    request_id: str | None = Field(None, alias="_context_request_id")
    global_request_id: str | None = Field(None, alias="_context_global_request_id")
    started_at: str | None = Field(None, alias="_context_timestamp")


_M = TypeVar("_M", bound=BaseModel)


def decode_notification(body: bytes | str) -> Notification:
    """Parse one AMQP body. Raises ``MalformedEventError`` (only) when it is not a notification."""
    envelope = _validated(_Envelope, _json(body, "the body"), "the envelope")
    message = _validated(_Message, _json(envelope.message, "oslo.message"), "oslo.message")
    context = RequestContext(
        project_id=message.project_id or message.tenant_id,
        user_id=message.user_id or message.user,
        is_admin=message.is_admin,
        roles=tuple(message.roles or ()),
        request_id=message.request_id or "",
        global_request_id=message.global_request_id,
        started_at=None if message.started_at is None else _parse_time(message.started_at),
    )
    return Notification(
        event_type=message.event_type,
        payload=message.payload,
        publisher_id=message.publisher_id,
        priority=message.priority,
        timestamp=_parse_time(message.timestamp),
        message_id=message.message_id,
        unique_id=message.unique_id,
        context=context,
    )


def _json(text: bytes | str, what: str) -> object:
    if not isinstance(text, bytes | str):
        raise MalformedEventError(f"{what} is a {type(text).__name__}, not bytes")
    try:
        return json.loads(text)
    # JSONDecodeError and UnicodeDecodeError are ValueErrors; deep nesting is a RecursionError
    except (ValueError, RecursionError) as exc:
        raise MalformedEventError(f"{what} is not JSON: {exc}") from None


def _validated(model: type[_M], data: object, what: str) -> _M:
    if not isinstance(data, dict):
        raise MalformedEventError(f"{what} is a JSON {type(data).__name__}, not an object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()[:3]
        )
        raise MalformedEventError(f"{what}: {problems}") from None


def _parse_time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedEventError(f"{text!r} is not a timestamp") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
