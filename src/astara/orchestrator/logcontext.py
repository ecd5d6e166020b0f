"""The resource a log line is about: a context variable and a ``logging.Filter`` that shows it.

``Orchestrator._reconcile`` sets ``RESOURCE`` to the router id for the time
of one reconcile (tasks copy the context, so every line logged by that
reconcile, in any module, carries it); ``ResourceFilter``, installed on a
handler, adds ``record.resource`` (``-`` outside a reconcile) so that a
format can say ``[%(resource)s]``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["NO_RESOURCE", "RESOURCE", "ResourceFilter", "about"]

NO_RESOURCE = "-"
RESOURCE: ContextVar[str] = ContextVar("astara_resource", default=NO_RESOURCE)


@contextlib.contextmanager
def about(resource_id: str) -> Iterator[None]:
    """Log lines inside the block carry ``resource_id``."""
    token = RESOURCE.set(resource_id)
    try:
        yield
    finally:
        RESOURCE.reset(token)


class ResourceFilter(logging.Filter):
    """Adds ``record.resource`` (the current ``RESOURCE``) unless the record has one; keeps all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "resource"):
            record.resource = RESOURCE.get()
        return True
