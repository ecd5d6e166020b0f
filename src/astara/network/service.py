"""The network service: every resource operation as one database transaction.

The API layer calls ``create``/``show``/``list``/``update``/``delete`` with
the caller's context and the parsed JSON; this module parses the body
against the resource's attributes, runs the resource's rules in a
transaction, retries a transaction that lost a uniqueness race (another
request took the same address or id first; only on databases that take
concurrent writers) or a deadlock, and reports each change to ``events`` (the notifier)
after the commit, with the payloads Neutron sends.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from astara.network import attributes
from astara.network.context import Context
from astara.network.db.engine import Database
from astara.network.errors import BadRequest, Conflict, NotFound
from astara.network.query import ListQuery, apply
from astara.network.resources.base import Resource
from astara.network.resources.floatingips import FloatingIPs
from astara.network.resources.networks import Networks
from astara.network.resources.ports import Ports
from astara.network.resources.routers import Routers
from astara.network.resources.security_groups import SecurityGroupRules, SecurityGroups
from astara.network.resources.subnets import Subnets
from astara.network.store import bump
from astara.settings import NetworkSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRIES = 10
TagChange = tuple[str, Any]
# PostgreSQL's deadlock_detected and serialization_failure: the transaction lost a race
# and is retried whole, like a lost uniqueness race
_RETRIED_SQLSTATES = ("40P01", "40001")


def _lost_race(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError):
        return True
    return getattr(exc.orig, "sqlstate", None) in _RETRIED_SQLSTATES


class Events(Protocol):
    """Where the service reports changes: the notifier, through ``events.py``.

    ``emit`` must return at once and never raise: the change is committed.
    """

    def emit(self, ctx: Context, event_type: str, payload: dict[str, Any]) -> None: ...


class NoEvents:
    def emit(self, ctx: Context, event_type: str, payload: dict[str, Any]) -> None:
        pass


def _last_state(name: str, view: dict[str, Any]) -> dict[str, Any]:
    """A deleted resource as Neutron's ``.delete.end`` carries it: its database dict.

    That dict differs from the API view [fixtures 110, 115]: a router's lacks the
    DVR/HA flags, a port's has ``standard_attr_id`` (an internal id this service
    does not have: null).
    """
    if name == "router":
        return {k: v for k, v in view.items() if k not in ("distributed", "ha")}
    if name == "port":
        return {**view, "standard_attr_id": None}
    return view


class NetworkService:
    def __init__(
        self, db: Database, settings: NetworkSettings, events: Events | None = None
    ) -> None:
        self.db = db
        self.settings = settings
        self.events: Events = events or NoEvents()
        ports = Ports()
        self.routers = Routers(ports)
        resources: list[Resource] = [
            Networks(settings),
            Subnets(),
            ports,
            self.routers,
            FloatingIPs(ports),
            SecurityGroups(),
            SecurityGroupRules(),
        ]
        self.resources: dict[str, Resource] = {r.collection: r for r in resources}

    def resource(self, collection: str) -> Resource:
        found = self.resources.get(collection.replace("-", "_"))  # /security-groups
        if found is None:
            raise NotFound("The resource could not be found.", type="HTTPNotFound")
        return found

    def _write(self, work: Callable[[Session], T]) -> T:
        for attempt in range(RETRIES):
            try:
                with self.db.write() as session:
                    return work(session)
            except DBAPIError as exc:
                if not _lost_race(exc):
                    raise
                if attempt == RETRIES - 1:
                    raise Conflict(
                        f"A concurrent request changed the same resource: {exc.orig}"
                    ) from exc
                log.debug("retrying after a lost uniqueness race: %s", exc.orig)
        raise AssertionError("unreachable")

    # -- operations -------------------------------------------------------------------
    # Each validates the body, then emits ``.start``, then looks up and authorises
    # inside the transaction, then emits ``.end`` once committed (see notify.py).
    def create(self, ctx: Context, collection: str, document: Any) -> dict[str, Any]:
        resource = self.resource(collection)
        body = attributes.parse(
            resource.name, resource.attributes, document, create=True, is_admin=ctx.is_admin
        )
        self.events.emit(
            ctx, f"{resource.name}.create.start", {resource.name: document[resource.name]}
        )

        # a resource may make its view itself, without the ORM (ports: decision 14)
        create_view = getattr(resource, "create_view", None)

        def work(session: Session) -> dict[str, Any]:
            if create_view is not None:
                made: dict[str, Any] = create_view(session, ctx, body)
                return made
            row = resource.create(session, ctx, body)
            session.flush()
            return resource.view(row, ctx)

        view = self._write(work)
        self.events.emit(ctx, f"{resource.name}.create.end", {resource.name: view})
        return view

    def show(self, ctx: Context, collection: str, resource_id: str) -> dict[str, Any]:
        resource = self.resource(collection)
        with self.db.read() as session:
            return resource.view(resource.load(session, ctx, resource_id), ctx)

    def list(self, ctx: Context, collection: str, query: ListQuery, *, url: str) -> dict[str, Any]:
        resource = self.resource(collection)
        prepare = getattr(resource, "before_list", None)  # e.g. a project's default group
        if prepare is not None:
            self._write(lambda session: prepare(session, ctx, query.filters))
        with self.db.read() as session:
            rows = resource.rows(session, ctx, query.filters)
            views = [resource.view(row, ctx) for row in rows]
        return apply(views, query, url=url, collection=resource.collection)

    def update(
        self, ctx: Context, collection: str, resource_id: str, document: Any
    ) -> dict[str, Any]:
        resource = self.resource(collection)
        body = attributes.parse(
            resource.name, resource.attributes, document, create=False, is_admin=ctx.is_admin
        )
        self.events.emit(
            ctx,
            f"{resource.name}.update.start",
            {resource.name: document[resource.name], "id": resource_id},
        )

        def work(session: Session) -> dict[str, Any]:
            row = resource.load(session, ctx, resource_id)
            resource.update(session, ctx, row, body)
            session.flush()
            return resource.view(row, ctx)

        view = self._write(work)
        self.events.emit(ctx, f"{resource.name}.update.end", {resource.name: view})
        return view

    def delete(self, ctx: Context, collection: str, resource_id: str) -> None:
        resource = self.resource(collection)
        self.events.emit(ctx, f"{resource.name}.delete.start", {f"{resource.name}_id": resource_id})

        def work(session: Session) -> dict[str, Any]:
            row = resource.load(session, ctx, resource_id)
            last = resource.view(row, ctx)
            resource.delete(session, ctx, row)
            return last

        last = self._write(work)
        self.events.emit(
            ctx,
            f"{resource.name}.delete.end",
            {f"{resource.name}_id": resource_id, resource.name: _last_state(resource.name, last)},
        )

    def tags(
        self, ctx: Context, collection: str, resource_id: str, *, change: TagChange | None = None
    ) -> builtins.list[str]:
        """A resource's tags (``/<rs>/<id>/tags``), after ``change`` if one is given.

        ``change`` is ("add", tag), ("remove", tag) or ("replace", [tags]);
        removing an absent tag is NotFound. A change is a new revision.
        """
        resource = self.resource(collection)
        if change is None:
            with self.db.read() as session:
                return list(resource.load(session, ctx, resource_id).tags)

        def work(session: Session) -> builtins.list[str]:
            row = resource.load(session, ctx, resource_id)
            tags = list(row.tags)
            verb, value = change
            if verb == "add":
                tags = list(dict.fromkeys([*tags, *attributes.tag_list("tags")([value])]))
            elif verb == "remove":
                if value not in tags:
                    raise NotFound(
                        f"Tag {value} could not be found for {resource.name} {resource_id}.",
                        type="TagNotFound",
                    )
                tags.remove(value)
            else:
                tags = attributes.tag_list("tags")(value)
            if tags != list(row.tags):
                row.tags = tags
                bump(row)
            return tags

        return self._write(work)

    def router_interface(
        self, ctx: Context, router_id: str, *, add: bool, document: Any
    ) -> dict[str, Any]:
        """``PUT /routers/<id>/add_router_interface`` or ``remove_router_interface``."""
        if not isinstance(document, dict):
            raise BadRequest("Bad router request: the body must be an object.", type="BadRequest")

        def work(session: Session) -> dict[str, Any]:
            router = self.routers.load(session, ctx, router_id)
            if add:
                return self.routers.add_interface(session, ctx, router, document)
            return self.routers.remove_interface(session, ctx, router, document)

        info = self._write(work)
        action = "create" if add else "delete"
        self.events.emit(ctx, f"router.interface.{action}", {"router_interface": info})
        return info
