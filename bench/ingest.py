"""P5, notification ingest (issue 6): RabbitMQ -> intake -> pending rows, against oslo.messaging.

- P5 ingest: ``notifications`` oslo v2 envelopes (``router.update.end`` with a
  Neutron router payload, over ``routers`` routers) are published to a durable
  queue of their own while nobody consumes it; then ``consumers`` orchestrator
  intakes (each in its own process, with its own AMQP connection: competing
  consumers of the one queue, as several orchestrators are) are started at
  once, and the clock runs from their start until every notification is a
  row of ``astara_pending`` (and acknowledged: the queue is empty). What each
  one runs is the orchestrator's own path: ``AmqpBus`` (prefetch) ->
  ``Intake`` (decode, resolve, batch) -> ``PendingRouters.record`` (one
  transaction per batch, in a worker thread) -> ``basic.ack`` (multiple).
  Lost = published - recorded, which must be 0. [>= 5,000/s, 0 lost]
- Next to it, in the same run, a plain oslo.messaging notification listener
  (``get_notification_listener``, threading executor, an endpoint that only
  counts) consumes the same number of the same bodies from a queue of its own,
  timed the same way (from its start until it has seen them all).

``measure_ingest(consumers=N)`` is the reusable part (another group calls it
with 1 and 3 consumers). Every exchange and queue is named
``astara-bench-<random>-…`` and deleted after; the database is a SQLite file
in a scratch directory (or the URL given, e.g. a PostgreSQL database several
orchestrators share).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aio_pika

from astara.bus.amqp import DEFAULT_PREFETCH
from astara.wire.neutron_events import RequestContext, encode_notification
from bench.figure import Figure

BROKER = "127.0.0.1:5672"
GUEST = f"amqp://guest:guest@{BROKER}/"
NOTIFICATIONS = 20_000
ROUTERS = 300
TARGET = 5000.0
TIMEOUT = 300.0
"""Seconds a run may take before it is given up (and counted with what it lost)."""


def router_update_body(router_id: str, n: int) -> bytes:
    """A ``router.update.end`` as Neutron emits it (oslo v2 envelope), version ``n`` in the name."""
    router = {
        "id": router_id,
        "name": f"router-{n}",
        "tenant_id": "a7d4c0f5b6e84f0c9f3e8b1a2c3d4e5f",
        "project_id": "a7d4c0f5b6e84f0c9f3e8b1a2c3d4e5f",
        "admin_state_up": True,
        "status": "ACTIVE",
        "external_gateway_info": {
            "network_id": "0c2a5b8e-6f4d-4c3b-9a1e-2d7f8e9a0b1c",
            "external_fixed_ips": [
                {"subnet_id": "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9", "ip_address": "203.0.113.7"}
            ],
            "enable_snat": True,
        },
        "description": "",
        "availability_zones": ["nova"],
        "availability_zone_hints": [],
        "routes": [],
        "flavor_id": None,
        "tags": [],
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:01Z",
        "revision_number": n,
    }
    return encode_notification(
        event_type="router.update.end",
        payload={"router": router},
        context=RequestContext(project_id=router["project_id"], request_id=f"req-{n}"),
        publisher_id="network.controller-1",
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
    )


def router_ids(routers: int, tag: str = "") -> list[str]:
    """``routers`` UUID-shaped ids, stable for a ``tag``."""
    return [f"{tag[:8]:0>8}-0000-4000-8000-{n:012x}" for n in range(routers)]


async def preload(
    *, exchange: str, routing_key: str, queue: str, bodies: list[bytes], durable: bool
) -> None:
    """Declare ``queue`` bound to ``exchange`` (topic, as oslo declares it) and fill it.

    Published without confirms, then waited for until the broker counts them all.
    """
    connection = await aio_pika.connect(GUEST, timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=False)
        target = await channel.declare_exchange(
            exchange, aio_pika.ExchangeType.TOPIC, durable=False, auto_delete=False
        )
        declared = await channel.declare_queue(queue, durable=durable, auto_delete=False)
        await declared.bind(target, routing_key=routing_key)
        for body in bodies:
            await target.publish(
                aio_pika.Message(
                    body,
                    content_type="application/json",
                    content_encoding="utf-8",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=routing_key,
            )
        async with asyncio.timeout(60):
            while await _ready(connection, queue) < len(bodies):
                await asyncio.sleep(0.05)
    finally:
        await connection.close()


async def _ready(connection: aio_pika.abc.AbstractConnection, queue: str) -> int:
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0
    finally:
        await channel.close()


async def ready_count(queue: str) -> int:
    """Messages ready in ``queue`` (not delivered, or delivered and not acknowledged)."""
    connection = await aio_pika.connect(GUEST, timeout=10)
    try:
        return await _ready(connection, queue)
    finally:
        await connection.close()


async def delete(*, queues: list[str], exchanges: list[str]) -> None:
    connection = await aio_pika.connect(GUEST, timeout=10)
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue, if_unused=False, if_empty=False)
        for exchange in exchanges:
            await channel.exchange_delete(exchange, if_unused=False)
    finally:
        await connection.close()


@dataclass
class IngestRun:
    """One measured run: how many, how long, how many did not make it."""

    what: str
    consumers: int
    published: int
    recorded: int
    seconds: float
    prefetch: int = 0
    unacked_left: int = 0
    cpu_busy: float = 0.0
    """The share of the machine's CPU time (every core) that was busy during the run: near 1,
    the run was bound by the cores (consumers, broker, database share them)."""

    @property
    def rate(self) -> float:
        return self.recorded / self.seconds if self.seconds > 0 else 0.0

    @property
    def lost(self) -> int:
        return self.published - self.recorded


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of every core together, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_since(before: tuple[int, int]) -> float:
    """The busy share of every core's time since ``before`` (``cpu_times()``)."""
    busy, total = cpu_times()
    return (busy - before[0]) / max(1, total - before[1])


# -- the orchestrator's intake, one process per consumer ------------------------------------


def _consumer(
    url: str, exchange: str, db_url: str, go: Event, stop: Event, stats: Any, index: int
) -> None:
    asyncio.run(_consume(url, exchange, db_url, go, stop, stats, index))


async def _consume(
    url: str, exchange: str, db_url: str, go: Event, stop: Event, stats: Any, index: int
) -> None:
    from astara.bus.amqp import AmqpBus
    from astara.orchestrator.intake import Intake
    from astara.orchestrator.neutron_reader import FakeNetworkReader
    from astara.orchestrator.pending import PendingRouters, PendingStore
    from astara.orchestrator.resolution import ResourceKey

    store = PendingStore(db_url)
    routers = PendingRouters(store, keeps=lambda _key: False, enqueue=lambda _key: None)
    enqueued = 0

    def enqueue(_key: ResourceKey) -> None:
        nonlocal enqueued
        enqueued += 1

    bus = AmqpBus.from_url(url)
    intake = Intake(
        bus=bus,
        reader=FakeNetworkReader(),  # router events need no lookup
        enqueue=enqueue,
        record=routers.record,
        exchange=exchange,
    )
    try:
        await asyncio.to_thread(go.wait)
        task = asyncio.create_task(intake.run())
        await asyncio.to_thread(stop.wait)
        await intake.close()
        await task
    finally:
        await bus.close()
        store.close()
    done = intake.stats
    stats.put((index, done.received, done.acked, done.recorded, routers.recorded))


def measure_ingest(
    *,
    consumers: int = 1,
    notifications: int = NOTIFICATIONS,
    routers: int = ROUTERS,
    db_url: str | None = None,
    prefetch: int = DEFAULT_PREFETCH,
) -> IngestRun:
    """``notifications`` ingested by ``consumers`` intake processes; see the module."""
    from astara.orchestrator.pending import PendingStore

    tag = secrets.token_hex(4)
    prefix = f"astara-bench-{tag}"
    exchange, queue = f"{prefix}-neutron", f"{prefix}-orchestrator"
    ids = router_ids(routers, tag)
    bodies = [router_update_body(ids[n % routers], n) for n in range(notifications)]
    with _database(db_url) as url:
        store = PendingStore(url)
        context = multiprocessing.get_context("spawn")
        go, stop = context.Event(), context.Event()
        stats = context.Queue()
        amqp = f"rabbit://guest:guest@{BROKER}/?queue={queue}&prefetch={prefetch}"
        procs = [
            context.Process(
                target=_consumer, args=(amqp, exchange, url, go, stop, stats, n), daemon=True
            )
            for n in range(consumers)
        ]
        try:
            asyncio.run(
                preload(
                    exchange=exchange,
                    routing_key="notifications.info",
                    queue=queue,
                    bodies=bodies,
                    durable=True,
                )
            )
            for proc in procs:
                proc.start()
            time.sleep(1.0)  # imports and the database opened: not timed
            started = time.monotonic()
            cpu = cpu_times()
            go.set()
            recorded = 0
            while time.monotonic() - started < TIMEOUT:
                recorded = store.count()
                if recorded >= notifications:
                    break
                time.sleep(0.01)
            seconds = time.monotonic() - started
            busy = busy_since(cpu)
            left = asyncio.run(ready_count(queue))
            stop.set()
            for proc in procs:
                proc.join(timeout=30)
            return IngestRun(
                what=f"astara intake x{consumers}",
                consumers=consumers,
                published=notifications,
                recorded=recorded,
                seconds=seconds,
                prefetch=prefetch,
                unacked_left=left,
                cpu_busy=busy,
            )
        finally:
            stop.set()
            for proc in procs:
                if proc.is_alive():
                    proc.kill()
                    proc.join(timeout=10)
            store.close()
            asyncio.run(delete(queues=[queue], exchanges=[exchange]))


@contextlib.contextmanager
def _database(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    work = Path(tempfile.mkdtemp(prefix="astara-bench-ingest-"))
    try:
        yield f"sqlite:///{work / 'orchestrator.db'}"
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- a plain oslo.messaging notification listener -----------------------------------------


def _oslo_listener(exchange: str, topic: str, expected: int, go: Event, out: Any) -> None:
    import threading

    import oslo_messaging
    from oslo_config import cfg

    conf = cfg.ConfigOpts()
    conf([], project="astara-bench")
    transport = oslo_messaging.get_notification_transport(
        conf, url=f"rabbit://guest:guest@{BROKER}/"
    )
    seen = 0
    done = threading.Event()

    class Endpoint:
        def info(
            self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, metadata: Any
        ) -> None:
            nonlocal seen
            seen += 1
            if seen >= expected:
                done.set()

    listener = oslo_messaging.get_notification_listener(
        transport,
        [oslo_messaging.Target(topic=topic, exchange=exchange)],
        [Endpoint()],
        executor="threading",
    )
    go.wait()
    started = time.monotonic()
    listener.start()
    done.wait(TIMEOUT)
    seconds = time.monotonic() - started
    listener.stop()
    listener.wait()
    transport.cleanup()
    out.put((seen, seconds))


def measure_oslo_listener(
    *, notifications: int = NOTIFICATIONS, routers: int = ROUTERS
) -> IngestRun:
    """The same bodies, consumed by a plain oslo.messaging notification listener."""
    tag = secrets.token_hex(4)
    prefix = f"astara-bench-{tag}"
    exchange, topic = f"{prefix}-neutron", f"{prefix}-notifications"
    queue = f"{topic}.info"  # what oslo's rabbit driver names and binds
    ids = router_ids(routers, tag)
    bodies = [router_update_body(ids[n % routers], n) for n in range(notifications)]
    context = multiprocessing.get_context("spawn")
    go, out = context.Event(), context.Queue()
    proc = context.Process(
        target=_oslo_listener, args=(exchange, topic, notifications, go, out), daemon=True
    )
    try:
        asyncio.run(
            preload(exchange=exchange, routing_key=queue, queue=queue, bodies=bodies, durable=False)
        )
        proc.start()
        time.sleep(2.0)  # imports: not timed
        go.set()
        seen, seconds = out.get(timeout=TIMEOUT + 60)
        proc.join(timeout=30)
        return IngestRun(
            what="oslo.messaging notification listener",
            consumers=1,
            published=notifications,
            recorded=seen,
            seconds=seconds,
        )
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=10)
        asyncio.run(delete(queues=[queue], exchanges=[exchange]))


def run_ingest_benchmarks(notifications: int = NOTIFICATIONS) -> list[Figure]:
    """P5: our ingest rate and losses, the oslo listener's rate in the notes."""
    ours = measure_ingest(consumers=1, notifications=notifications)
    oslo = measure_oslo_listener(notifications=notifications)
    notes = (
        f"{ours.published} router.update.end over {ROUTERS} routers, published while stopped; "
        f"1 intake process (prefetch {ours.prefetch}, batches recorded in one SQLite "
        f"transaction each, one multiple-ack per batch): {ours.recorded} recorded in "
        f"{ours.seconds:.2f} s, {ours.lost} lost, {ours.unacked_left} left in the queue; "
        f"a plain oslo.messaging notification listener (threading executor, counting "
        f"endpoint) on the same bodies: {oslo.rate:.0f}/s ({oslo.recorded} in "
        f"{oslo.seconds:.2f} s)"
    )
    return [
        Figure(
            "P5 notification ingest, RabbitMQ -> pending rows",
            ours.rate if ours.lost == 0 else 0.0,
            "notifications/s",
            TARGET,
            notes=notes,
            higher_is_better=True,
        ),
        Figure(
            "P5 notifications lost",
            float(ours.lost + ours.unacked_left),
            "",
            0,
            notes="published - recorded, plus what was left in the queue",
        ),
        Figure(
            "P5 oslo.messaging listener, same bodies (reference)",
            oslo.rate,
            "notifications/s",
            float("inf"),
            notes="not a target: the reference rate of the same run",
            higher_is_better=False,
        ),
    ]


if __name__ == "__main__":
    import sys

    count = int(sys.argv[1]) if len(sys.argv) > 1 else NOTIFICATIONS
    for figure in run_ingest_benchmarks(count):
        print(f"{figure.name}: {figure.value:.1f} {figure.unit} ({figure.notes})")
