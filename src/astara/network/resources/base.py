"""The shape every resource module gives the service: parse, create, update, delete, view.

Methods take an open session and the caller's context; they raise the errors
of ``astara.network.errors`` and never commit (the service owns the transaction).

Optional: ``before_list(session, ctx, filters)``, run by the service in a write
transaction before a list's read (security groups make a project's default
group there, as Neutron does on listing); ``create_view(session, ctx, body)``,
called by the service instead of ``create`` and ``view``: inserts the resource and
returns its view without the ORM (ports, the hottest write: decision 14).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy.orm import Session

from astara.network.attributes import Attr
from astara.network.context import Context


class Resource(Protocol):
    @property
    def name(self) -> str:
        """Singular name in bodies and events (``network``)."""

    @property
    def collection(self) -> str:
        """The collection in URLs (``networks``)."""

    @property
    def attributes(self) -> Sequence[Attr]:
        """What a request body may carry."""

    def create(self, session: Session, ctx: Context, body: dict[str, Any]) -> Any:
        """Insert the resource described by the parsed ``body``; return its row."""

    def load(self, session: Session, ctx: Context, resource_id: str) -> Any:
        """The row, if the caller may see it; NotFound otherwise."""

    def rows(
        self, session: Session, ctx: Context, filters: dict[str, tuple[str, ...]]
    ) -> Sequence[Any]:
        """Every row the caller may see; ``filters`` may narrow the SQL (never widen it)."""

    def update(self, session: Session, ctx: Context, row: Any, body: dict[str, Any]) -> None:
        """Apply the parsed ``body`` to ``row``."""

    def delete(self, session: Session, ctx: Context, row: Any) -> None:
        """Remove ``row`` and what it owns; InUse if something depends on it."""

    def view(self, row: Any, ctx: Context) -> dict[str, Any]:
        """The resource as the API returns it to ``ctx``."""
