"""Issue 6 against the real RabbitMQ (127.0.0.1:5672, guest/guest): nothing acknowledged is lost.

The orchestrator's ingest path as it runs: ``AmqpBus`` -> ``Intake`` (batches)
-> ``PendingRouters.record`` (``astara_pending`` in SQLite) -> acknowledgement
-> ``WorkQueue`` -> a reconciler. The reconciler is a fake that "applies" the
desired version of its router (what the publisher set before publishing, as
Neutron commits before it notifies) and deletes the rows it covered, as the
runner does; the final applied versions must equal the desired ones.

Every exchange and queue is named ``astara-test-<random>-…`` and deleted
after. The tests fail, never skip, with a one-line reason when the broker is
down. ``test_a_broker_restart_with_events_in_flight_loses_none`` restarts the
RabbitMQ application (``rabbitmqctl stop_app``/``start_app``, a few seconds;
always started again, and waited for, whatever happens).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import aio_pika
import pytest
from bench.ingest import delete, preload, ready_count, router_ids, router_update_body

from astara.bus.amqp import AmqpBus
from astara.bus.base import BusUnavailableError
from astara.orchestrator.intake import Intake
from astara.orchestrator.neutron_reader import FakeNetworkReader
from astara.orchestrator.pending import PendingRouters, PendingStore
from astara.orchestrator.queueing import WorkQueue
from astara.orchestrator.resolution import ResourceKey
from tests.component.test_bus_amqp import (  # noqa: F401 - the fixture
    BROKER,
    Broker,
    Outage,
    broker,
)

ROUTING_KEY = "notifications.info"


class Pipeline:
    """One orchestrator's ingest and reconcile path, with a fake reconciler; see the module."""

    def __init__(
        self,
        *,
        bus_url: str,
        db_url: str,
        exchange: str,
        desired: dict[str, int],
        reconcile: bool = True,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.desired = desired
        self.applied: dict[str, int] = {}
        self.reconciles: Counter[str] = Counter()
        self.store = PendingStore(db_url)
        self.queue = WorkQueue(reconcile=self._reconcile, concurrency=8, cooldown=0.0)
        self.pending = PendingRouters(
            self.store, keeps=lambda _key: True, enqueue=self.queue.enqueue, period=0.05
        )
        self.bus = AmqpBus.from_url(bus_url)
        self.intake = Intake(
            bus=self.bus,
            reader=FakeNetworkReader(),
            enqueue=self.queue.enqueue,
            record=self._record,
            exchange=exchange,
            backoff=0.1,
            max_backoff=0.5,
        )
        self._reconcile_too = reconcile
        self._gate = gate

    async def _record(self, entries: Sequence[tuple[str, ResourceKey]]) -> None:
        if self._gate is not None:  # recording held back: the deliveries stay unacknowledged
            await self._gate.wait()
        await self.pending.record(entries)
        self._tasks: list[asyncio.Task[None]] = []

    async def _reconcile(self, key: ResourceKey) -> None:
        upto = self.pending.started(key)
        await asyncio.sleep(0.001)  # reads the network API...
        self.applied[key.id] = self.desired[key.id]  # ...and applies what it read
        self.reconciles[key.id] += 1
        self.pending.finished(key, upto)

    async def start(self) -> None:
        await self.intake.open()
        await self.pending.look()  # what was pending at the last stop, first
        self._tasks = [asyncio.create_task(self.intake.run(), name="intake")]
        if self._reconcile_too:
            self._tasks += [
                asyncio.create_task(self.queue.run(), name="queue"),
                asyncio.create_task(self.pending.run(), name="pending"),
            ]

    async def stop(self) -> None:
        await self.intake.close()
        await self.queue.close(drain=True)
        self.pending.close()
        await asyncio.gather(*self._tasks)
        await self.bus.close()
        self.store.close()

    def converged(self) -> bool:
        return self.applied == self.desired and self.store.count() == 0


async def _until(what: str, condition: object, timeout: float = 60) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # type: ignore[operator]
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"not within {timeout:.0f}s: {what}")


def _bodies(desired: dict[str, int], ids: list[str], count: int, start: int = 0) -> list[bytes]:
    """``count`` router.update.end over ``ids``, each making its router's version the desired."""
    bodies = []
    for n in range(start, start + count):
        router_id = ids[n % len(ids)]
        desired[router_id] = n
        bodies.append(router_update_body(router_id, n))
    return bodies


async def test_ten_thousand_published_while_stopped_are_all_processed(
    broker: Broker,  # noqa: F811
    tmp_path: Path,
) -> None:
    exchange, queue = broker.exchange(), broker.queue()
    ids = router_ids(300, broker.prefix[-8:])
    desired: dict[str, int] = {}
    bodies = _bodies(desired, ids, 10_000)
    await preload(
        exchange=exchange, routing_key=ROUTING_KEY, queue=queue, bodies=bodies, durable=True
    )
    assert await broker.ready_count(queue) == 10_000
    pipeline = Pipeline(
        bus_url=broker.url(queue),
        db_url=f"sqlite:///{tmp_path / 'orchestrator.db'}",
        exchange=exchange,
        desired=desired,
    )
    await pipeline.start()
    try:
        await _until(
            "every notification acknowledged", lambda: pipeline.intake.stats.acked >= 10_000
        )
        await _until("every router reconciled, nothing pending", pipeline.converged)
    finally:
        await pipeline.stop()
    stats = pipeline.intake.stats
    assert (stats.received, stats.resolved, stats.malformed, stats.dropped) == (10_000,) * 2 + (
        0,
        0,
    )
    assert pipeline.pending.recorded == 10_000  # one row per router per notification
    assert set(pipeline.reconciles) == set(ids)
    assert await broker.ready_count(queue) == 0


async def test_a_crash_after_the_acknowledgement_loses_nothing(
    broker: Broker,  # noqa: F811
    tmp_path: Path,
) -> None:
    exchange, queue = broker.exchange(), broker.queue()
    db_url = f"sqlite:///{tmp_path / 'orchestrator.db'}"
    ids = router_ids(50, broker.prefix[-8:])
    desired: dict[str, int] = {}
    await preload(
        exchange=exchange,
        routing_key=ROUTING_KEY,
        queue=queue,
        bodies=_bodies(desired, ids, 500),
        durable=True,
    )
    # the first orchestrator takes and acknowledges everything, then dies before reconciling
    first = Pipeline(
        bus_url=broker.url(queue),
        db_url=db_url,
        exchange=exchange,
        desired=desired,
        reconcile=False,
    )
    await first.start()
    await _until("every notification acknowledged", lambda: first.intake.stats.acked >= 500)
    await first.stop()
    assert first.applied == {} and await broker.ready_count(queue) == 0
    # the next one gets no message at all, and still reconciles every router
    again = Pipeline(bus_url=broker.url(queue), db_url=db_url, exchange=exchange, desired=desired)
    assert set(again.store.routers()) == set(ids)
    await again.start()
    try:
        await _until("every router reconciled, nothing pending", again.converged)
    finally:
        await again.stop()
    assert again.intake.stats.received == 0


async def test_malformed_messages_are_dropped_with_a_log_line_and_the_consumer_goes_on(
    broker: Broker,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    exchange, queue = broker.exchange(), broker.queue()
    ids = router_ids(3, broker.prefix[-8:])
    desired: dict[str, int] = {}
    garbage = [b"nonsense", b"[]", b'{"oslo.version": "2.0", "oslo.message": "{\\"x\\": 1}"}']
    bodies: list[bytes] = []
    for n, bad in enumerate(garbage):
        bodies += [bad, *_bodies(desired, ids, 1, start=n)]
    pipeline = Pipeline(
        bus_url=broker.url(queue),
        db_url=f"sqlite:///{tmp_path / 'orchestrator.db'}",
        exchange=exchange,
        desired=desired,
    )
    with caplog.at_level(logging.WARNING, logger="astara.orchestrator.intake"):
        await pipeline.start()
        try:
            for body in bodies:  # one at a time, as they come
                await pipeline.bus.publish(exchange=exchange, routing_key=ROUTING_KEY, body=body)
                await asyncio.sleep(0.05)
            await _until("the valid ones reconciled", pipeline.converged)
            await _until("all acknowledged", lambda: pipeline.intake.stats.acked == len(bodies))
        finally:
            await pipeline.stop()
    assert pipeline.intake.stats.malformed == len(garbage)
    assert caplog.text.count("dropped a malformed message") == len(garbage)
    assert await broker.ready_count(queue) == 0  # dropped means acknowledged: not redelivered


# -- a broker restart ------------------------------------------------------------------------


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}"


def _answers() -> bool:
    host, port = BROKER.split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


async def _restart_broker(while_down: Callable[[], None]) -> None:
    """Stop and start the RabbitMQ application; started again (and waited for) whatever happens."""
    try:
        await asyncio.to_thread(_rabbitmqctl, "stop_app")
        while_down()
        await asyncio.sleep(1)
    finally:
        await asyncio.to_thread(_rabbitmqctl, "start_app")
        deadline = time.monotonic() + 60
        while not _answers() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    assert _answers(), "RabbitMQ did not come back within 60 s"


async def _publish_all(bus: AmqpBus, exchange: str, bodies: list[bytes]) -> int:
    """Publish every body in order, retrying through an outage; how many retries it took."""
    retries = 0
    for body in bodies:
        while True:
            try:
                await bus.publish(exchange=exchange, routing_key=ROUTING_KEY, body=body)
                break
            except BusUnavailableError:
                retries += 1
                await asyncio.sleep(0.2)
    return retries


async def test_a_broker_restart_with_events_in_flight_loses_none(tmp_path: Path) -> None:
    if not _answers():
        pytest.fail(f"RabbitMQ at {BROKER} (guest/guest) is not usable: nothing listens")
    # not the ``broker`` fixture: its connection does not outlive the restart
    prefix = f"astara-test-{secrets.token_hex(4)}"
    exchange, queue = f"{prefix}-neutron", f"{prefix}-q"
    # a durable exchange: its binding to the durable queue survives the restart, so what is
    # published as soon as the broker is back is routed before our consumer re-declares it
    url = (
        f"rabbit://guest:guest@{BROKER}/?queue={queue}&exchange_durable=true"
        "&reconnect_interval=0.3&timeout=2"
    )
    ids = router_ids(200, prefix[-8:])
    desired: dict[str, int] = {}
    before = _bodies(desired, ids, 3000)
    after = _bodies(desired, ids, 2000, start=3000)
    gate = asyncio.Event()
    pipeline = Pipeline(
        bus_url=url,
        db_url=f"sqlite:///{tmp_path / 'orchestrator.db'}",
        exchange=exchange,
        desired=desired,
        gate=gate,
    )
    publisher = AmqpBus.from_url(url)  # publishes only
    try:
        await pipeline.start()
        try:
            await _publish_all(publisher, exchange, before)
            subscription = pipeline.bus.subscriptions()[0]
            # delivered, not acknowledged: one batch being recorded (held), the rest buffered
            await _until("deliveries in flight", lambda: subscription.unacked >= 500)
            in_flight = subscription.unacked
            publishing = asyncio.create_task(_publish_all(publisher, exchange, after))
            await asyncio.sleep(0.1)  # some published before the broker goes, some after
            await _restart_broker(while_down=gate.set)  # recorded while down: the ack is lost
            retries = await publishing
            await _until("every router converged after the restart", pipeline.converged, 120)
            await _until(
                "the queue drained",
                lambda: pipeline.intake.stats.acked >= len(before) + len(after),
            )
        finally:
            await publisher.close()
            await pipeline.stop()
        assert await ready_count(queue) == 0
    finally:
        await delete(queues=[queue], exchanges=[exchange])
    # what was delivered and not acknowledged when the broker went came again (at least once)
    assert pipeline.intake.stats.received >= len(before) + len(after)
    print(f"in flight at the restart: {in_flight} unacknowledged; publish retries: {retries}")


async def test_a_lost_and_restored_connection_asks_for_one_resync(
    broker: Broker,  # noqa: F811
) -> None:
    """What was published while the connection was gone is unknown (here: lost with the
    auto-delete queue): once the subscription is bound again the intake calls ``on_overflow``
    (the orchestrator's resync of every router), once per gap, and goes on consuming."""
    exchange, queue = broker.exchange(), broker.queue()
    outage = Outage()
    await outage.start()
    url = (
        f"amqp://guest:guest@127.0.0.1:{outage.port}/?queue={queue}&durable=false"
        "&reconnect_interval=0.2&timeout=1"
    )
    ids = router_ids(3, broker.prefix[-8:])
    desired: dict[str, int] = {}
    resyncs: list[int] = []
    bus = AmqpBus.from_url(url)
    enqueued: list[ResourceKey] = []
    intake = Intake(
        bus=bus,
        reader=FakeNetworkReader(),
        enqueue=enqueued.append,
        on_overflow=lambda: resyncs.append(len(enqueued)),
        exchange=exchange,
    )
    raw = await broker.channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC)
    try:
        await intake.open()
        running = asyncio.create_task(intake.run())
        for body in _bodies(desired, ids, 3):
            await raw.publish(aio_pika.Message(body), routing_key=ROUTING_KEY)
        await _until("three enqueued", lambda: len(enqueued) == 3, 10)
        assert resyncs == []
        outage.cut()
        await asyncio.sleep(0.3)
        outage.up = True
        await _until("one resync", lambda: resyncs == [3], 10)
        assert intake.stats.gaps == 1
        for body in _bodies(desired, ids, 3, start=3):  # bound again: delivered
            await raw.publish(aio_pika.Message(body), routing_key=ROUTING_KEY)
        await _until("three more enqueued", lambda: len(enqueued) == 6, 10)
        assert resyncs == [3]
        await intake.close()
        await asyncio.wait_for(running, 5)
    finally:
        await bus.close()
        await outage.stop()
