"""Intake: Neutron notifications off the bus, turned into resource keys and enqueued.

Subscribes to exchange ``neutron`` with ``notifications.*`` (``.info`` and
``.error``), decodes each message (``astara.wire.neutron_events``), resolves
it to the keys of the resources it concerns (``astara.orchestrator.resolution``,
which holds the event table) and hands each key to ``enqueue`` — the
scheduler's, which coalesces bursts. Owned by the orchestrator process.

The acknowledgement point (decision 12): messages are taken in batches —
one ``__anext__``, then every message already delivered, up to ``batch``
(``Subscription.ready``) — and resolved one at a time; then the keys of the
whole batch go to ``record`` (the pending store: one transaction), then the
batch is acknowledged (``Subscription.ack``: one AMQP ``basic.ack``), and
only then are the keys enqueued. A crash after the acknowledgement loses
nothing: what the messages named is recorded. A batch that names nothing
(malformed messages, events that concern no router) is acknowledged at
once.

Invariants:

- It never stops on a message: a body that is not a notification, or a
  payload without the ids its event type promises, is logged (warning, with
  the start of the body) and dropped; a lookup the network API cannot answer
  is retried ``attempts`` times with doubling delays, then dropped (error); a
  refused lookup is dropped at once (error); anything unexpected is logged
  with its traceback and dropped. Each is counted in ``stats``. Dropped
  messages are acknowledged (no dead-letter queue): a message that cannot be
  read now cannot be read later either.
- A ``record`` that fails (the database is down) is retried with doubling
  delays (``backoff`` up to ``max_backoff``) until it succeeds or the intake
  closes; meanwhile nothing is acknowledged nor enqueued, and the broker
  holds the rest back (prefetch). Closed before it succeeded, the batch is
  left unacknowledged: the broker redelivers it.
- A gap in the bus (an AMQP subscription whose connection was lost and is
  restored) or an overflow (the embedded bus dropped messages) calls
  ``on_overflow``: which routers the lost notifications named is unknown.
- Messages are handled one at a time, in bus order, so that the resolution
  memory sees events in the order they happened. A lookup being retried holds
  back the next messages; the bus bounds what waits (dropping the oldest).
- ``enqueue`` is called on the loop, once per key of each notification,
  keys in sorted order, notifications in bus order, after the batch was
  recorded and acknowledged; duplicates are the queue's to collapse.
- ``run`` creates no task; ``close`` ends it at the next message boundary
  (a retry in progress gives up at its next attempt).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from astara.bus.base import Bus, Message, Subscription
from astara.orchestrator.neutron_reader import (
    NetworkReader,
    NetworkResponseError,
    NetworkUnavailableError,
)
from astara.orchestrator.resolution import LastRouters, ResourceKey, resolve
from astara.wire.neutron_events import (
    EXCHANGE,
    MalformedEventError,
    Notification,
    decode_notification,
)

__all__ = ["BINDING", "Intake", "IntakeStats", "LastRouters", "ResourceKey", "resolve"]

log = logging.getLogger(__name__)

BINDING = "notifications.*"
"""What Intake binds on exchange ``neutron``: ``notifications.info`` and ``notifications.error``."""

DEFAULT_ATTEMPTS = 4
"""Lookups tried for one notification before it is dropped."""

DEFAULT_BACKOFF = 0.5
"""Seconds before the first retry of a lookup; doubled for each next one."""

DEFAULT_MAX_BACKOFF = 8.0
"""The longest wait between two lookups of one notification, in seconds."""

DEFAULT_BATCH = 1000
"""Messages taken, recorded and acknowledged together at most (what was already delivered)."""

EXCERPT_BYTES = 100
"""How much of a malformed body a warning shows (the start holds ids, not the context)."""


@dataclass(slots=True)
class IntakeStats:
    """What ``Intake`` has done so far; ``received == malformed + resolved + dropped`` when idle."""

    #: messages taken off the bus
    received: int = 0
    #: messages that were no notification, or whose payload lacked what its event type promises
    malformed: int = 0
    #: notifications resolved, to any number of keys (zero included)
    resolved: int = 0
    #: notifications given up: lookups kept failing or were refused, or a bug
    dropped: int = 0
    #: keys handed to ``enqueue``
    enqueued: int = 0
    #: batches whose keys were recorded (``record`` calls that succeeded)
    recorded: int = 0
    #: ``record`` calls that failed (each retried)
    record_failures: int = 0
    #: messages acknowledged (with their batch)
    acked: int = 0
    #: times the bus connection was lost and restored (each answered by ``on_overflow``)
    gaps: int = 0


class Intake:
    """Subscribes to Neutron's notifications and enqueues what they concern; see the module.

    ``reader`` answers the lookups resolution needs; ``enqueue`` takes each
    key (the scheduler's, non-blocking). A lookup the API cannot answer is
    tried ``attempts`` times, waiting ``backoff`` seconds, doubled each time up
    to ``max_backoff``, through ``sleep`` (inject a virtual clock's in tests).
    ``memory`` keeps ports' and floating IPs' last routers (a fresh one if None).
    ``on_event(event_type, keys)``, if given, is told of each notification
    resolved (before its keys are enqueued); the journal and metrics use it.
    ``on_overflow()``, if given, is called once the subscription has caught up
    (nothing pending) after it dropped messages because it was full: which
    resources those concerned is unknown, so the orchestrator reconciles every
    one (a full sweep). Called at most once per overflow, however many it dropped.
    It is also called, at once, each time a subscription that lost its broker
    connection has it restored (``on_restored`` of an AMQP subscription: queue
    bound and consumed again): what was published during the gap may never
    have reached the queue (decision 12).
    ``record(entries)``, if given, is awaited with the (event type, key) pairs of
    a whole batch before it is acknowledged (see the module); None: nothing to
    record, batches are acknowledged once resolved. ``batch`` bounds a batch.
    ``exchange`` is Neutron's (tests give theirs).
    """

    def __init__(
        self,
        *,
        bus: Bus,
        reader: NetworkReader,
        enqueue: Callable[[ResourceKey], None],
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: float = DEFAULT_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        memory: LastRouters | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_event: Callable[[str, frozenset[ResourceKey]], None] | None = None,
        on_overflow: Callable[[], None] | None = None,
        record: Callable[[Sequence[tuple[str, ResourceKey]]], Awaitable[object]] | None = None,
        batch: int = DEFAULT_BATCH,
        exchange: str = EXCHANGE,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {attempts}")
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self._bus = bus
        self._reader = reader
        self._enqueue = enqueue
        self._attempts = attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._memory = LastRouters() if memory is None else memory
        self._sleep = sleep
        self._on_event = on_event
        self._on_overflow = on_overflow
        self._record = record
        self._batch = batch
        self._exchange = exchange
        self._overflowed = 0
        """The subscription's drops already answered by an ``on_overflow``."""
        self._subscription: Subscription | None = None
        self._running = False
        self._closed = False
        self._stats = IntakeStats()

    @property
    def stats(self) -> IntakeStats:
        """A snapshot of the counters."""
        return dataclasses.replace(self._stats)

    async def open(self) -> None:
        """Subscribe, if not yet: messages published from now on are delivered. Idempotent.

        ``run`` opens by itself; open first to be sure nothing published
        before ``run`` gets going is missed. Raises what ``Bus.subscribe`` raises.
        """
        if self._subscription is None and not self._closed:
            self._subscription = await self._bus.subscribe(exchange=self._exchange, binding=BINDING)
            # AMQP: after a lost connection is restored, what was published meanwhile is unknown
            on_restored = getattr(self._subscription, "on_restored", None)
            if on_restored is not None:
                on_restored(self._restored)

    async def run(self) -> None:
        """Handle messages until ``close()`` or the bus closes. One ``run`` at a time.

        Raises ``RuntimeError`` when already running, and what ``open`` raises.
        """
        if self._running:
            raise RuntimeError("this Intake is already running")
        self._running = True
        try:
            await self.open()
            if self._subscription is None:  # closed before it ran
                return
            subscription = self._subscription
            async for first in subscription:
                messages = [first, *subscription.ready(self._batch - 1)]
                if not await self._take(subscription, messages):
                    break  # closed before the batch was recorded: redelivered
                self._check_overflow(subscription)
        finally:
            self._running = False

    async def close(self) -> None:
        """Stop taking messages; ``run`` returns after the one in hand. Idempotent."""
        self._closed = True
        if self._subscription is not None:
            await self._subscription.close()

    def _check_overflow(self, subscription: Subscription) -> None:
        """``on_overflow`` once the subscription dropped messages and has caught up."""
        # the embedded bus counts what it dropped; a broker keeps its own queue
        dropped = getattr(subscription, "dropped", 0)
        if dropped <= self._overflowed or getattr(subscription, "pending", 0):
            return
        log.warning(
            "the bus dropped %d notifications (subscription full): reconciling every router",
            dropped - self._overflowed,
        )
        self._overflowed = dropped
        self._lost()

    def _restored(self) -> None:
        """The subscription's lost connection is back: notifications may be lost meanwhile."""
        if self._closed:
            return
        self._stats.gaps += 1
        log.warning(
            "the bus connection was lost and restored: notifications published meanwhile may "
            "be lost; reconciling every router"
        )
        self._lost()

    def _lost(self) -> None:
        """Notifications were lost (an overflow, a gap in the bus): ``on_overflow``."""
        if self._on_overflow is not None:
            try:
                self._on_overflow()
            except Exception:
                log.exception("intake: on_overflow failed")

    async def _take(self, subscription: Subscription, messages: list[Message]) -> bool:
        """Resolve, record, acknowledge, enqueue one batch; False if closed before recording."""
        resolved: list[tuple[Message, Notification, list[ResourceKey]]] = []
        for message in messages:
            self._stats.received += 1
            try:
                found = await self._handle(message)
            except Exception:  # noqa: BLE001 - logged with its traceback by _unexpected
                self._unexpected(message)
                continue
            if found is not None:
                resolved.append((message, found[0], found[1]))
        entries = [(n.event_type, key) for _, n, keys in resolved for key in keys]
        if entries and self._record is not None and not await self._recorded(entries):
            return False
        await subscription.ack()
        self._stats.acked += len(messages)
        for message, notification, keys in resolved:
            try:
                if self._on_event is not None:
                    self._on_event(notification.event_type, frozenset(keys))
                for key in keys:
                    self._enqueue(key)
                    self._stats.enqueued += 1
            except Exception:  # noqa: BLE001 - logged with its traceback by _unexpected
                self._unexpected(message)
                continue
            self._stats.resolved += 1
        return True

    async def _recorded(self, entries: Sequence[tuple[str, ResourceKey]]) -> bool:
        """``record(entries)``, retried with backoff until it succeeds (True) or closed (False)."""
        assert self._record is not None
        delay = self._backoff
        while True:
            try:
                await self._record(entries)
            except Exception as exc:  # noqa: BLE001 - the database is down: retried, not acked
                self._stats.record_failures += 1
                if self._closed:
                    log.warning("intake closed before %d keys were recorded: %s", len(entries), exc)
                    return False
                log.warning(
                    "could not record %d pending keys (%s); not acknowledged, retrying in %.1fs",
                    len(entries),
                    exc,
                    delay,
                )
                await self._sleep(delay)
                delay = min(delay * 2, self._max_backoff)
                if self._closed:
                    return False
                continue
            self._stats.recorded += 1
            return True

    def _unexpected(self, message: Message) -> None:
        # the loop must outlive a bug in one message's handling; the traceback says which
        self._stats.dropped += 1
        log.exception(
            "intake dropped a message on %s after an unexpected error; body starts %r",
            message.routing_key,
            message.body[:EXCERPT_BYTES],
        )

    async def _handle(self, message: Message) -> tuple[Notification, list[ResourceKey]] | None:
        """The notification and its keys (sorted); None when it was dropped (and counted)."""
        try:
            notification = decode_notification(message.body)
        except MalformedEventError as exc:
            self._drop_malformed(message, exc)
            return None
        keys = await self._resolve(notification, message)
        if keys is None:
            return None
        log.debug("%s %s: %s", notification.event_type, notification.message_id, sorted(keys))
        return notification, sorted(keys)

    async def _resolve(
        self, notification: Notification, message: Message
    ) -> set[ResourceKey] | None:
        """Keys for ``notification``, retrying lookups; None when it was dropped (and counted)."""
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            try:
                return await resolve(notification, self._reader, memory=self._memory)
            except MalformedEventError as exc:
                self._drop_malformed(message, exc)
                return None
            except NetworkResponseError as exc:
                self._stats.dropped += 1
                log.error(
                    "dropped %s %s: %s", notification.event_type, notification.message_id, exc
                )
                return None
            except NetworkUnavailableError as exc:
                if attempt == self._attempts or self._closed:
                    break
                log.warning(
                    "%s %s: %s; retrying in %.1fs (attempt %d of %d)",
                    notification.event_type,
                    notification.message_id,
                    exc,
                    delay,
                    attempt + 1,
                    self._attempts,
                )
                await self._sleep(delay)
                delay = min(delay * 2, self._max_backoff)
        self._stats.dropped += 1
        log.error(
            "dropped %s %s: the network API could not answer after %d attempts",
            notification.event_type,
            notification.message_id,
            attempt,
        )
        return None

    def _drop_malformed(self, message: Message, exc: MalformedEventError) -> None:
        self._stats.malformed += 1
        log.warning(
            "dropped a malformed message on %s/%s: %s; body starts %r",
            message.exchange,
            message.routing_key,
            exc.reason,
            message.body[:EXCERPT_BYTES],
        )
