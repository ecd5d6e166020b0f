"""The message bus between the parts: one interface (``Bus``), embedded and AMQP transports.

``base`` defines the interface and its errors, ``topic`` the AMQP routing
rules, ``embedded`` the in-process transport, ``amqp`` RabbitMQ (imported
only by ``bus_from_url`` for an AMQP URL, or explicitly: aio-pika costs a
quarter second to import), ``transports`` the choice by URL.
Bodies are opaque bytes here; their format lives in ``astara.wire``.
"""

from astara.bus.base import (
    DEFAULT_MAX_PENDING,
    JSON,
    Bus,
    BusClosedError,
    BusError,
    BusUnavailableError,
    InvalidBusUrlError,
    Message,
    Subscription,
)
from astara.bus.embedded import EmbeddedBus, EmbeddedSubscription
from astara.bus.topic import Binding
from astara.bus.transports import DEFAULT_BUS_URL, bus_from_url

__all__ = [
    "DEFAULT_BUS_URL",
    "DEFAULT_MAX_PENDING",
    "JSON",
    "Binding",
    "Bus",
    "BusClosedError",
    "BusError",
    "BusUnavailableError",
    "EmbeddedBus",
    "EmbeddedSubscription",
    "InvalidBusUrlError",
    "Message",
    "Subscription",
    "bus_from_url",
]
