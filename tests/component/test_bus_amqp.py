"""The AMQP bus against the real RabbitMQ at 127.0.0.1:5672 (guest/guest).

Every exchange and queue a test declares is named ``astara-test-<random>…``
and deleted after it. When the broker is down the tests fail, never skip,
with a one-line reason.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection

from astara.bus import (
    JSON,
    Bus,
    BusClosedError,
    BusError,
    BusUnavailableError,
    InvalidBusUrlError,
    Message,
    bus_from_url,
)
from astara.bus.amqp import DEFAULT_PREFETCH, AmqpBus, AmqpSubscription, parse_amqp_url
from astara.network.notify import Notifier
from astara.wire.neutron_events import (
    CONTENT_TYPE,
    EXCHANGE,
    ROUTING_KEY,
    RequestContext,
    decode_notification,
)

BROKER = "127.0.0.1:5672"
GUEST = f"amqp://guest:guest@{BROKER}/"


@dataclass
class Broker:
    """An admin connection to the broker, and the names this test declared (deleted after)."""

    prefix: str
    connection: AbstractConnection
    channel: AbstractChannel
    queues: set[str] = field(default_factory=set)
    exchanges: set[str] = field(default_factory=set)

    def exchange(self, tag: str = "neutron") -> str:
        name = f"{self.prefix}-{tag}"
        self.exchanges.add(name)
        return name

    def queue(self, tag: str = "q") -> str:
        name = f"{self.prefix}-{tag}"
        self.queues.add(name)
        return name

    def url(self, queue: str, **options: object) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"queue": queue, **options}.items())
        return f"rabbit://guest:guest@{BROKER}/?{query}"

    async def ready_count(self, queue: str) -> int:
        """Messages ready in ``queue`` (not delivered, or delivered and not acked: not counted)."""
        channel = await self.connection.channel()  # a NOT_FOUND closes the channel it came on
        try:
            declared = await channel.declare_queue(queue, passive=True)
        finally:
            if not channel.is_closed:
                await channel.close()
        count = declared.declaration_result.message_count
        assert count is not None
        return count


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    try:
        connection: AbstractConnection = await aio_pika.connect(GUEST, timeout=5)
    except Exception as exc:
        pytest.fail(
            f"RabbitMQ at {BROKER} (guest/guest) is not usable: {type(exc).__name__}: {exc}"
        )
    try:
        made = Broker(
            prefix=f"astara-test-{secrets.token_hex(4)}",
            connection=connection,
            channel=await connection.channel(),
        )
        yield made
        cleanup = await connection.channel()
        for queue in sorted(made.queues):
            await cleanup.queue_delete(queue, if_unused=False, if_empty=False)
        for exchange in sorted(made.exchanges):
            await cleanup.exchange_delete(exchange, if_unused=False)
        await cleanup.close()
    finally:
        await connection.close()


async def _next(sub: AmqpSubscription, timeout: float = 5) -> Message:
    return await asyncio.wait_for(anext(sub), timeout)


async def _publish(bus: Bus, exchange: str, key: str, body: bytes) -> None:
    await bus.publish(exchange=exchange, routing_key=key, body=body)


async def test_round_trip_follows_the_binding(broker: Broker) -> None:
    exchange = broker.exchange()
    made = bus_from_url(broker.url(broker.queue()))
    assert isinstance(made, AmqpBus)
    async with made as bus:
        sub = await bus.subscribe(exchange=exchange, binding="notifications.*")
        await _publish(bus, exchange, "notifications.info", b"1")
        await _publish(bus, exchange, "other.info", b"not for us")
        await _publish(bus, exchange, "notifications.error", b"2")
        await _publish(bus, exchange, "notifications.info.extra", b"not for us either")
        await bus.publish(
            exchange=exchange, routing_key="notifications.info", body=b"3", content_type="text/x"
        )
        got = [await _next(sub) for _ in range(3)]
        assert got == [
            Message(exchange=exchange, routing_key="notifications.info", body=b"1"),
            Message(exchange=exchange, routing_key="notifications.error", body=b"2"),
            Message(
                exchange=exchange,
                routing_key="notifications.info",
                body=b"3",
                content_type="text/x",
            ),
        ]
        await sub.ack()
        assert await broker.ready_count(sub.queue_name) == 0  # nothing else was routed to it
        assert (sub.delivered, sub.acked, bus.published) == (3, 3, 5)


async def test_every_subscription_with_its_own_queue_gets_every_message(broker: Broker) -> None:
    exchange = broker.exchange()
    first_queue, second_queue = broker.queue("a"), broker.queue("b")
    async with (
        AmqpBus.from_url(broker.url(first_queue)) as first,
        AmqpBus.from_url(broker.url(second_queue, durable="false")) as second,
    ):
        one = await first.subscribe(exchange=exchange, binding="notifications.*")
        two = await second.subscribe(exchange=exchange, binding="#")
        for n in range(5):
            await _publish(first, exchange, "notifications.info", str(n).encode())
        await _publish(second, exchange, "x.y", b"only #")
        assert [(await _next(one)).body for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]
        assert [(await _next(two)).body for _ in range(6)] == [
            b"0",
            b"1",
            b"2",
            b"3",
            b"4",
            b"only #",
        ]
        with pytest.raises(BusError, match="already consumed"):
            await first.subscribe(exchange=exchange, binding="#")


async def test_the_queue_name_template_gives_one_queue_per_exchange(broker: Broker) -> None:
    nova, neutron = broker.exchange("nova"), broker.exchange("neutron")
    broker.queues.update({f"{broker.prefix}-q-{nova}", f"{broker.prefix}-q-{neutron}"})
    async with AmqpBus.from_url(broker.url(f"{broker.prefix}-q-{{exchange}}")) as bus:
        a = await bus.subscribe(exchange=nova, binding="#")
        b = await bus.subscribe(exchange=neutron, binding="#")
        assert (a.queue_name, b.queue_name) == (
            f"{broker.prefix}-q-{nova}",
            f"{broker.prefix}-q-{neutron}",
        )
        await _publish(bus, neutron, "k", b"n")
        await _publish(bus, nova, "k", b"v")
        assert ((await _next(a)).body, (await _next(b)).body) == (b"v", b"n")


async def test_a_durable_queue_keeps_what_was_published_while_nobody_consumed(
    broker: Broker,
) -> None:
    exchange, queue = broker.exchange(), broker.queue()
    async with AmqpBus.from_url(broker.url(queue, prefetch=50)) as first:
        sub = await first.subscribe(exchange=exchange, binding="notifications.*")
        await sub.close()  # the queue stays, bound
    async with AmqpBus.from_url(broker.url(queue)) as publisher:
        for n in range(1000):
            await _publish(publisher, exchange, "notifications.info", b"%d" % n)
    assert await broker.ready_count(queue) == 1000
    async with AmqpBus.from_url(broker.url(queue, prefetch=50)) as again:
        sub = await again.subscribe(exchange=exchange, binding="notifications.*")
        bodies = [(await _next(sub)).body for _ in range(1000)]
        assert bodies == [b"%d" % n for n in range(1000)]
        assert sub.max_unacked <= 50
        await sub.ack()
    assert await broker.ready_count(queue) == 0


async def test_prefetch_bounds_the_unacknowledged_deliveries(broker: Broker) -> None:
    exchange, queue = broker.exchange(), broker.queue()
    async with AmqpBus.from_url(broker.url(queue, prefetch=10)) as bus:
        sub = await bus.subscribe(exchange=exchange, binding="#")
        for n in range(200):
            await _publish(bus, exchange, "k", b"%d" % n)
        async with asyncio.timeout(5):
            while sub.unacked < 10:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # time for more to arrive, if the broker ignored prefetch
        assert (sub.unacked, sub.delivered) == (10, 10)
        assert await broker.ready_count(queue) == 190  # the broker holds back the rest
        for n in range(200):
            assert (await _next(sub)).body == b"%d" % n
            assert sub.unacked <= 10
        await sub.ack()
        assert sub.max_unacked == 10
        assert await broker.ready_count(queue) == 0


async def test_an_unacknowledged_message_is_redelivered_to_the_next_consumer(
    broker: Broker,
) -> None:
    exchange, queue = broker.exchange(), broker.queue()
    async with AmqpBus.from_url(broker.url(queue, prefetch=5)) as bus:
        sub = await bus.subscribe(exchange=exchange, binding="#")
        for n in range(3):
            await _publish(bus, exchange, "k", b"%d" % n)
        assert (await _next(sub)).body == b"0"
        assert (await _next(sub)).body == b"1"  # acknowledges b"0"
        await sub.close()  # b"1" in hand, b"2" buffered: neither acknowledged
        sub = await bus.subscribe(exchange=exchange, binding="#")
        assert [(await _next(sub)).body for _ in range(2)] == [b"1", b"2"]


async def test_a_notifier_envelope_round_trips_byte_for_byte(broker: Broker) -> None:
    exchange, queue = broker.exchange(EXCHANGE), broker.queue()

    class Prefixed:
        """Notifier publishes to exchange ``neutron``; the test's is ``<prefix>-neutron``."""

        def __init__(self, inner: AmqpBus) -> None:
            self.inner = inner
            self.bodies: list[bytes] = []

        async def publish(
            self, *, exchange: str, routing_key: str, body: bytes, content_type: str = JSON
        ) -> None:
            self.bodies.append(body)
            await self.inner.publish(
                exchange=f"{broker.prefix}-{exchange}",
                routing_key=routing_key,
                body=body,
                content_type=content_type,
            )

    async with AmqpBus.from_url(broker.url(queue)) as bus:
        sub = await bus.subscribe(exchange=exchange, binding="notifications.*")
        wrapped = Prefixed(bus)
        notifier = Notifier(bus=wrapped, host="test-host")  # type: ignore[arg-type]
        ctx = RequestContext(project_id="p1", user_id="u1", request_id="req-1", roles=("admin",))
        assert await notifier.create_end(
            ctx, resource="network", result={"id": "n1", "name": "ünï €", "mtu": 1500}
        )
        received = await _next(sub)
    assert received.body == wrapped.bodies[0]
    assert (received.routing_key, received.content_type) == (ROUTING_KEY, CONTENT_TYPE)
    decoded = decode_notification(received.body)
    assert (decoded.event_type, decoded.payload["network"]["name"]) == (
        "network.create.end",
        "ünï €",
    )


async def test_a_bare_delivery_becomes_a_message_with_defaults(broker: Broker) -> None:
    exchange, queue = broker.exchange(), broker.queue()
    async with AmqpBus.from_url(broker.url(queue)) as bus:
        sub = await bus.subscribe(exchange=exchange, binding="#")
        raw = await broker.channel.get_exchange(exchange)
        await raw.publish(aio_pika.Message(b""), routing_key="")  # no body, no properties
        assert await _next(sub) == Message(exchange=exchange, routing_key="", body=b"")


class Outage:
    """A TCP proxy to the broker that can cut every connection and refuse new ones: a restart."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.up = True
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        host, port = BROKER.split(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self.writers |= {writer, up_writer}
        for a, b in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(a, b))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()

    def cut(self) -> None:
        """Drop every connection at once (no AMQP close), as a crashing broker does."""
        self.up = False
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _until_declared(broker: Broker, queue: str) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                await broker.ready_count(queue)
                return
            except aio_pika.exceptions.ChannelNotFoundEntity:
                await asyncio.sleep(0.05)


async def test_after_an_outage_the_queue_and_its_binding_are_restored(broker: Broker) -> None:
    exchange, queue = broker.exchange(), broker.queue()
    outage = Outage()
    await outage.start()
    url = f"amqp://guest:guest@127.0.0.1:{outage.port}/?queue={queue}&durable=false&reconnect_interval=0.2&timeout=1"
    try:
        async with AmqpBus.from_url(url) as bus:
            sub = await bus.subscribe(exchange=exchange, binding="notifications.*")
            await _publish(bus, exchange, "notifications.info", b"before")
            assert (await _next(sub)).body == b"before"

            outage.cut()  # the broker "restarts": the auto-delete queue goes with the connection
            async with asyncio.timeout(10):
                while True:
                    try:
                        await broker.ready_count(queue)
                        await asyncio.sleep(0.05)
                    except aio_pika.exceptions.ChannelNotFoundEntity:
                        break
            with pytest.raises(BusUnavailableError):  # down: refused within the timeout
                await _publish(bus, exchange, "notifications.info", b"lost")

            outage.up = True
            await _until_declared(broker, queue)  # re-declared by the restored channel...
            raw = await broker.channel.get_exchange(exchange)
            await raw.publish(aio_pika.Message(b"after"), routing_key="notifications.error")
            assert (await _next(sub, timeout=10)).body == b"after"  # ...bound and consumed
            assert sub.discarded == 0 and sub.acked == 0  # b"before" could not be acknowledged

            async with asyncio.timeout(10):  # and the publisher channel is back too
                while True:
                    try:
                        await _publish(bus, exchange, "notifications.info", b"again")
                        break
                    except BusUnavailableError:
                        await asyncio.sleep(0.1)
            assert (await _next(sub)).body == b"again"
    finally:
        await outage.stop()


async def test_a_restored_subscription_tells_its_listeners_once_bound_again(
    broker: Broker,
) -> None:
    """The gap: what was published while the connection was lost never reached the queue (an
    auto-delete queue, or a transient exchange after a broker restart). ``on_restored`` is called
    once per restoration, when the queue is bound and consumed again: a publish from the
    listener on is delivered."""
    exchange, queue = broker.exchange(), broker.queue()
    outage = Outage()
    await outage.start()
    url = f"amqp://guest:guest@127.0.0.1:{outage.port}/?queue={queue}&durable=false&reconnect_interval=0.2&timeout=1"
    raw = await broker.channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC)
    heard: list[int] = []
    try:
        async with AmqpBus.from_url(url) as bus:
            sub = await bus.subscribe(exchange=exchange, binding="#")

            async def listener_publishes() -> None:  # as the intake's resync reads, then
                await raw.publish(aio_pika.Message(b"after"), routing_key="k")

            tasks: list[asyncio.Task[None]] = []

            def listener() -> None:
                heard.append(sub.restored)
                tasks.append(asyncio.create_task(listener_publishes()))

            sub.on_restored(listener)
            assert sub.restored == 0
            for gap in (1, 2):
                outage.cut()
                await asyncio.sleep(0.3)
                await raw.publish(aio_pika.Message(b"lost"), routing_key="k")  # no queue: lost
                outage.up = True
                assert (await _next(sub, timeout=10)).body == b"after"
                assert (sub.restored, heard) == (gap, list(range(1, gap + 1)))
            await asyncio.gather(*tasks)
        assert heard == [1, 2]  # closing is no restoration
    finally:
        await outage.stop()


async def test_a_publish_waits_for_the_connection_to_come_back_within_its_timeout(
    broker: Broker,
) -> None:
    """A publish made while the connection is being re-established is taken once it is back
    (within ``timeout``), not refused at once and lost; past the timeout it is refused."""
    exchange, queue = broker.exchange(), broker.queue()
    outage = Outage()
    await outage.start()
    url = f"amqp://guest:guest@127.0.0.1:{outage.port}/?queue={queue}&durable=false&reconnect_interval=0.5&timeout=4"
    try:
        async with AmqpBus.from_url(url) as bus:
            sub = await bus.subscribe(exchange=exchange, binding="#")
            await _publish(bus, exchange, "k", b"before")
            assert (await _next(sub)).body == b"before"
            outage.cut()
            await asyncio.sleep(0.1)
            publishing = asyncio.create_task(_publish(bus, exchange, "k", b"during"))
            await asyncio.sleep(0.5)
            assert not publishing.done()  # waiting for the connection, not refused
            outage.up = True
            await asyncio.wait_for(publishing, 5)
            assert (await _next(sub, timeout=5)).body == b"during"
            assert bus.published == 2

            outage.cut()  # down for longer than the timeout: refused, after it
            started = asyncio.get_running_loop().time()
            with pytest.raises(BusUnavailableError, match="for 4s"):
                await _publish(bus, exchange, "k", b"refused")
            assert 3.5 < asyncio.get_running_loop().time() - started < 6
    finally:
        await outage.stop()


async def test_close_ends_iteration_refuses_use_and_leaves_no_task(broker: Broker) -> None:
    exchange, queue = broker.exchange(), broker.queue()
    before = asyncio.all_tasks()
    bus = AmqpBus.from_url(broker.url(queue))
    sub = await bus.subscribe(exchange=exchange, binding="#")
    await _publish(bus, exchange, "k", b"1")
    assert (await _next(sub)).body == b"1"
    waiting = asyncio.create_task(anext(sub, None))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await bus.close()
    await bus.close()  # idempotent
    assert await asyncio.wait_for(waiting, 1) is None
    assert sub.closed and bus.subscriptions() == []
    with pytest.raises(BusClosedError):
        await _publish(bus, exchange, "k", b"2")
    with pytest.raises(BusClosedError):
        await bus.subscribe(exchange=exchange, binding="#")
    await asyncio.sleep(0.1)
    assert asyncio.all_tasks() == before
    assert await broker.ready_count(queue) == 0  # b"1" was acknowledged before close


async def test_a_broker_that_is_down_gives_bus_unavailable_quickly() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the probe closes
    bus = AmqpBus.from_url(f"amqp://guest:guest@127.0.0.1:{port}/?timeout=2")
    async with asyncio.timeout(10):
        with pytest.raises(BusUnavailableError):
            await _publish(bus, "astara-test-none", "k", b"x")
        with pytest.raises(BusUnavailableError):
            await bus.subscribe(exchange="astara-test-none", binding="#")
    await bus.close()


def test_urls_are_parsed_as_oslo_messaging_writes_them() -> None:
    s = parse_amqp_url("rabbit://openstack:s%40cret@rabbit.example:5673/neutron?prefetch=7")
    assert (s.host, s.port, s.login, s.password, s.virtualhost) == (
        "rabbit.example",
        5673,
        "openstack",
        "s@cret",
        "neutron",
    )
    assert (s.prefetch, s.durable, s.exchange_durable, s.ssl) == (7, True, False, False)
    assert s.queue_name("neutron") == "astara-orchestrator.neutron"
    assert "s@cret" not in repr(s)
    d = parse_amqp_url("amqp://h")
    assert (d.port, d.login, d.password, d.virtualhost, d.prefetch) == (
        5672,
        "guest",
        "guest",
        "/",
        DEFAULT_PREFETCH,
    )
    t = parse_amqp_url("amqps://u:p@h/%2F?queue=mine&durable=false&max_length=5&timeout=0.5")
    assert (t.port, t.ssl, t.virtualhost, t.queue, t.durable, t.max_length, t.timeout) == (
        5671,
        True,
        "/",
        "mine",
        False,
        5,
        0.5,
    )
    assert isinstance(bus_from_url("RABBIT://u:p@h:5672/"), AmqpBus)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("rabbit://guest:s3cret@", "needs a broker host"),
        ("rabbit://guest:s3cret@h:99999/", "does not parse"),
        ("rabbit://guest:s3cret@h:port/", "does not parse"),
        ("rabbit://guest:s3cret@h1:5672,guest:s3cret@h2:5672/", "one broker"),
        ("amqp://guest:s3cret@h/a/b", "one path segment"),
        ("amqp://guest:s3cret@h/?prefetch=0", "prefetch"),
        ("amqp://guest:s3cret@h/?prefetch=many", "prefetch"),
        ("amqp://guest:s3cret@h/?prefetch=1&prefetch=2", "given twice"),
        ("amqp://guest:s3cret@h/?durable=maybe", "durable must be true or false"),
        ("amqp://guest:s3cret@h/?queue=", "queue must be"),
        ("amqp://guest:s3cret@h/?queue=amq.x", "queue must be"),
        ("amqp://guest:s3cret@h/?timeout=-1", "timeout"),
        ("amqp://guest:s3cret@h/?max_pending=3", "unknown amqp:// option"),
        ("amqp://guest:s3cret@h/?prefetch", "key=value"),
    ],
)
def test_bad_amqp_urls_are_refused_without_the_password(url: str, says: str) -> None:
    with pytest.raises(InvalidBusUrlError, match=says) as caught:
        bus_from_url(url)
    assert "s3cret" not in str(caught.value)


async def test_max_pending_caps_the_broker_queue_dropping_the_oldest(broker: Broker) -> None:
    exchange, queue = broker.exchange(), broker.queue()
    async with AmqpBus.from_url(broker.url(queue, prefetch=1)) as bus:
        sub = await bus.subscribe(exchange=exchange, binding="#", max_pending=3)
        for n in range(10):
            await _publish(bus, exchange, "k", b"%d" % n)
        bodies = [(await _next(sub)).body for _ in range(4)]
        # the first was delivered at once (prefetch 1); of the 9 waiting only the newest 3 stayed
        assert bodies == [b"0", b"7", b"8", b"9"]
        with pytest.raises(ValueError, match="max_pending"):
            await bus.subscribe(exchange=exchange, binding="#", max_pending=0)


async def test_an_exchange_declared_otherwise_is_a_bus_error_not_a_crash(broker: Broker) -> None:
    durable, plain = broker.exchange("durable"), broker.exchange()
    await broker.channel.declare_exchange(durable, aio_pika.ExchangeType.TOPIC, durable=True)
    async with AmqpBus.from_url(broker.url(broker.queue())) as bus:
        with pytest.raises(BusError, match="other properties") as caught:
            await _publish(bus, durable, "k", b"x")
        assert not isinstance(caught.value, BusUnavailableError)  # retrying will not help
        await _publish(bus, plain, "k", b"x")  # the bus goes on with other exchanges
    async with AmqpBus.from_url(broker.url(broker.queue(), exchange_durable="true")) as bus:
        sub = await bus.subscribe(exchange=durable, binding="#")
        await _publish(bus, durable, "k", b"matched")
        assert (await _next(sub)).body == b"matched"


async def test_a_delivery_that_is_no_message_is_dropped_and_acknowledged(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    exchange, queue = broker.exchange(), broker.queue()

    class Broken:
        """What aio-pika could hand over if a frame were mangled: no readable body."""

        acked = False
        exchange = "x"
        routing_key = "k"

        @property
        def body(self) -> bytes:
            raise ValueError("no body")

        async def ack(self) -> None:
            self.acked = True

    async with AmqpBus.from_url(broker.url(queue)) as bus:
        sub = await bus.subscribe(exchange=exchange, binding="#")
        broken = Broken()
        await sub._deliver(broken)  # type: ignore[arg-type]
        assert broken.acked and sub.discarded == 1 and sub.pending == 0
        assert "no message" in caplog.text
        await _publish(bus, exchange, "k", b"next")
        assert (await _next(sub)).body == b"next"


async def test_a_batch_taken_with_ready_is_acknowledged_by_one_ack(broker: Broker) -> None:
    exchange, queue = broker.exchange(), broker.queue()
    async with AmqpBus.from_url(broker.url(queue, prefetch=50)) as bus:
        sub = await bus.subscribe(exchange=exchange, binding="#")
        for n in range(20):
            await _publish(bus, exchange, "k", b"%d" % n)
        first = await _next(sub)
        async with asyncio.timeout(5):
            while sub.pending < 19:
                await asyncio.sleep(0.01)
        batch = [first, *sub.ready(100)]
        assert [m.body for m in batch] == [b"%d" % n for n in range(20)]
        assert (sub.unacked, sub.acked) == (20, 0)  # all in hand: nothing acknowledged yet
        await sub.close()  # as a crash before the ack: every one is redelivered
        sub = await bus.subscribe(exchange=exchange, binding="#")
        again = [await _next(sub) for _ in range(1)] + sub.ready(100)
        async with asyncio.timeout(5):
            while len(again) < 20:
                again += sub.ready(100) or [await _next(sub)]
        assert sorted(int(m.body) for m in again) == list(range(20))
        await sub.ack()  # one basic.ack, multiple
        assert (sub.unacked, sub.acked) == (0, 20)
    assert await broker.ready_count(queue) == 0
