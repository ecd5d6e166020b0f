"""What every resource service shares: ids, timestamps, standard attributes, lookups.

Used by ``resources/*``; holds no state.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.network.context import Context
from astara.network.db.models import Base, Network, now
from astara.network.errors import BadRequest, NotFound

RowT = TypeVar("RowT", bound=Base)


def new_id() -> str:
    return str(uuid.uuid4())


def timestamp(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def standard_view(row: Any) -> dict[str, Any]:
    """Neutron's standard attributes of ``row`` (project, name, times, revision, tags)."""
    return {
        "id": row.id,
        "name": row.name,
        "tenant_id": row.project_id,
        "project_id": row.project_id,
        "description": row.description,
        "tags": list(row.tags),
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
        "revision_number": row.revision_number,
    }


def apply_standard(row: Any, body: dict[str, Any]) -> None:
    for key in ("name", "description", "tags"):
        if key in body:
            setattr(row, key, body[key])


def bump(row: Any) -> None:
    """A change to ``row``: a new revision and update time."""
    row.revision_number = (row.revision_number or 0) + 1
    row.updated_at = now()


def owner(ctx: Context, body: dict[str, Any]) -> str:
    """The project a new resource belongs to: the caller's, or any for an admin."""
    wanted = body.get("project_id") or body.get("tenant_id")
    if wanted and wanted != ctx.project_id and not ctx.is_admin:
        raise BadRequest(
            "Specifying 'project_id' or 'tenant_id' other than the authenticated project "
            "in request requires admin privileges"
        )
    return str(wanted or ctx.project_id)


def fetch(session: Session, model: type[RowT], resource: str, row_id: str) -> RowT:
    row = session.get(model, row_id)
    if row is None:
        raise NotFound.of(resource, row_id)
    return row


def load_owned(
    session: Session, ctx: Context, model: type[RowT], resource: str, row_id: str
) -> RowT:
    """A row of the caller's project (any project for an admin); NotFound otherwise."""
    row = session.get(model, row_id)
    if row is None or not ctx.owns(row.project_id):  # type: ignore[attr-defined]
        raise NotFound.of(resource, row_id)
    return row


def owned_rows(
    session: Session,
    ctx: Context,
    model: type[RowT],
    filters: dict[str, tuple[str, ...]],
    indexed: Sequence[str] = ("id",),
    *,
    where: Sequence[Any] = (),
) -> Sequence[RowT]:
    """The caller's rows (every row for an admin), oldest first, narrowed in SQL by the
    ``indexed`` attributes the filters name and the ``where`` clauses (the rest is
    filtered on the views)."""
    columns: Any = model
    query = select(model).order_by(columns.created_at, columns.id)
    if not ctx.is_admin:
        query = query.where(columns.project_id == ctx.project_id)
    for key in indexed:
        if key in filters:
            query = query.where(getattr(columns, key).in_(filters[key]))
    for clause in where:
        query = query.where(clause)
    return session.scalars(query).all()


def visible_network(session: Session, ctx: Context, network_id: str) -> Network:
    """A network the caller may use: own, shared or external; else NotFound."""
    network = session.get(Network, network_id)
    if network is None or not (ctx.owns(network.project_id) or network.shared or network.external):
        raise NotFound.of("network", network_id)
    return network
