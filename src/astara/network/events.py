"""From the service's threads to the bus: ``Events`` as the service sees it, over a Notifier.

The service works in the API's worker threads and must not wait for the bus;
the notifier and the bus live on the event loop. ``LoopEvents.emit`` hands
each notification to the loop (``run_coroutine_threadsafe``) and returns:
notifications of one request keep their order, since the loop runs handed
over work in the order it arrived, and the embedded bus enqueues at once.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from typing import Any

from astara.network.context import Context
from astara.network.notify import Notifier
from astara.wire.neutron_events import RequestContext

log = logging.getLogger(__name__)


def request_context(ctx: Context) -> RequestContext:
    return RequestContext(
        project_id=ctx.project_id,
        user_id=ctx.user_id,
        is_admin=ctx.is_admin,
        roles=ctx.roles,
        request_id=ctx.request_id,
    )


class LoopEvents:
    """Publishes through ``notifier`` on ``loop``; see the module docstring."""

    def __init__(self, notifier: Notifier, loop: asyncio.AbstractEventLoop) -> None:
        self.notifier = notifier
        self.loop = loop
        self._pending: set[Future[bool]] = set()

    def emit(self, ctx: Context, event_type: str, payload: dict[str, Any]) -> None:
        if self.loop.is_closed():
            log.warning("notification %s dropped: the event loop is closed", event_type)
            return
        future = asyncio.run_coroutine_threadsafe(
            self.notifier.emit(request_context(ctx), event_type=event_type, payload=payload),
            self.loop,
        )
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def drain(self, timeout: float = 5.0) -> None:
        """Wait (from a thread other than the loop's) until every handed-over notification went out."""
        for future in list(self._pending):
            future.result(timeout=timeout)
