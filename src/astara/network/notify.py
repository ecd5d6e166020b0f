"""Neutron-format notifications from the network API: which operation emits which event.

The REST handlers call a ``Notifier``; it builds the oslo envelope
(``astara.wire.neutron_events``) and publishes it on the bus, exchange
``neutron``, routing key ``notifications.info`` — what a real Neutron 29 does,
so the orchestrator cannot tell the two apart. Every shape below is taken
from ``../shared/fixtures/neutron/notifications/`` (fixture number in
brackets) or, where no fixture exists, from Neutron's API controller.

``<r>`` is the resource (``network``, ``floatingip``...), ``<rs>`` its
collection; "resource" means the object exactly as the API returns it.

API operation, then each event it emits::

    POST /<rs> (one), once the body is valid
        <r>.create.start         the request body as sent: {"<r>": {...}}           [089, 014]
      succeeded
        <r>.create.end           {"<r>": resource}                                  [002, 015, 017]
    POST /<rs> (bulk), once the body is valid
        <r>.create.start         the request body as sent: {"<rs>": [...]}          (source)
      succeeded
        <r>.create.end           {"<rs>": [resource, ...]}                          (source)
    PUT /<rs>/<id>, once the body is valid
        <r>.update.start         the request body plus the id:
                                 {"<r>": {...}, "id": id}                           [018]
      succeeded
        <r>.update.end           {"<r>": resource}                                  [019, 080, 012]
    DELETE /<rs>/<id>
        <r>.delete.start         {"<r>_id": id}                                     (source)
      succeeded
        <r>.delete.end           {"<r>_id": id, "<r>": resource as it was}          [110, 115, 108]
    PUT /routers/<id>/add_router_interface, succeeded
        router.interface.create  {"router_interface": the response body}            [013]
                                 (id = the router, project_id, port_id, network_id,
                                 subnet_id, subnet_ids); no .start/.end
    PUT /routers/<id>/remove_router_interface, succeeded
        router.interface.delete  {"router_interface": the response body}            [111]

Setting or clearing a router's gateway is a router update; associating or
disassociating a floating IP is a floating IP update [018, 019, 104].

What the API must *not* emit (README of the fixtures):

- no ``port.create.*`` for ports the service makes itself: router
  interface, gateway and floating IP ports (nor ``port.delete.*`` when it
  removes them: Neutron notifies from its API layer only, not its plugins);
- a body that fails validation (400) emits nothing: validate, *then* call
  the ``*_start`` method, *then* look up and authorize — a refused (403) or
  missing (404) resource leaves a lone ``.start``, as Neutron does;
- ``*_end`` only after the operation succeeded.

Invariant: a notification never fails the API request. A publish error
(bus closed or down, timeout, a payload that is not JSON) is logged with its
traceback, counted in ``failed`` and swallowed; the method returns False.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from astara.bus.base import Bus
from astara.wire.neutron_events import (
    CONTENT_TYPE,
    EXCHANGE,
    ROUTING_KEY,
    RequestContext,
    encode_notification,
)

__all__ = ["DEFAULT_PUBLISH_TIMEOUT", "NeutronResource", "Notifier", "RequestContext"]

log = logging.getLogger(__name__)

NeutronResource = Literal[
    "network", "subnet", "port", "router", "floatingip", "security_group", "security_group_rule"
]

_COLLECTIONS: Mapping[NeutronResource, str] = {
    "network": "networks",
    "subnet": "subnets",
    "port": "ports",
    "router": "routers",
    "floatingip": "floatingips",
    "security_group": "security_groups",
    "security_group_rule": "security_group_rules",
}

DEFAULT_PUBLISH_TIMEOUT = 5.0
"""Seconds an API request may wait for the bus to take one notification."""

Body = Mapping[str, Any]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Notifier:
    """Publishes the network API's notifications; one per network service process."""

    def __init__(
        self,
        *,
        bus: Bus,
        host: str,
        clock: Callable[[], datetime] = _utc_now,
        timeout: float = DEFAULT_PUBLISH_TIMEOUT,
    ) -> None:
        self._bus = bus
        self._publisher_id = f"network.{host}"
        self._clock = clock
        self._timeout = timeout
        self._published = 0
        self._failed = 0

    @property
    def publisher_id(self) -> str:
        """``network.<host>``, as Neutron's notifier names itself."""
        return self._publisher_id

    @property
    def published(self) -> int:
        return self._published

    @property
    def failed(self) -> int:
        """Notifications lost to a publish error (each one logged)."""
        return self._failed

    async def create_start(
        self, ctx: RequestContext, *, resource: NeutronResource, body: Body
    ) -> bool:
        """``<r>.create.start`` with the validated request body, single or bulk, as sent."""
        return await self.emit(ctx, event_type=f"{resource}.create.start", payload=body)

    async def create_end(
        self, ctx: RequestContext, *, resource: NeutronResource, result: Body
    ) -> bool:
        """``<r>.create.end`` with ``{"<r>": result}``, the created resource as returned."""
        return await self.emit(ctx, event_type=f"{resource}.create.end", payload={resource: result})

    async def bulk_create_end(
        self, ctx: RequestContext, *, resource: NeutronResource, results: Sequence[Body]
    ) -> bool:
        """``<r>.create.end`` for a bulk POST: ``{"<rs>": [resource, ...]}``."""
        payload = {_COLLECTIONS[resource]: list(results)}
        return await self.emit(ctx, event_type=f"{resource}.create.end", payload=payload)

    async def update_start(
        self, ctx: RequestContext, *, resource: NeutronResource, resource_id: str, body: Body
    ) -> bool:
        """``<r>.update.start`` with the request body as sent plus ``"id"``."""
        payload = {**body, "id": resource_id}
        return await self.emit(ctx, event_type=f"{resource}.update.start", payload=payload)

    async def update_end(
        self, ctx: RequestContext, *, resource: NeutronResource, result: Body
    ) -> bool:
        """``<r>.update.end`` with ``{"<r>": result}``, the updated resource as returned."""
        return await self.emit(ctx, event_type=f"{resource}.update.end", payload={resource: result})

    async def delete_start(
        self, ctx: RequestContext, *, resource: NeutronResource, resource_id: str
    ) -> bool:
        """``<r>.delete.start`` with ``{"<r>_id": id}``."""
        payload = {f"{resource}_id": resource_id}
        return await self.emit(ctx, event_type=f"{resource}.delete.start", payload=payload)

    async def delete_end(
        self,
        ctx: RequestContext,
        *,
        resource: NeutronResource,
        resource_id: str,
        last_state: Body,
    ) -> bool:
        """``<r>.delete.end`` with ``{"<r>_id": id, "<r>": last_state}`` (as shown before deletion)."""
        payload = {f"{resource}_id": resource_id, resource: last_state}
        return await self.emit(ctx, event_type=f"{resource}.delete.end", payload=payload)

    async def router_interface_added(self, ctx: RequestContext, *, info: Body) -> bool:
        """``router.interface.create`` with ``{"router_interface": info}``, info = the response body."""
        return await self.emit(
            ctx, event_type="router.interface.create", payload={"router_interface": info}
        )

    async def router_interface_removed(self, ctx: RequestContext, *, info: Body) -> bool:
        """``router.interface.delete`` with ``{"router_interface": info}``, info = the response body."""
        return await self.emit(
            ctx, event_type="router.interface.delete", payload={"router_interface": info}
        )

    async def emit(self, ctx: RequestContext, *, event_type: str, payload: Body) -> bool:
        """Publish one notification; True if the bus took it. Raises nothing but cancellation."""
        try:
            body = encode_notification(
                event_type=event_type,
                payload=payload,
                context=ctx,
                publisher_id=self._publisher_id,
                timestamp=self._clock(),
            )
            async with asyncio.timeout(self._timeout):
                await self._bus.publish(
                    exchange=EXCHANGE, routing_key=ROUTING_KEY, body=body, content_type=CONTENT_TYPE
                )
        # Why so broad: whatever a transport or a bad payload raises, the API
        # request it reports on has already succeeded (or is about to) and must
        # not fail because of it. Logged with the traceback and counted.
        except Exception:
            self._failed += 1
            log.warning(
                "notification %s (request %s) not published; %d lost so far",
                event_type,
                ctx.request_id,
                self._failed,
                exc_info=True,
            )
            return False
        self._published += 1
        return True
