"""The AMQP bus: RabbitMQ behind the ``Bus`` interface, as oslo.messaging's rabbit driver uses it.

Chosen by URL (``astara.bus.transports``)::

    rabbit://user:pass@host:5672/vhost?queue=NAME&prefetch=N&durable=true
    amqp://… (the same), amqps://… (TLS)

Owns the connection to the broker, the topic exchanges Astara publishes to,
and the queues it consumes from. Decision record: ``docs/decisions/0008``.

Invariants:

- Exchanges are declared as oslo.messaging's ``notify_send`` declares them:
  type ``topic``, ``durable=False``, ``auto_delete=False`` (its defaults of
  ``amqp_durable_queues``/``amqp_auto_delete``), so a real Neutron's
  ``neutron`` exchange and ours never conflict on redeclare.
  ``?exchange_durable=true`` matches a cloud that sets ``amqp_durable_queues``.
- ``publish`` waits for the broker's confirm, at most ``timeout`` seconds
  (connecting included); a connection being re-established is waited for
  within that time (tried again every ``PUBLISH_RETRY`` seconds), so a
  publish made just after the broker came back is not lost; a broker that
  stays down, unreachable or refusing gives ``BusUnavailableError``, never an
  endless wait. Messages are persistent.
- A subscription is Astara's *own* queue (never oslo's shared
  ``notifications.info``), named by ``?queue=`` (``{exchange}`` is replaced;
  default ``astara-orchestrator.{exchange}``), durable by default so events
  published while the orchestrator is down wait for it; closing a
  subscription cancels its consumer but neither unbinds nor deletes a
  durable queue. ``?durable=false`` gives a transient, auto-delete queue.
- At most ``prefetch`` messages (default 1000) are unacknowledged per
  subscription: the broker holds back the rest. The messages a consumer took
  (one ``__anext__``, then a batch of what was already delivered with
  ``ready``) are acknowledged by ``ack()`` — all at once, one
  ``basic.ack`` with ``multiple`` on the last delivery tag — or, failing
  that, when it asks for the next one. A message taken but never
  acknowledged (crash, close mid-handling, lost connection) is redelivered:
  at least once.
- The connection is ``aio_pika.connect_robust``: after a lost connection it
  reconnects every ``reconnect_interval`` seconds and re-declares the
  exchanges, queues, bindings, QoS and consumers of every channel. Deliveries
  buffered from the lost channel are discarded (the broker redelivers them).
  Once a subscription's channel is restored, its ``restored`` count grows and
  its ``on_restored`` callbacks are called: what was published while it was
  gone may never have reached its queue (a transient exchange and its
  binding do not survive a broker restart; a publisher whose publish failed
  does not resend), so the consumer must look again at everything (the
  orchestrator's intake resyncs every router, decision 12).
- A delivery that cannot become a ``Message`` is logged and acknowledged
  (dropped); bodies are never looked into.
- ``close()`` closes every subscription, the channels and the connection and
  leaves no task behind; after it ``publish``/``subscribe`` raise
  ``BusClosedError``. Idempotent. Loop-affine, like the embedded bus.
- Errors never echo the URL (it carries the password).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from astara.bus.base import (
    JSON,
    BusClosedError,
    BusError,
    BusUnavailableError,
    InvalidBusUrlError,
    Message,
)

log = logging.getLogger(__name__)

SCHEMES = frozenset({"amqp", "amqps", "rabbit"})
DEFAULT_QUEUE = "astara-orchestrator.{exchange}"
DEFAULT_PREFETCH = 1000
"""Deliveries unacknowledged at once: a batch the intake records in one transaction."""
DEFAULT_TIMEOUT = 5.0
"""Seconds for connecting, and for one publish to be confirmed."""
DEFAULT_RECONNECT_INTERVAL = 2.0
"""Seconds between two reconnection attempts of a lost connection."""
PUBLISH_RETRY = 0.2
"""Seconds between two tries of one publish while the connection is being re-established."""
CLOSE_TIMEOUT = 5.0

_OPTIONS = frozenset(
    {
        "queue",
        "prefetch",
        "durable",
        "max_length",
        "exchange_durable",
        "timeout",
        "reconnect_interval",
    }
)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

# What a broker that is down, unreachable or gone mid-call raises through aio-pika.
_UNAVAILABLE = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,  # a RuntimeError: the channel was lost
    ConnectionError,
    OSError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class AmqpSettings:
    """A parsed AMQP bus URL. ``repr`` hides the password."""

    host: str
    port: int
    login: str
    password: str
    virtualhost: str
    ssl: bool = False
    queue: str = DEFAULT_QUEUE
    prefetch: int = DEFAULT_PREFETCH
    durable: bool = True
    max_length: int | None = None
    exchange_durable: bool = False
    timeout: float = DEFAULT_TIMEOUT
    reconnect_interval: float = DEFAULT_RECONNECT_INTERVAL

    def __repr__(self) -> str:
        return (
            f"AmqpSettings({self.login}@{self.host}:{self.port}/{self.virtualhost} "
            f"queue={self.queue!r} prefetch={self.prefetch} durable={self.durable})"
        )

    def queue_name(self, exchange: str) -> str:
        return self.queue.replace("{exchange}", exchange)


def parse_amqp_url(url: str) -> AmqpSettings:
    """Settings for ``rabbit://``/``amqp://``/``amqps://``; ``InvalidBusUrlError`` if bad."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidBusUrlError("the AMQP bus URL does not parse (host or port)") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InvalidBusUrlError(f"{scheme}:// is not an AMQP bus URL")
    if "," in parts.netloc:
        raise InvalidBusUrlError(f"{scheme}:// takes one broker, not a list of hosts")
    host = parts.hostname
    if not host:
        raise InvalidBusUrlError(f"{scheme}:// needs a broker host")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if "/" in path:
        raise InvalidBusUrlError(f"{scheme}:// vhost must be one path segment (escape '/' as %2F)")
    options = _options(scheme, parts.query)
    return AmqpSettings(
        host=host,
        port=port or (5671 if scheme == "amqps" else 5672),
        login=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        virtualhost=unquote(path) or "/",
        ssl=scheme == "amqps",
        queue=_queue(scheme, options),
        prefetch=_integer(scheme, options, "prefetch", maximum=65535) or DEFAULT_PREFETCH,
        durable=_boolean(scheme, options, "durable", default=True),
        max_length=_integer(scheme, options, "max_length"),
        exchange_durable=_boolean(scheme, options, "exchange_durable", default=False),
        timeout=_seconds(scheme, options, "timeout", DEFAULT_TIMEOUT),
        reconnect_interval=_seconds(
            scheme, options, "reconnect_interval", DEFAULT_RECONNECT_INTERVAL
        ),
    )


def _options(scheme: str, query: str) -> dict[str, str]:
    try:
        raw = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidBusUrlError(f"{scheme}:// options must be key=value pairs") from None
    unknown = sorted(set(raw) - _OPTIONS)
    if unknown:
        raise InvalidBusUrlError(f"unknown {scheme}:// option(s): {', '.join(unknown)}")
    repeated = sorted(k for k, v in raw.items() if len(v) != 1)
    if repeated:
        raise InvalidBusUrlError(f"{scheme}:// option(s) given twice: {', '.join(repeated)}")
    return {k: v[0] for k, v in raw.items()}


def _queue(scheme: str, options: dict[str, str]) -> str:
    name = options.get("queue", DEFAULT_QUEUE)
    if not name or len(name.encode()) > 200 or name.startswith("amq."):
        raise InvalidBusUrlError(
            f"{scheme}:// queue must be 1 to 200 bytes and not start with 'amq.'"
        )
    return name


def _integer(
    scheme: str, options: dict[str, str], key: str, maximum: int = 2**31 - 1
) -> int | None:
    """The option ``key`` as an integer in [1, maximum]; None when absent."""
    value = options.get(key)
    if value is None:
        return None
    if not value.isdigit() or not 1 <= int(value) <= maximum:
        raise InvalidBusUrlError(f"{scheme}:// {key} must be one integer from 1 to {maximum}")
    return int(value)


def _boolean(scheme: str, options: dict[str, str], key: str, *, default: bool) -> bool:
    value = options.get(key)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise InvalidBusUrlError(f"{scheme}:// {key} must be true or false")


def _seconds(scheme: str, options: dict[str, str], key: str, default: float) -> float:
    value = options.get(key)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 3600:
        raise InvalidBusUrlError(f"{scheme}:// {key} must be a number of seconds (0, 3600]")
    return seconds


class AmqpSubscription:
    """Astara's queue bound to one exchange, consumed with bounded prefetch; see the module."""

    def __init__(
        self,
        *,
        bus: AmqpBus,
        settings: AmqpSettings,
        exchange: str,
        binding: str,
        queue_name: str,
    ) -> None:
        self._bus = bus
        self._settings = settings
        self._exchange = exchange
        self._binding = binding
        self._queue_name = queue_name
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._pending: deque[tuple[Message, AbstractIncomingMessage]] = deque()
        self._in_hand: list[AbstractIncomingMessage] = []
        """Taken by the consumer, not yet acknowledged, in delivery order."""
        self._wakeup = asyncio.Event()
        self._closed = False
        self._delivered = 0
        self._acked = 0
        self._discarded = 0
        self._max_unacked = 0
        self._restored = 0
        self._on_restored: list[Callable[[], object]] = []

    @property
    def exchange(self) -> str:
        return self._exchange

    @property
    def binding(self) -> str:
        return self._binding

    @property
    def queue_name(self) -> str:
        return self._queue_name

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Deliveries received from the broker and not yet taken by the consumer."""
        return len(self._pending)

    @property
    def unacked(self) -> int:
        """Deliveries the broker counts as unacknowledged: pending plus those in hand."""
        return len(self._pending) + len(self._in_hand)

    @property
    def max_unacked(self) -> int:
        """The most deliveries ever unacknowledged at once (bounded by ``prefetch``)."""
        return self._max_unacked

    @property
    def delivered(self) -> int:
        return self._delivered

    @property
    def acked(self) -> int:
        return self._acked

    @property
    def discarded(self) -> int:
        """Deliveries dropped: not convertible to a ``Message``, or stale after a reconnect."""
        return self._discarded

    @property
    def restored(self) -> int:
        """Times the channel was lost and restored (queue re-declared, re-bound, consumed again).

        Each is a gap: what was published while it was gone may never reach the queue.
        """
        return self._restored

    def on_restored(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` (on the loop) each time the channel is restored; see ``restored``.

        Called once the queue is bound and consumed again, so whatever is
        published from then on is delivered. An exception is logged, not raised.
        """
        self._on_restored.append(callback)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.unacked} unacked"
        return f"<AmqpSubscription {self._exchange}:{self._binding} -> {self._queue_name} {state}>"

    async def _start(self, connection: AbstractRobustConnection) -> None:
        settings = self._settings
        self._channel = await _open_channel(connection)
        await self._channel.set_qos(prefetch_count=settings.prefetch)
        exchange = await _declare_exchange(self._channel, self._exchange, settings)
        arguments: dict[str, int | str] = {}
        if settings.max_length is not None:
            arguments = {"x-max-length": settings.max_length, "x-overflow": "drop-head"}
        self._queue = await self._channel.declare_queue(
            self._queue_name,
            durable=settings.durable,
            auto_delete=not settings.durable,
            arguments=arguments or None,
        )
        await self._queue.bind(exchange, routing_key=self._binding)
        self._consumer_tag = await self._queue.consume(self._deliver, no_ack=False)
        # after aio-pika re-declared the queue, its binding and the consumer on the new channel
        self._channel.reopen_callbacks.add(self._reopened)

    def _reopened(self, _channel: object) -> None:
        if self._closed:
            return
        self._restored += 1
        log.warning(
            "the AMQP channel of %s was lost and is restored (%d so far); what was published "
            "meanwhile may not have reached it",
            self._queue_name,
            self._restored,
        )
        for callback in list(self._on_restored):
            try:
                callback()
            except Exception:
                # Why so broad: a listener's bug must not break aio-pika's reconnection.
                log.exception("a listener of %s's restoration failed", self._queue_name)

    async def _deliver(self, incoming: AbstractIncomingMessage) -> None:
        """aio-pika's consumer callback: buffer the delivery for ``__anext__``."""
        if self._closed:
            return  # not acked: the broker requeues it when the channel closes
        try:
            message = Message(
                exchange=incoming.exchange or self._exchange,
                routing_key=incoming.routing_key or "",
                body=bytes(incoming.body),
                content_type=incoming.content_type or JSON,
                content_encoding=incoming.content_encoding or "utf-8",
            )
        except Exception:
            # Why so broad: whatever is wrong with one delivery must not stop the consumer.
            self._discarded += 1
            log.exception("dropped an AMQP delivery on %s that is no message", self._queue_name)
            with contextlib.suppress(*_UNAVAILABLE, aio_pika.exceptions.MessageProcessError):
                await incoming.ack()
            return
        self._delivered += 1
        self._pending.append((message, incoming))
        self._max_unacked = max(self._max_unacked, self.unacked)
        self._wakeup.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        """Acknowledge the messages in hand (they were handled), then wait for the next one."""
        await self.ack()
        while True:
            if self._closed:
                raise StopAsyncIteration
            taken = self.ready(1)
            if taken:
                return taken[0]
            self._wakeup.clear()
            await self._wakeup.wait()

    def ready(self, limit: int) -> list[Message]:
        """Up to ``limit`` deliveries already buffered, taken (in hand) without waiting."""
        taken: list[Message] = []
        while self._pending and len(taken) < limit and not self._closed:
            message, incoming = self._pending.popleft()
            if _stale(incoming):
                # its channel was lost: the broker redelivers it on the new one
                self._discarded += 1
                continue
            self._in_hand.append(incoming)
            taken.append(message)
        return taken

    async def ack(self) -> None:
        """Acknowledge every message in hand, now; ``__anext__`` does it otherwise. Idempotent.

        One ``basic.ack`` with ``multiple`` on the last delivery tag of the
        current channel: every earlier delivery on it was either handed out
        (and is in hand, or was acknowledged) or acknowledged when it was
        dropped. A lost channel makes this a no-op for its deliveries: the
        broker redelivers them.
        """
        in_hand, self._in_hand = self._in_hand, []
        live = [incoming for incoming in in_hand if not _stale(incoming)]
        if len(live) < len(in_hand):
            log.info(
                "could not acknowledge %d messages on %s (their channel was lost); "
                "the broker redelivers them",
                len(in_hand) - len(live),
                self._queue_name,
            )
        if not live:
            return
        last = live[-1]
        try:
            if len(live) == 1:
                await last.ack()
            else:
                # deliveries of one channel only: a reconnect in between made the older stale
                await last.ack(multiple=True)
        except (*_UNAVAILABLE, aio_pika.exceptions.MessageProcessError) as exc:
            log.info(
                "could not acknowledge %d messages on %s (%s); the broker redelivers them",
                len(live),
                self._queue_name,
                _why(exc),
            )
            return
        self._acked += len(live)

    async def close(self) -> None:
        """Cancel the consumer and close the channel; unacknowledged messages are redelivered.

        A durable queue stays, bound: events keep waiting in it for the next consumer.
        """
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        self._in_hand = []
        self._wakeup.set()
        self._bus._forget(self)
        channel, self._channel = self._channel, None
        if channel is None or channel.is_closed:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if self._queue is not None and self._consumer_tag is not None:
                    await self._queue.cancel(self._consumer_tag)
                await channel.close()
        except _UNAVAILABLE as exc:
            log.info("closing the channel of %s: %s", self._queue_name, exc)


async def _open_channel(
    connection: AbstractRobustConnection, *, publisher_confirms: bool = False
) -> AbstractRobustChannel:
    """A new channel; a connection being re-established gives an ``AMQPConnectionError``.

    (aio-pika raises a bare ``RuntimeError`` then, "Connection was not opened".)
    """
    if connection.is_closed or not getattr(connection, "transport", True):
        raise aiormq.exceptions.AMQPConnectionError("the connection is being re-established")
    try:
        return await connection.channel(publisher_confirms=publisher_confirms)
    except RuntimeError as exc:
        if isinstance(exc, aiormq.exceptions.ChannelInvalidStateError):
            raise
        raise aiormq.exceptions.AMQPConnectionError(str(exc)) from exc


def _stale(incoming: AbstractIncomingMessage) -> bool:
    try:
        incoming.channel  # noqa: B018  (raises once the delivery's channel is closed)
    except aio_pika.exceptions.ChannelInvalidStateError:
        return True
    return False


async def _declare_exchange(
    channel: AbstractChannel, name: str, settings: AmqpSettings
) -> AbstractExchange:
    return await channel.declare_exchange(
        name, aio_pika.ExchangeType.TOPIC, durable=settings.exchange_durable, auto_delete=False
    )


class AmqpBus:
    """A RabbitMQ connection behind the ``Bus`` interface; connects on first use."""

    def __init__(self, settings: AmqpSettings) -> None:
        self._settings = settings
        self._connection: AbstractRobustConnection | None = None
        self._connecting = asyncio.Lock()
        self._publisher: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._subscriptions: list[AmqpSubscription] = []
        self._closed = False
        self._published = 0

    @classmethod
    def from_url(cls, url: str) -> AmqpBus:
        return cls(parse_amqp_url(url))

    @property
    def settings(self) -> AmqpSettings:
        return self._settings

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def published(self) -> int:
        """Messages the broker confirmed."""
        return self._published

    def subscriptions(self) -> list[AmqpSubscription]:
        return list(self._subscriptions)

    def __repr__(self) -> str:
        return f"<AmqpBus {self._settings!r}{' closed' if self._closed else ''}>"

    async def publish(
        self, *, exchange: str, routing_key: str, body: bytes, content_type: str = JSON
    ) -> None:
        self._check_open()
        outgoing = aio_pika.Message(
            bytes(body),
            content_type=content_type,
            content_encoding="utf-8",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        failed: BaseException | None = None  # the last try's error, when the time runs out
        try:
            async with asyncio.timeout(self._settings.timeout):
                while True:
                    try:
                        target = await self._exchange(exchange)
                        await target.publish(outgoing, routing_key=routing_key)
                        break
                    except aiormq.exceptions.ChannelPreconditionFailed:
                        raise
                    except _UNAVAILABLE as exc:  # reconnecting: wait for it, within the timeout
                        self._exchanges.pop(exchange, None)
                        self._check_open()
                        failed = exc
                        await asyncio.sleep(PUBLISH_RETRY)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            self._exchanges.pop(exchange, None)
            raise BusError(f"exchange {exchange!r} exists with other properties: {exc}") from exc
        except _UNAVAILABLE as exc:
            self._exchanges.pop(exchange, None)
            self._check_open()
            why = (
                _why(exc) if failed is None else f"{_why(failed)} (for {self._settings.timeout:g}s)"
            )
            raise BusUnavailableError(f"the AMQP broker did not take the message: {why}") from (
                failed or exc
            )
        self._published += 1

    async def subscribe(
        self, *, exchange: str, binding: str, max_pending: int | None = None
    ) -> AmqpSubscription:
        """Bind Astara's queue for ``exchange``; see the module for what it keeps across restarts.

        ``max_pending`` is not a local bound here (prefetch is): when given, it
        caps the broker queue (``x-max-length``, dropping the oldest), as
        ``?max_length=`` does; a durable queue that exists with another cap
        gives ``BusError``.
        """
        self._check_open()
        if max_pending is not None and max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {max_pending}")
        name = self._settings.queue_name(exchange)
        if any(s.queue_name == name for s in self._subscriptions):
            raise BusError(
                f"queue {name!r} is already consumed by this bus; give each subscription its "
                "own queue (?queue=...{exchange}...) or another bus"
            )
        settings = self._settings
        if max_pending is not None:
            settings = dataclasses.replace(settings, max_length=max_pending)
        subscription = AmqpSubscription(
            bus=self, settings=settings, exchange=exchange, binding=binding, queue_name=name
        )
        self._subscriptions.append(subscription)
        try:
            async with asyncio.timeout(settings.timeout):
                connection = await self._connect()
                await subscription._start(connection)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            await subscription.close()
            raise BusError(f"queue {name!r} exists with other properties: {exc}") from exc
        except _UNAVAILABLE as exc:
            await subscription.close()
            self._check_open()
            raise BusUnavailableError(
                f"could not subscribe on the AMQP broker: {_why(exc)}"
            ) from exc
        except BaseException:
            await subscription.close()
            raise
        return subscription

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.close()
        self._exchanges.clear()
        self._publisher = None
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await connection.close()
            except _UNAVAILABLE as exc:
                log.info("closing the AMQP connection: %s", exc)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosedError("the AMQP bus is closed")

    def _forget(self, subscription: AmqpSubscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    async def _connect(self) -> AbstractRobustConnection:
        async with self._connecting:
            self._check_open()
            if self._connection is None:
                s = self._settings
                connection = await aio_pika.connect_robust(
                    host=s.host,
                    port=s.port,
                    login=s.login,
                    password=s.password,
                    virtualhost=s.virtualhost,
                    ssl=s.ssl,
                    timeout=s.timeout,
                    reconnect_interval=s.reconnect_interval,
                    client_properties={"connection_name": "astara"},
                )
                if self._closed:  # closed while connecting
                    await connection.close()
                    self._check_open()
                self._connection = connection
            return self._connection

    async def _exchange(self, name: str) -> AbstractExchange:
        found = self._exchanges.get(name)
        if found is not None:
            return found
        connection = await self._connect()
        if self._publisher is None or self._publisher.is_closed:
            self._publisher = await _open_channel(connection, publisher_confirms=True)
            self._exchanges.clear()
        declared = await _declare_exchange(self._publisher, name, self._settings)
        self._exchanges[name] = declared
        return declared


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
