"""The network service: every resource operation as one database transaction.

The API layer calls ``create``/``show``/``list``/``update``/``delete`` with
the caller's context and the parsed JSON; this module parses the body
against the resource's attributes, runs the resource's rules in a
transaction, retries a transaction that lost a uniqueness race (another
request took the same address or id first; only on databases that take
concurrent writers), and reports each change to ``events`` (the notifier)
after the commit, with the payloads Neutron sends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from astara.network import attributes
from astara.network.context import Context
from astara.network.db.engine import Database
from astara.network.errors import Conflict, NotFound
from astara.network.query import ListQuery, apply
from astara.network.resources.base import Resource
from astara.network.resources.networks import Networks
from astara.network.resources.ports import Ports
from astara.network.resources.subnets import Subnets
from astara.settings import NetworkSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRIES = 10


class Events(Protocol):
    """Where the service reports changes (the notifier); see ``astara.network.notify``."""

    def start(self, ctx: Context, event_type: str, payload: dict[str, Any]) -> None: ...

    def end(self, ctx: Context, event_type: str, payload: dict[str, Any]) -> None: ...


class NoEvents:
    def start(self, ctx: Context, event_type: str, payload: dict[str, Any]) -> None:
        pass

    def end(self, ctx: Context, event_type: str, payload: dict[str, Any]) -> None:
        pass


class NetworkService:
    def __init__(
        self, db: Database, settings: NetworkSettings, events: Events | None = None
    ) -> None:
        self.db = db
        self.settings = settings
        self.events: Events = events or NoEvents()
        resources: list[Resource] = [Networks(settings), Subnets(), Ports()]
        self.resources: dict[str, Resource] = {r.collection: r for r in resources}

    def resource(self, collection: str) -> Resource:
        found = self.resources.get(collection)
        if found is None:
            raise NotFound("The resource could not be found.", type="HTTPNotFound")
        return found

    def _write(self, work: Callable[[Session], T]) -> T:
        for attempt in range(RETRIES):
            try:
                with self.db.write() as session:
                    return work(session)
            except IntegrityError as exc:
                if attempt == RETRIES - 1:
                    raise Conflict(
                        f"A concurrent request changed the same resource: {exc.orig}"
                    ) from exc
                log.debug("retrying after a lost uniqueness race: %s", exc.orig)
        raise AssertionError("unreachable")

    # -- operations -------------------------------------------------------------------
    def create(self, ctx: Context, collection: str, document: Any) -> dict[str, Any]:
        resource = self.resource(collection)
        body = attributes.parse(
            resource.name, resource.attributes, document, create=True, is_admin=ctx.is_admin
        )
        self.events.start(
            ctx, f"{resource.name}.create.start", {resource.name: document[resource.name]}
        )

        def work(session: Session) -> dict[str, Any]:
            row = resource.create(session, ctx, body)
            session.flush()
            return resource.view(row, ctx)

        view = self._write(work)
        self.events.end(ctx, f"{resource.name}.create.end", {resource.name: view})
        return view

    def show(self, ctx: Context, collection: str, resource_id: str) -> dict[str, Any]:
        resource = self.resource(collection)
        with self.db.read() as session:
            return resource.view(resource.load(session, ctx, resource_id), ctx)

    def list(self, ctx: Context, collection: str, query: ListQuery, *, url: str) -> dict[str, Any]:
        resource = self.resource(collection)
        with self.db.read() as session:
            views = [resource.view(row, ctx) for row in resource.rows(session, ctx, query.filters)]
        return apply(views, query, url=url, collection=collection)

    def update(
        self, ctx: Context, collection: str, resource_id: str, document: Any
    ) -> dict[str, Any]:
        resource = self.resource(collection)
        body = attributes.parse(
            resource.name, resource.attributes, document, create=False, is_admin=ctx.is_admin
        )
        self.events.start(
            ctx,
            f"{resource.name}.update.start",
            {"id": resource_id, resource.name: document[resource.name]},
        )

        def work(session: Session) -> tuple[dict[str, Any], dict[str, Any]]:
            row = resource.load(session, ctx, resource_id)
            before = resource.view(row, ctx)
            resource.update(session, ctx, row, body)
            session.flush()
            return before, resource.view(row, ctx)

        before, view = self._write(work)
        self.events.end(
            ctx,
            f"{resource.name}.update.end",
            {resource.name: view, f"original_{resource.name}": before},
        )
        return view

    def delete(self, ctx: Context, collection: str, resource_id: str) -> None:
        resource = self.resource(collection)
        self.events.start(
            ctx, f"{resource.name}.delete.start", {f"{resource.name}_id": resource_id}
        )

        def work(session: Session) -> dict[str, Any]:
            row = resource.load(session, ctx, resource_id)
            last = resource.view(row, ctx)
            resource.delete(session, ctx, row)
            return last

        last = self._write(work)
        self.events.end(
            ctx,
            f"{resource.name}.delete.end",
            {f"{resource.name}_id": resource_id, resource.name: last},
        )
