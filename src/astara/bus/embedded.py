"""The embedded bus: an in-process topic exchange on asyncio, the default of ``astara up``.

Owns delivery between parts running in one process (network API →
orchestrator) with the semantics ``astara.bus.base`` promises for every
transport, so code written against it behaves the same on AMQP.

Invariants:

- ``publish`` never awaits anything: it matches the routing key against every
  subscription bound on the exchange (``astara.bus.topic``) and appends the
  one immutable ``Message`` to each matching queue. A publisher is never
  blocked by a slow or dead consumer.
- Each subscription's queue holds at most ``max_pending`` messages. When a
  message arrives at a full queue the *oldest* one is dropped (RabbitMQ's
  ``drop-head``: the newest news is the most useful to a reconciler), counted
  in ``EmbeddedSubscription.dropped`` and ``EmbeddedBus.dropped``, and logged
  at WARNING on the first drop and every ``LOG_EVERY_DROPS`` after.
- No tasks, threads or callbacks are created: nothing can leak. A consumer
  waiting in ``async for`` is woken by ``publish`` or ``close``.
- ``close()`` on a subscription unbinds it, discards what it had not
  delivered and ends every iteration over it; ``close()`` on the bus does
  that for all subscriptions and makes ``publish``/``subscribe`` raise
  ``BusClosedError``. Both are idempotent.
- Loop-affine: use it from the event loop thread only (it is not thread-safe).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Self

from astara.bus.base import DEFAULT_MAX_PENDING, JSON, BusClosedError, Message
from astara.bus.topic import Binding

log = logging.getLogger(__name__)

LOG_EVERY_DROPS = 1000
"""After the first drop of a subscription, a warning every this many drops."""


class EmbeddedSubscription:
    """A bounded in-memory queue bound to one exchange; see the module invariants."""

    def __init__(
        self,
        *,
        exchange: str,
        binding: str,
        max_pending: int,
        on_close: Callable[[EmbeddedSubscription], None],
    ) -> None:
        self._exchange = exchange
        self._binding = Binding(binding)
        self._max_pending = max_pending
        self._on_close = on_close
        self._pending: deque[Message] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._dropped = 0

    @property
    def exchange(self) -> str:
        return self._exchange

    @property
    def binding(self) -> str:
        return self._binding.pattern

    @property
    def dropped(self) -> int:
        """Messages this subscription lost to overflow."""
        return self._dropped

    @property
    def pending(self) -> int:
        """Messages queued and not yet taken by a consumer."""
        return len(self._pending)

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._pending)} pending"
        return f"<EmbeddedSubscription {self._exchange}:{self.binding} {state}>"

    def matches(self, routing_key: str) -> bool:
        return self._binding.matches(routing_key)

    def offer(self, message: Message) -> bool:
        """Queue ``message`` without waiting; False when the oldest message was dropped for it."""
        if self._closed:
            return True
        kept = len(self._pending) < self._max_pending
        if not kept:
            self._pending.popleft()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % LOG_EVERY_DROPS == 0:
                log.warning(
                    "bus subscription %s:%s is full (%d pending): dropped its oldest message, "
                    "%d dropped so far",
                    self._exchange,
                    self.binding,
                    self._max_pending,
                    self._dropped,
                )
        self._pending.append(message)
        self._wakeup.set()
        return kept

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._pending:
                return self._pending.popleft()
            self._wakeup.clear()
            await self._wakeup.wait()

    def ready(self, limit: int) -> list[Message]:
        """Up to ``limit`` queued messages, without waiting."""
        taken: list[Message] = []
        while self._pending and len(taken) < limit and not self._closed:
            taken.append(self._pending.popleft())
        return taken

    async def ack(self) -> None:
        """Nothing to acknowledge: delivery is at most once, in one process."""

    async def close(self) -> None:
        self.detach()

    def detach(self) -> None:
        """Close without awaiting (the bus uses it); same effect as ``close()``."""
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        self._wakeup.set()
        self._on_close(self)


class EmbeddedBus:
    """In-process topic exchanges, created on first use by name; see the module invariants."""

    def __init__(self, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        _check_max_pending(max_pending)
        self._max_pending = max_pending
        self._bindings: dict[str, list[EmbeddedSubscription]] = {}
        self._closed = False
        self._published = 0
        self._unrouted = 0
        self._dropped_by_closed = 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def published(self) -> int:
        """Messages accepted by ``publish``."""
        return self._published

    @property
    def unrouted(self) -> int:
        """Published messages no subscription was bound for (discarded, as AMQP does)."""
        return self._unrouted

    @property
    def dropped(self) -> int:
        """Messages lost to overflow, over every subscription this bus ever had."""
        live = sum(s.dropped for subs in self._bindings.values() for s in subs)
        return self._dropped_by_closed + live

    def subscriptions(self) -> list[EmbeddedSubscription]:
        """The open subscriptions, for status pages and tests."""
        return [s for subs in self._bindings.values() for s in subs]

    async def publish(
        self, *, exchange: str, routing_key: str, body: bytes, content_type: str = JSON
    ) -> None:
        if self._closed:
            raise BusClosedError("the embedded bus is closed")
        message = Message(
            exchange=exchange, routing_key=routing_key, body=bytes(body), content_type=content_type
        )
        self._published += 1
        routed = False
        for subscription in self._bindings.get(exchange, ()):
            if subscription.matches(routing_key):
                subscription.offer(message)
                routed = True
        if not routed:
            self._unrouted += 1

    async def subscribe(
        self, *, exchange: str, binding: str, max_pending: int | None = None
    ) -> EmbeddedSubscription:
        if self._closed:
            raise BusClosedError("the embedded bus is closed")
        limit = self._max_pending if max_pending is None else max_pending
        _check_max_pending(limit)
        subscription = EmbeddedSubscription(
            exchange=exchange, binding=binding, max_pending=limit, on_close=self._forget
        )
        self._bindings.setdefault(exchange, []).append(subscription)
        return subscription

    async def close(self) -> None:
        self._closed = True
        for subscription in self.subscriptions():
            subscription.detach()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _forget(self, subscription: EmbeddedSubscription) -> None:
        subs = self._bindings.get(subscription.exchange, [])
        if subscription in subs:
            subs.remove(subscription)
            self._dropped_by_closed += subscription.dropped
        if not subs:
            self._bindings.pop(subscription.exchange, None)


def _check_max_pending(value: int) -> None:
    if value < 1:
        raise ValueError(f"max_pending must be at least 1, not {value}")
