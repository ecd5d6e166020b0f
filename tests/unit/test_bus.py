"""The embedded bus: AMQP topic routing, fan-out, overflow, close, no leaked tasks; URL choice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from astara.bus import (
    Binding,
    Bus,
    BusClosedError,
    EmbeddedBus,
    EmbeddedSubscription,
    InvalidBusUrlError,
    Message,
    bus_from_url,
)

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


@pytest.fixture
async def bus() -> AsyncIterator[EmbeddedBus]:
    async with EmbeddedBus() as made:
        yield made


async def _publish(bus: Bus, key: str, body: bytes = b"{}", exchange: str = "neutron") -> None:
    await bus.publish(exchange=exchange, routing_key=key, body=body)


async def _drain(sub: EmbeddedSubscription) -> list[Message]:
    """What is queued now (the embedded bus delivers synchronously, so nothing is in flight)."""
    return [await anext(sub) for _ in range(sub.pending)]


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("notifications.info", "notifications.info", True),
        ("notifications.info", "notifications.error", False),
        ("notifications.*", "notifications.info", True),
        ("notifications.*", "notifications", False),
        ("notifications.*", "notifications.info.extra", False),
        ("*.info", "notifications.info", True),
        ("*", "a", True),
        ("*", "", False),
        ("*", "a.b", False),
        ("#", "", True),
        ("#", "a", True),
        ("#", "a.b.c", True),
        ("#.#", "", True),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("a.#", "b.a", False),
        ("#.info", "info", True),
        ("#.info", "notifications.info", True),
        ("#.info", "notifications.info.x", False),
        ("*.#.c", "a.c", True),
        ("*.#.c", "a.b.b.c", True),
        ("*.#.c", "c", False),
        ("a.#.b", "a.b.b", True),
        ("a.#.b.#", "a.x.b.y.z", True),
        ("a.*.#.d", "a.d", False),
        ("a.*.#.d", "a.b.d", True),
        ("a.*.b", "a..b", True),  # an empty word is a word
        ("a.*", "a.*", True),
        ("a.b", "a.*", False),  # '*' in a routing key is an ordinary character
        ("", "", True),
        ("", "a", False),
        ("Notifications.info", "notifications.info", False),
    ],
)
def test_topic_matching_follows_amqp(pattern: str, key: str, expected: bool) -> None:
    assert Binding(pattern).matches(key) is expected


async def test_fan_out_reaches_every_matching_subscription_only(bus: EmbeddedBus) -> None:
    info = await bus.subscribe(exchange="neutron", binding="notifications.info")
    every = await bus.subscribe(exchange="neutron", binding="#")
    errors = await bus.subscribe(exchange="neutron", binding="*.error")
    other = await bus.subscribe(exchange="nova", binding="#")

    await _publish(bus, "notifications.info", b"1")
    await _publish(bus, "notifications.error", b"2")
    await _publish(bus, "unbound", b"3", exchange="glance")

    assert [m.body for m in await _drain(info)] == [b"1"]
    assert [m.body for m in await _drain(every)] == [b"1", b"2"]
    assert [m.body for m in await _drain(errors)] == [b"2"]
    assert await _drain(other) == []
    assert (bus.published, bus.unrouted) == (3, 1)


async def test_subscribers_share_one_immutable_message_in_publish_order(bus: EmbeddedBus) -> None:
    first = await bus.subscribe(exchange="neutron", binding="#")
    second = await bus.subscribe(exchange="neutron", binding="#")
    for n in range(5):
        await bus.publish(
            exchange="neutron", routing_key="k", body=str(n).encode(), content_type="text/plain"
        )
    got_first, got_second = await _drain(first), await _drain(second)
    assert [m.body for m in got_first] == [b"0", b"1", b"2", b"3", b"4"]
    assert all(a is b for a, b in zip(got_first, got_second, strict=True))
    assert got_first[0] == Message(
        exchange="neutron", routing_key="k", body=b"0", content_type="text/plain"
    )
    with pytest.raises(AttributeError):
        got_first[0].body = b"x"  # type: ignore[misc]


async def test_only_messages_published_after_subscribe_arrive(bus: EmbeddedBus) -> None:
    await _publish(bus, "k", b"before")
    sub = await bus.subscribe(exchange="neutron", binding="k")
    await _publish(bus, "k", b"after")
    assert [m.body for m in await _drain(sub)] == [b"after"]


async def test_a_waiting_consumer_is_woken_by_publish(bus: EmbeddedBus) -> None:
    sub = await bus.subscribe(exchange="neutron", binding="notifications.*")
    waiting = asyncio.create_task(anext(sub))
    await asyncio.sleep(0)
    assert not waiting.done()
    await _publish(bus, "notifications.info", b"hello")
    message = await asyncio.wait_for(waiting, timeout=1)
    assert (message.routing_key, message.body) == ("notifications.info", b"hello")


async def test_overflow_drops_the_oldest_counts_and_logs_once(
    bus: EmbeddedBus, caplog: pytest.LogCaptureFixture
) -> None:
    slow = await bus.subscribe(exchange="neutron", binding="#", max_pending=3)
    fast = await bus.subscribe(exchange="neutron", binding="#")
    with caplog.at_level(logging.WARNING, logger="astara.bus.embedded"):
        for n in range(5):
            await _publish(bus, "k", str(n).encode())
    assert [m.body for m in await _drain(slow)] == [b"2", b"3", b"4"]
    assert [m.body for m in await _drain(fast)] == [b"0", b"1", b"2", b"3", b"4"]
    assert (slow.dropped, fast.dropped, bus.dropped) == (2, 0, 2)
    warnings = [r for r in caplog.records if r.name == "astara.bus.embedded"]
    assert len(warnings) == 1
    assert "dropped" in warnings[0].getMessage()


async def test_a_stuck_consumer_never_blocks_the_publisher() -> None:
    async with EmbeddedBus(max_pending=10) as bus:
        sub = await bus.subscribe(exchange="neutron", binding="#")
        async with asyncio.timeout(5):
            for n in range(20_000):
                await _publish(bus, "k", str(n).encode())
        assert (sub.pending, sub.dropped) == (10, 19_990)
        assert [m.body for m in await _drain(sub)][-1] == b"19999"


async def test_closing_a_subscription_ends_iteration_discards_and_unbinds(
    bus: EmbeddedBus,
) -> None:
    sub = await bus.subscribe(exchange="neutron", binding="#", max_pending=1)
    await _publish(bus, "k", b"1")
    await _publish(bus, "k", b"2")  # drops b"1"

    async def consume() -> list[bytes]:
        return [m.body async for m in sub]

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)
    assert not consumer.done()  # it took b"2" and waits for more
    await sub.close()
    assert await asyncio.wait_for(consumer, timeout=1) == [b"2"]
    await sub.close()  # idempotent
    assert sub.closed and bus.subscriptions() == []

    await _publish(bus, "k", b"3")
    assert bus.unrouted == 1
    assert bus.dropped == 1  # a closed subscription's drops stay counted
    with pytest.raises(StopAsyncIteration):
        await anext(sub)


async def test_closing_the_bus_ends_every_subscription_and_refuses_use() -> None:
    bus = EmbeddedBus()
    subs = [await bus.subscribe(exchange="neutron", binding=b) for b in ("#", "a.*", "b")]
    await _publish(bus, "a.x")  # queued for "#" and "a.*"
    waiting = asyncio.create_task(anext(subs[2], None))
    await asyncio.sleep(0)
    assert not waiting.done()

    await bus.close()
    await bus.close()  # idempotent

    assert await asyncio.wait_for(waiting, timeout=1) is None
    assert all(s.closed and s.pending == 0 for s in subs)
    assert [await anext(s, None) for s in subs] == [None, None, None]
    assert bus.closed and bus.subscriptions() == []
    with pytest.raises(BusClosedError):
        await _publish(bus, "a.x")
    with pytest.raises(BusClosedError):
        await bus.subscribe(exchange="neutron", binding="#")


async def test_the_bus_itself_starts_no_task(bus: EmbeddedBus) -> None:
    before = asyncio.all_tasks()
    sub = await bus.subscribe(exchange="neutron", binding="#")
    for _ in range(100):
        await _publish(bus, "k")
    await sub.close()
    assert asyncio.all_tasks() == before


async def test_max_pending_must_be_positive(bus: EmbeddedBus) -> None:
    with pytest.raises(ValueError, match="max_pending"):
        await bus.subscribe(exchange="neutron", binding="#", max_pending=0)
    with pytest.raises(ValueError, match="max_pending"):
        EmbeddedBus(max_pending=0)


async def test_embedded_url_gives_an_embedded_bus_with_its_options() -> None:
    bus = bus_from_url("embedded://?max_pending=2")
    assert isinstance(bus, EmbeddedBus)
    sub = await bus.subscribe(exchange="neutron", binding="#")
    for n in range(3):
        await _publish(bus, "k", str(n).encode())
    assert sub.dropped == 1
    await bus.close()
    assert isinstance(bus_from_url("embedded://"), EmbeddedBus)
    assert isinstance(bus_from_url("EMBEDDED://"), EmbeddedBus)


def test_amqp_and_rabbit_urls_make_the_amqp_transport_without_connecting() -> None:
    from astara.bus.amqp import AmqpBus

    for url in (
        "amqp://guest:s3cret@rabbit.example:5672/",
        "rabbit://guest:s3cret@rabbit.example/",
    ):
        bus = bus_from_url(url)
        assert isinstance(bus, AmqpBus)
        assert "s3cret" not in repr(bus)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("kafka://broker:9092", "unknown bus transport kafka://"),
        ("", "without a scheme"),
        ("localhost:5672", "unknown bus transport"),
        ("embedded://somewhere", "no host or path"),
        ("embedded:///path", "no host or path"),
        ("embedded://?queue=1", "unknown embedded:// option"),
        ("embedded://?max_pending=0", "max_pending"),
        ("embedded://?max_pending=lots", "max_pending"),
        ("embedded://?max_pending=1&max_pending=2", "max_pending"),
        ("embedded://?max_pending", "key=value"),
    ],
)
def test_bad_urls_raise_a_clear_error_without_echoing_secrets(url: str, says: str) -> None:
    with pytest.raises(InvalidBusUrlError, match=says) as caught:
        bus_from_url(url)
    assert "s3cret" not in str(caught.value)
    assert isinstance(caught.value, ValueError)
