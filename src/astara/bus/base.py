"""The message bus interface: what a transport is, what it carries, what it raises.

The network service publishes on a ``Bus``; the orchestrator subscribes to
it. Two transports fit behind this one interface: the embedded in-process
bus (``astara.bus.embedded``, the default of ``astara up``) and AMQP
(RabbitMQ, a later step). The interface is shaped after AMQP so that the
second transport is a translation, not a redesign:

- a message is opaque ``bytes`` plus a content type, published to a named
  *topic exchange* with a *routing key* (``neutron`` / ``notifications.info``);
- a subscription is a queue bound to one exchange with a binding pattern
  (``*`` is one dot-separated word, ``#`` zero or more words);
- each subscription has its own bounded queue: every matching subscription
  gets every message (fan-out), and when a queue is full its *oldest*
  message is dropped (RabbitMQ's ``x-overflow: drop-head``), never the
  publisher blocked;
- consumers only learn *which* resource changed and reconcile from the
  source of truth; a consumer says when it is done with what it took
  (``Subscription.ack``): AMQP then acknowledges, and redelivers what was
  taken and never acknowledged (at least once); the embedded bus, in one
  process with its consumer, delivers at most once and ``ack`` does nothing.

Encoding (the oslo.messaging envelope) belongs to ``astara.wire``; the bus
never looks inside a body.

Errors, and what the caller does next::

    BusError
     ├── BusClosedError       closed bus or subscription: permanent for the object; make a new one
     ├── BusUnavailableError  the transport cannot take the message now: retry after a delay
     └── InvalidBusUrlError   unknown transport or bad options in a bus URL: fix the configuration
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

JSON = "application/json"
"""The content type of every body Astara publishes today."""

DEFAULT_MAX_PENDING = 1024
"""Messages a subscription holds for a slow consumer before it drops the oldest."""


class BusError(Exception):
    """Base of every error a bus transport raises on purpose."""


class BusClosedError(BusError):
    """The bus or the subscription was closed; using it again is a bug or a shutdown race."""


class BusUnavailableError(BusError):
    """The transport cannot accept or deliver messages right now; retry after a delay."""


class InvalidBusUrlError(BusError, ValueError):
    """A bus URL names an unknown transport or carries bad options."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message as a subscriber receives it. Immutable; shared between subscribers."""

    exchange: str
    routing_key: str
    body: bytes
    content_type: str = JSON
    content_encoding: str = "utf-8"


class Subscription(Protocol):
    """A bound queue of messages, iterated with ``async for``.

    Iteration yields messages in publish order (minus what overflow dropped)
    and ends, cleanly, once the subscription or its bus is closed.
    """

    @property
    def exchange(self) -> str:
        """The exchange this subscription is bound to."""
        ...

    @property
    def binding(self) -> str:
        """The binding pattern (``notifications.*``, ``#``...)."""
        ...

    def __aiter__(self) -> Subscription: ...

    async def __anext__(self) -> Message:
        """The next message; waits for one. ``StopAsyncIteration`` once closed."""
        ...

    def ready(self, limit: int) -> list[Message]:
        """Up to ``limit`` messages already delivered, taken without waiting (maybe none).

        Like ``__anext__`` they are then in hand, but what was in hand stays
        unacknowledged: a consumer takes a batch with one ``__anext__`` and
        ``ready``, handles it, and acknowledges it all with one ``ack``.
        """
        ...

    async def ack(self) -> None:
        """Acknowledge every message taken and not yet acknowledged. Idempotent.

        ``__anext__`` acknowledges what is in hand before it takes the next
        message; call ``ack`` to acknowledge sooner (after recording what the
        messages named). A message never acknowledged (crash, close, lost
        connection) is redelivered by a broker; the embedded bus does nothing.
        """
        ...

    async def close(self) -> None:
        """Unbind and discard undelivered messages; wake waiting consumers. Idempotent."""
        ...


class Bus(Protocol):
    """A topic-exchange message bus. One per process part; closed by its owner."""

    async def publish(
        self, *, exchange: str, routing_key: str, body: bytes, content_type: str = JSON
    ) -> None:
        """Deliver ``body`` to every subscription on ``exchange`` whose binding matches.

        Returns once the transport has taken the message: the embedded bus has
        queued it for every matching subscriber (dropping their oldest where
        full); AMQP will return on the broker's confirm. A message nobody is
        bound for is discarded, as AMQP does. Never waits for a consumer.

        Raises ``BusClosedError`` after ``close()``; ``BusUnavailableError`` when the
        transport is down (AMQP only; retry after a delay).
        """
        ...

    async def subscribe(
        self, *, exchange: str, binding: str, max_pending: int | None = None
    ) -> Subscription:
        """Bind a new queue on ``exchange`` with the pattern ``binding``.

        Only messages published after this returns are delivered.
        ``max_pending`` bounds the queue (``None``: the transport's default);
        beyond it the oldest message is dropped and counted.

        Raises ``BusClosedError`` after ``close()``, ``ValueError`` for
        ``max_pending < 1``, ``BusUnavailableError`` when the transport is down.
        """
        ...

    async def close(self) -> None:
        """Close every subscription (their iterators end) and refuse further use. Idempotent."""
        ...
