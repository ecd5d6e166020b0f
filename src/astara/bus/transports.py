"""Choosing a bus transport by URL: the one place that maps configuration to a ``Bus``.

Called by the CLI when it wires a part together (``--bus embedded://``).
Constructing a bus does no I/O; transports that need a connection make it on
first use, so this stays synchronous and cheap.

Known URLs:

==========================================  ==========================================
``embedded://``                             in-process bus (default); ``?max_pending=N``
                                            bounds each subscription's queue (default 1024)
``rabbit://user:pass@host:port/vhost``,     RabbitMQ (``astara.bus.amqp``), oslo.messaging's
``amqp://…``, ``amqps://…`` (TLS)           URL form; options ``?queue=NAME&prefetch=N&``
                                            ``durable=true&max_length=N&exchange_durable=``
                                            ``false&timeout=S&reconnect_interval=S``
==========================================  ==========================================

Invariant: an error never echoes the URL itself, which for AMQP carries a
password; it names the scheme or the offending option only.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from astara.bus.base import DEFAULT_MAX_PENDING, Bus, InvalidBusUrlError
from astara.bus.embedded import EmbeddedBus

DEFAULT_BUS_URL = "embedded://"

_AMQP = frozenset({"amqp", "amqps", "rabbit"})


def bus_from_url(url: str) -> Bus:
    """A new, unconnected bus for ``url``. Raises ``InvalidBusUrlError`` for anything unknown."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidBusUrlError(f"not a bus URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "embedded":
        if parts.netloc or parts.path.strip("/"):
            raise InvalidBusUrlError("embedded:// takes no host or path, only ?max_pending=N")
        return EmbeddedBus(max_pending=_max_pending(parts.query))
    if scheme in _AMQP:
        from astara.bus.amqp import AmqpBus  # aio-pika is imported only by those who use it

        return AmqpBus.from_url(url)
    shown = f"{scheme}://" if scheme else "a URL without a scheme"
    raise InvalidBusUrlError(
        f"unknown bus transport {shown}; known: embedded://, rabbit://, amqp://, amqps://"
    )


def _max_pending(query: str) -> int:
    try:
        options = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidBusUrlError("embedded:// options must be key=value pairs") from None
    unknown = sorted(set(options) - {"max_pending"})
    if unknown:
        raise InvalidBusUrlError(f"unknown embedded:// option(s): {', '.join(unknown)}")
    values = options.get("max_pending")
    if values is None:
        return DEFAULT_MAX_PENDING
    if len(values) != 1 or not values[0].isdigit() or int(values[0]) < 1:
        raise InvalidBusUrlError("embedded:// max_pending must be one integer >= 1")
    return int(values[0])
