"""Intake's acknowledgement point (issue 6): record, then acknowledge, then enqueue.

A fake broker plays the AMQP semantics the intake relies on: ``ready`` hands
out what was delivered, ``ack`` acknowledges everything in hand, and closing
a subscription puts what was in hand back at the head of the queue
(redelivered to the next consumer).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from astara.bus.base import Message
from astara.orchestrator.intake import Intake
from astara.orchestrator.neutron_reader import FakeNetworkReader
from astara.orchestrator.resolution import ResourceKey
from astara.wire.neutron_events import EXCHANGE, RequestContext, encode_notification

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


def _router_event(router_id: str, event_type: str = "router.update.end") -> Message:
    body = encode_notification(
        event_type=event_type,
        payload={"router": {"id": router_id}},
        context=RequestContext(project_id="p", request_id="req-1"),
        publisher_id="network.test",
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return Message(exchange=EXCHANGE, routing_key="notifications.info", body=body)


class Broker:
    """One queue; what happened to it, in order, in ``log``."""

    def __init__(self, messages: Sequence[Message] = ()) -> None:
        self.queue: deque[Message] = deque(messages)
        self.acked: list[Message] = []
        self.log: list[str] = []
        self.wakeup = asyncio.Event()

    def put(self, message: Message) -> None:
        self.queue.append(message)
        self.wakeup.set()

    async def publish(self, **_: object) -> None:
        raise NotImplementedError

    async def subscribe(
        self, *, exchange: str, binding: str, max_pending: int | None = None
    ) -> Subscription:
        return Subscription(self, exchange, binding)

    async def close(self) -> None:
        pass


class Subscription:
    def __init__(self, broker: Broker, exchange: str, binding: str) -> None:
        self.broker, self.exchange, self.binding = broker, exchange, binding
        self.in_hand: list[Message] = []
        self.closed = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        await self.ack()
        while not self.closed:
            taken = self.ready(1)
            if taken:
                return taken[0]
            self.broker.wakeup.clear()
            await self.broker.wakeup.wait()
        raise StopAsyncIteration

    def ready(self, limit: int) -> list[Message]:
        taken = []
        while self.broker.queue and len(taken) < limit and not self.closed:
            taken.append(self.broker.queue.popleft())
        self.in_hand += taken
        return taken

    async def ack(self) -> None:
        if self.in_hand:
            self.broker.log.append(f"ack {len(self.in_hand)}")
            self.broker.acked += self.in_hand
            self.in_hand = []

    async def close(self) -> None:
        self.closed = True
        self.broker.queue.extendleft(reversed(self.in_hand))  # redelivered
        self.in_hand = []
        self.broker.wakeup.set()


class Recorder:
    """The pending store's stand-in: fails ``failures`` times, then records."""

    def __init__(self, broker: Broker, failures: int = 0) -> None:
        self.broker, self.failures = broker, failures
        self.recorded: list[tuple[str, ResourceKey]] = []
        self.calls = 0

    async def __call__(self, entries: Sequence[tuple[str, ResourceKey]]) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            self.broker.log.append("record failed")
            raise OSError("the database is down")
        self.broker.log.append(f"record {len(entries)}")
        self.recorded += entries


class Sleeps(list[float]):
    async def __call__(self, delay: float) -> None:
        self.append(delay)
        await asyncio.sleep(0)


def _intake(broker: Broker, recorder: Recorder, sleep: Sleeps, **options: object) -> Intake:
    def enqueue(key: ResourceKey) -> None:
        broker.log.append(f"enqueue {key.id}")

    return Intake(
        bus=broker,  # type: ignore[arg-type]  # the fake plays the Bus protocol's part used
        reader=FakeNetworkReader(),
        enqueue=enqueue,
        record=recorder,
        sleep=sleep,
        **options,  # type: ignore[arg-type]
    )


async def _until(condition: object, what: str) -> None:
    async with asyncio.timeout(5):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.001)


async def test_a_batch_is_recorded_then_acknowledged_then_enqueued() -> None:
    broker = Broker([_router_event(f"r{n}") for n in range(5)])
    recorder = Recorder(broker)
    intake = _intake(broker, recorder, Sleeps())
    task = asyncio.create_task(intake.run())
    await _until(lambda: len(broker.acked) == 5, "acknowledged")
    await intake.close()
    await asyncio.wait_for(task, 5)
    # everything already delivered is one batch: one transaction, one acknowledgement
    assert broker.log == ["record 5", "ack 5", *(f"enqueue r{n}" for n in range(5))]
    assert recorder.recorded == [
        ("router.update.end", ResourceKey.router(f"r{n}")) for n in range(5)
    ]
    stats = intake.stats
    assert (stats.received, stats.resolved, stats.acked, stats.recorded) == (5, 5, 5, 1)


async def test_batches_are_bounded() -> None:
    broker = Broker([_router_event(f"r{n}") for n in range(5)])
    intake = _intake(broker, Recorder(broker), Sleeps(), batch=2)
    task = asyncio.create_task(intake.run())
    await _until(lambda: len(broker.acked) == 5, "acknowledged")
    await intake.close()
    await asyncio.wait_for(task, 5)
    assert [e for e in broker.log if not e.startswith("enqueue")] == [
        "record 2",
        "ack 2",
        "record 2",
        "ack 2",
        "record 1",
        "ack 1",
    ]


async def test_a_failing_record_is_retried_with_backoff_and_nothing_is_acked_meanwhile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = Broker([_router_event("r1")])
    sleeps = Sleeps()
    recorder = Recorder(broker, failures=3)
    intake = _intake(broker, recorder, sleeps)
    task = asyncio.create_task(intake.run())
    with caplog.at_level(logging.WARNING, logger="astara.orchestrator.intake"):
        await _until(lambda: broker.acked, "acknowledged")
    await intake.close()
    await asyncio.wait_for(task, 5)
    assert broker.log == ["record failed"] * 3 + ["record 1", "ack 1", "enqueue r1"]
    assert sleeps == [0.5, 1.0, 2.0]
    assert intake.stats.record_failures == 3
    assert "not acknowledged, retrying" in caplog.text


async def test_closed_before_recording_nothing_is_acked_and_the_next_consumer_gets_it() -> None:
    broker = Broker([_router_event("r1"), _router_event("r2")])
    never = Recorder(broker, failures=10**6)
    sleeps = Sleeps()
    intake = _intake(broker, never, sleeps)
    task = asyncio.create_task(intake.run())
    await _until(lambda: never.calls >= 2, "a retry")
    await intake.close()  # the process stops (or crashes) while the database is down
    await asyncio.wait_for(task, 5)
    assert broker.acked == [] and "enqueue r1" not in broker.log
    assert len(broker.queue) == 2  # back in the queue: redelivered

    recorder = Recorder(broker)
    again = _intake(broker, recorder, Sleeps())
    task = asyncio.create_task(again.run())
    await _until(lambda: len(broker.acked) == 2, "acknowledged")
    await again.close()
    await asyncio.wait_for(task, 5)
    assert [key.id for _, key in recorder.recorded] == ["r1", "r2"]


async def test_what_names_no_router_is_acknowledged_without_recording() -> None:
    broker = Broker(
        [
            Message(exchange=EXCHANGE, routing_key="notifications.info", body=b"nonsense"),
            _router_event("r1", "router.update.start"),  # .start: concerns nothing
        ]
    )
    recorder = Recorder(broker)
    intake = _intake(broker, recorder, Sleeps())
    task = asyncio.create_task(intake.run())
    await _until(lambda: len(broker.acked) == 2, "acknowledged")
    broker.put(_router_event("r3"))  # and it goes on
    await _until(lambda: len(broker.acked) == 3, "acknowledged")
    await intake.close()
    await asyncio.wait_for(task, 5)
    assert broker.log == ["ack 2", "record 1", "ack 1", "enqueue r3"]
    assert (intake.stats.malformed, intake.stats.resolved) == (1, 2)
