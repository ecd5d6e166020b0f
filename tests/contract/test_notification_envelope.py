"""The Neutron notification contract, checked against every message captured from Neutron 29.

The fixtures are the source of truth (``../shared/fixtures/neutron/``). If
they are missing, these tests fail — a contract that is not checked is not
a contract.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from astara.bus import BusUnavailableError, EmbeddedBus, EmbeddedSubscription
from astara.network.notify import Notifier
from astara.wire.neutron_events import (
    CONTENT_TYPE,
    CONTEXT_KEYS,
    ENVELOPE_KEYS,
    EXCHANGE,
    MESSAGE_KEYS,
    ROUTING_KEY,
    MalformedEventError,
    RequestContext,
    decode_notification,
    encode_notification,
    new_request_id,
)
from tests.fixtures import NEUTRON

FIXTURES = NEUTRON
NOTIFICATIONS = FIXTURES / "notifications"

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NOW = datetime(2026, 11, 25, 11, 31, 34, 617890, tzinfo=UTC)


def _fixture_paths() -> list[Path]:
    # A placeholder when the directory is missing, so each test fails (not skips) with the reason.
    return sorted(NOTIFICATIONS.glob("*.json")) or [NOTIFICATIONS / "<no fixtures found>"]


FIXTURE_PATHS = _fixture_paths()


def _load(path: Path) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    """The raw body, the outer envelope and the inner message of one fixture."""
    if not path.is_file():
        pytest.fail(
            f"the Neutron notification fixtures are missing: expected {NOTIFICATIONS}/*.json "
            "(captured from Neutron 29; see ../shared/fixtures/neutron/README.md)",
            pytrace=False,
        )
    raw = path.read_bytes()
    outer = json.loads(raw)
    return raw, outer, json.loads(outer["oslo.message"])


def _all_inner() -> list[dict[str, Any]]:
    return [_load(p)[2] for p in FIXTURE_PATHS]


def _context(*, admin: bool = False) -> RequestContext:
    if admin:
        return RequestContext(
            project_id="fake_project_id",
            is_admin=True,
            roles=("reader", "member", "admin"),
            request_id=new_request_id(),
        )
    return RequestContext(
        project_id="proj-a",
        user_id="user-a",
        roles=("member", "reader"),
        request_id=new_request_id(),
    )


@pytest.fixture
async def bus() -> AsyncIterator[EmbeddedBus]:
    async with EmbeddedBus() as made:
        yield made


@pytest.fixture
async def received(bus: EmbeddedBus) -> EmbeddedSubscription:
    """What a consumer bound like the orchestrator (``neutron`` / ``notifications.info``) gets."""
    return await bus.subscribe(exchange=EXCHANGE, binding=ROUTING_KEY)


async def _next_body(sub: EmbeddedSubscription) -> bytes:
    message = await asyncio.wait_for(anext(sub), timeout=1)
    assert (message.exchange, message.routing_key) == (EXCHANGE, ROUTING_KEY)
    assert message.content_type == CONTENT_TYPE
    return message.body


def test_the_fixtures_are_there() -> None:
    assert NOTIFICATIONS.is_dir(), f"missing {NOTIFICATIONS}: the contract cannot be checked"
    names = [p.name for p in FIXTURE_PATHS]
    assert len(names) >= 20, f"expected the captured Neutron notifications, found {names}"
    decoded = sorted(p.name for p in (NOTIFICATIONS / "decoded").glob("*.json"))
    assert decoded == names


@pytest.mark.parametrize("path", FIXTURE_PATHS, ids=lambda p: p.name)
def test_every_fixture_decodes_to_what_neutron_sent(path: Path) -> None:
    raw, _outer, inner = _load(path)
    readable = json.loads((NOTIFICATIONS / "decoded" / path.name).read_text())
    assert readable["oslo.message (decoded)"] == inner
    amqp = readable["amqp"]
    assert (amqp["exchange"], amqp["routing_key"], amqp["content_type"]) == (
        EXCHANGE,
        ROUTING_KEY,
        CONTENT_TYPE,
    )

    event = decode_notification(raw)

    assert event.event_type == inner["event_type"] == path.name.rsplit(".", 2)[0]
    assert event.payload == inner["payload"]
    assert (event.publisher_id, event.priority) == (inner["publisher_id"], "INFO")
    assert (event.message_id, event.unique_id) == (inner["message_id"], inner["_unique_id"])
    assert event.timestamp.tzinfo is UTC
    assert str(event.timestamp.replace(tzinfo=None)) == inner["timestamp"]
    ctx = event.context
    assert ctx.project_id == inner["_context_project_id"]
    assert ctx.user_id == inner["_context_user_id"]
    assert ctx.is_admin is inner["_context_is_admin"]
    assert list(ctx.roles) == inner["_context_roles"]
    assert ctx.request_id == inner["_context_request_id"]
    assert ctx.started_at is not None
    assert str(ctx.started_at.replace(tzinfo=None)) == inner["_context_timestamp"]


@pytest.mark.parametrize("path", FIXTURE_PATHS, ids=lambda p: p.name)
def test_reencoding_a_fixture_gives_back_its_exact_bytes(path: Path) -> None:
    raw, _outer, _inner = _load(path)
    event = decode_notification(raw)
    again = encode_notification(
        event_type=event.event_type,
        payload=event.payload,
        context=event.context,
        publisher_id=event.publisher_id,
        timestamp=event.timestamp,
        message_id=event.message_id,
        unique_id=event.unique_id,
    )
    assert again == raw


def test_the_declared_key_lists_are_the_fixtures_keys() -> None:
    for inner in _all_inner():
        assert list(inner) == [*MESSAGE_KEYS, *CONTEXT_KEYS]


@pytest.mark.parametrize("path", FIXTURE_PATHS, ids=lambda p: p.name)
@pytest.mark.parametrize("admin", [False, True], ids=["member", "admin"])
async def test_the_notifier_envelope_has_the_fixture_keys_types_and_formats(
    path: Path, admin: bool, bus: EmbeddedBus, received: EmbeddedSubscription
) -> None:
    _raw, outer, inner = _load(path)
    notifier = Notifier(bus=bus, host="vm", clock=lambda: NOW)

    assert await notifier.emit(
        _context(admin=admin), event_type=inner["event_type"], payload=inner["payload"]
    )
    ours_outer = json.loads(await _next_body(received))
    ours = json.loads(ours_outer["oslo.message"])

    assert list(ours_outer) == list(outer) == list(ENVELOPE_KEYS)
    assert ours_outer["oslo.version"] == outer["oslo.version"] == "2.0"
    assert list(ours) == list(inner)
    assert (ours["event_type"], ours["priority"]) == (inner["event_type"], inner["priority"])
    assert ours["publisher_id"] == inner["publisher_id"] == "network.vm"
    for key in ("timestamp", "_context_timestamp"):
        assert TIMESTAMP.match(inner[key]) and TIMESTAMP.match(ours[key]), key
    assert ours["timestamp"] == "2026-11-25 11:31:34.617890"
    assert UUID.match(ours["message_id"]) and UUID.match(inner["message_id"])
    assert HEX32.match(ours["_unique_id"]) and HEX32.match(inner["_unique_id"])
    assert REQUEST_ID.match(ours["_context_request_id"])
    assert REQUEST_ID.match(inner["_context_request_id"])
    seen_types: dict[str, set[type]] = {}
    for other in _all_inner():
        for key, value in other.items():
            seen_types.setdefault(key, set()).add(type(value))
    for key, value in ours.items():
        assert type(value) in seen_types[key], f"{key}: {type(value).__name__}"


def _payload_builder_call(notifier: Notifier, event_type: str, payload: dict[str, Any]) -> Any:
    """The Notifier method the API calls for this event, with what the API would hand it."""
    ctx = _context()
    if event_type == "router.interface.create":
        return notifier.router_interface_added(ctx, info=payload["router_interface"])
    if event_type == "router.interface.delete":
        return notifier.router_interface_removed(ctx, info=payload["router_interface"])
    resource, operation = event_type.rsplit(".", 1)[0].rsplit(".", 1)
    phase = event_type.rsplit(".", 1)[1]
    match operation, phase:
        case "create", "start":
            return notifier.create_start(ctx, resource=resource, body=payload)  # type: ignore[arg-type]
        case "create", "end":
            return notifier.create_end(ctx, resource=resource, result=payload[resource])  # type: ignore[arg-type]
        case "update", "start":
            body = {k: v for k, v in payload.items() if k != "id"}
            return notifier.update_start(
                ctx,
                resource=resource,  # type: ignore[arg-type]
                resource_id=payload["id"],
                body=body,
            )
        case "update", "end":
            return notifier.update_end(ctx, resource=resource, result=payload[resource])  # type: ignore[arg-type]
        case "delete", "end":
            return notifier.delete_end(
                ctx,
                resource=resource,  # type: ignore[arg-type]
                resource_id=payload[f"{resource}_id"],
                last_state=payload[resource],
            )
    pytest.fail(f"no Notifier method covers the captured event type {event_type}")


@pytest.mark.parametrize("path", FIXTURE_PATHS, ids=lambda p: p.name)
async def test_the_payload_builders_give_the_fixture_payloads(
    path: Path, bus: EmbeddedBus, received: EmbeddedSubscription
) -> None:
    _raw, _outer, inner = _load(path)
    notifier = Notifier(bus=bus, host="vm", clock=lambda: NOW)

    assert await _payload_builder_call(notifier, inner["event_type"], inner["payload"])
    event = decode_notification(await _next_body(received))

    assert event.event_type == inner["event_type"]
    assert sorted(event.payload) == sorted(inner["payload"])
    assert event.payload == inner["payload"]


async def test_payloads_without_a_fixture_follow_neutrons_controller(
    bus: EmbeddedBus, received: EmbeddedSubscription
) -> None:
    notifier = Notifier(bus=bus, host="vm", clock=lambda: NOW)
    ctx = _context()
    await notifier.delete_start(ctx, resource="router", resource_id="r-1")
    body = {"networks": [{"name": "a"}, {"name": "b"}]}
    await notifier.create_start(ctx, resource="network", body=body)
    await notifier.bulk_create_end(ctx, resource="network", results=[{"id": "1"}, {"id": "2"}])

    events = [decode_notification(await _next_body(received)) for _ in range(3)]
    assert [(e.event_type, dict(e.payload)) for e in events] == [
        ("router.delete.start", {"router_id": "r-1"}),
        ("network.create.start", body),
        ("network.create.end", {"networks": [{"id": "1"}, {"id": "2"}]}),
    ]


async def test_the_notifier_stamps_time_context_and_publisher(
    bus: EmbeddedBus, received: EmbeddedSubscription
) -> None:
    started = datetime(2026, 11, 25, 12, 31, 34, 1, tzinfo=timezone(timedelta(hours=1)))
    ctx = RequestContext(
        project_id="proj-a",
        user_id="user-a",
        roles=("member",),
        request_id="req-00000000-0000-4000-8000-000000000000",
        global_request_id="req-11111111-1111-4111-8111-111111111111",
        started_at=started,
    )
    notifier = Notifier(bus=bus, host="net-1", clock=lambda: NOW)
    await notifier.update_end(ctx, resource="port", result={"id": "p"})
    inner = json.loads(json.loads(await _next_body(received))["oslo.message"])

    assert inner["publisher_id"] == notifier.publisher_id == "network.net-1"
    assert inner["timestamp"] == "2026-11-25 11:31:34.617890"
    assert inner["_context_timestamp"] == "2026-11-25 11:31:34.000001"
    assert inner["_context_user_identity"] == "user-a proj-a - - -"
    assert inner["_context_global_request_id"] == "req-11111111-1111-4111-8111-111111111111"
    assert inner["_context_auth_token"] is None
    assert (notifier.published, notifier.failed) == (1, 0)


class _DownBus(EmbeddedBus):
    async def publish(self, **_: Any) -> None:
        raise BusUnavailableError("broker down")


class _BuggyBus(EmbeddedBus):
    async def publish(self, **_: Any) -> None:
        raise RuntimeError("a transport bug")


class _StuckBus(EmbeddedBus):
    async def publish(self, **_: Any) -> None:
        await asyncio.Event().wait()


@pytest.mark.parametrize("make_bus", [_DownBus, _BuggyBus, _StuckBus, EmbeddedBus])
async def test_a_bus_failure_never_fails_the_request(
    make_bus: type[EmbeddedBus], caplog: pytest.LogCaptureFixture
) -> None:
    bus = make_bus()
    await bus.close()  # only matters to EmbeddedBus itself: publish after close
    notifier = Notifier(bus=bus, host="vm", timeout=0.05)
    with caplog.at_level(logging.WARNING, logger="astara.network.notify"):
        ok = await notifier.create_end(_context(), resource="network", result={"id": "n"})
    assert ok is False
    assert (notifier.published, notifier.failed) == (0, 1)
    assert any("network.create.end" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_a_payload_that_is_not_json_is_counted_not_raised(bus: EmbeddedBus) -> None:
    notifier = Notifier(bus=bus, host="vm")
    assert not await notifier.create_end(_context(), resource="network", result={"x": object()})
    assert not await notifier.update_end(_context(), resource="port", result={"x": float("nan")})
    assert (notifier.failed, bus.published) == (2, 0)


def _body(message: Any, *, version: Any = "2.0") -> bytes:
    inner = message if isinstance(message, str) else json.dumps(message)
    return json.dumps({"oslo.version": version, "oslo.message": inner}).encode()


def _good_message(**changes: Any) -> dict[str, Any]:
    message = {
        "message_id": "m",
        "publisher_id": "network.vm",
        "event_type": "router.update.end",
        "priority": "INFO",
        "payload": {"router": {"id": "r"}},
        "timestamp": "2026-11-25 11:31:34.617890",
    }
    message.update(changes)
    return {k: v for k, v in message.items() if v is not ...}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b"\xff\xfe\x00{", id="not-utf8"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
        pytest.param(b"[]", id="outer-list"),
        pytest.param(b'"text"', id="outer-string"),
        pytest.param(b'{"oslo.version": "2.0"}', id="no-oslo.message"),
        pytest.param(b'{"oslo.message": "{}"}', id="no-oslo.version"),
        pytest.param(_body(_good_message(), version="1.0"), id="other-version"),
        pytest.param(
            json.dumps({"oslo.version": "2.0", "oslo.message": {}}).encode(), id="inner-object"
        ),
        pytest.param(_body("{"), id="inner-not-json"),
        pytest.param(_body("[1]"), id="inner-list"),
        pytest.param(_body(_good_message(event_type=...)), id="no-event_type"),
        pytest.param(_body(_good_message(event_type="")), id="empty-event_type"),
        pytest.param(_body(_good_message(event_type=7)), id="event_type-int"),
        pytest.param(_body(_good_message(payload=...)), id="no-payload"),
        pytest.param(_body(_good_message(payload=[1])), id="payload-list"),
        pytest.param(_body(_good_message(publisher_id=...)), id="no-publisher_id"),
        pytest.param(_body(_good_message(timestamp="yesterday")), id="bad-timestamp"),
        pytest.param(_body(_good_message(_context_roles="admin")), id="roles-string"),
        pytest.param(_body(_good_message(_context_is_admin="yes")), id="is_admin-string"),
        pytest.param(_body(_good_message(_context_timestamp="soon")), id="bad-context-time"),
    ],
)
def test_malformed_bodies_raise_malformed_event_and_nothing_else(body: bytes) -> None:
    with pytest.raises(MalformedEventError) as caught:
        decode_notification(body)
    assert caught.value.reason
    assert isinstance(caught.value, ValueError)


def test_a_body_that_is_not_bytes_is_malformed_too() -> None:
    with pytest.raises(MalformedEventError):
        decode_notification(None)  # type: ignore[arg-type]


def test_older_neutron_context_keys_are_read() -> None:
    body = _body(_good_message(_context_tenant_id="t-1", _context_user="u-1"))
    event = decode_notification(body)
    assert (event.context.project_id, event.context.user_id) == ("t-1", "u-1")
    assert (event.context.roles, event.context.request_id, event.context.started_at) == (
        (),
        "",
        None,
    )
    assert event.unique_id is None


def test_encoding_refuses_naive_times_and_empty_event_types() -> None:
    args: dict[str, Any] = {
        "payload": {},
        "context": _context(),
        "publisher_id": "network.vm",
    }
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_notification(event_type="a.b", timestamp=datetime(2026, 1, 1), **args)
    with pytest.raises(ValueError, match="event_type"):
        encode_notification(event_type="", timestamp=NOW, **args)
