"""Debug and manage modes, persisted: which routers the orchestrator must leave alone.

An operator puts a router (scope ``resource``), every router of a project
(scope ``tenant``) or every router (scope ``global``, id ``*``) in *debug
mode* with a reason; the orchestrator then skips their reconciles (a "held"
entry in the journal) until the operator *manages* them again. Modes
survive restarts: they live in table ``astara_debug_modes`` (scope, id,
reason, since) of a SQLAlchemy database — SQLite (``astara up`` uses
``sqlite:///<state dir>/orchestrator.db``) or PostgreSQL.

Invariants:

- The table is declared on the orchestrator's database (``store.metadata``)
  and created when the store opens (``store.open_engine``).
- Reads never touch the database: every mode is cached in memory, loaded at
  open and written through on each change (the database first, then the
  cache), so ``is_held`` is a dict lookup fit for every reconcile.
- One writer per database is assumed (one orchestrator process, or the
  processes of one host sharing modes set through one of them); a lock makes
  the store safe to call from several threads (writes may run in a worker
  thread so as not to hold up the event loop).
- ``is_held`` answers with the most specific mode: the router's own, then
  its tenant's, then the global one.

No HTTP here: the admin API (``admin.py``) calls this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import sqlalchemy as sa

from astara.orchestrator import store

__all__ = ["GLOBAL_ID", "TABLE", "ControlStore", "DebugMode", "Scope"]

Scope = Literal["resource", "tenant", "global"]
SCOPES: tuple[str, ...] = get_args(Scope)
GLOBAL_ID = "*"
"""The id of the one global mode."""

TABLE = "astara_debug_modes"

_modes = sa.Table(
    TABLE,
    store.metadata,
    sa.Column("scope", sa.String(16), primary_key=True),
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("since", sa.Float, nullable=False),
)


@dataclass(frozen=True, slots=True)
class DebugMode:
    """One mode: ``scope``, ``id`` (``*`` for global), the operator's ``reason``, ``since`` (epoch s)."""

    scope: Scope
    id: str
    reason: str
    since: float

    def as_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "id": self.id, "reason": self.reason, "since": self.since}


def check_scope(scope: str, ident: str) -> tuple[Scope, str]:
    """(scope, id) checked: ValueError for an unknown scope or an empty id; global's id is ``*``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; one of {', '.join(SCOPES)}")
    if scope == "global":
        return "global", GLOBAL_ID
    if not ident:
        raise ValueError(f"a {scope} mode needs an id")
    return cast(Scope, scope), ident


class ControlStore:
    """Debug modes in the database at ``url``, cached in memory; see the module."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self._clock = clock
        self._engine = store.open_engine(url)
        self._lock = threading.Lock()
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(_modes)).all()
        self._cache: dict[tuple[str, str], DebugMode] = {
            (row.scope, row.id): DebugMode(
                scope=cast(Scope, row.scope), id=row.id, reason=row.reason, since=row.since
            )
            for row in rows
            if row.scope in SCOPES
        }

    @property
    def engine(self) -> sa.Engine:
        """The orchestrator's database, migrated: the other stores of the process share it."""
        return self._engine

    def close(self) -> None:
        """Release the database's connections."""
        self._engine.dispose()

    # -- writes (database first, then the cache) -------------------------------------------
    def set_debug(self, scope: str, ident: str, reason: str) -> DebugMode:
        """Put (scope, id) in debug mode for ``reason``; an existing mode keeps its ``since``."""
        checked, ident = check_scope(scope, ident)
        with self._lock:
            current = self._cache.get((checked, ident))
            mode = DebugMode(
                scope=checked,
                id=ident,
                reason=reason,
                since=current.since if current is not None else self._clock(),
            )
            with self._engine.begin() as conn:
                conn.execute(
                    sa.delete(_modes).where(_modes.c.scope == checked, _modes.c.id == ident)
                )
                conn.execute(sa.insert(_modes).values(**mode.as_dict()))
            self._cache[(checked, ident)] = mode
            return mode

    def manage(self, scope: str, ident: str) -> DebugMode | None:
        """End (scope, id)'s debug mode; the mode ended, None if there was none."""
        checked, ident = check_scope(scope, ident)
        with self._lock:
            with self._engine.begin() as conn:
                conn.execute(
                    sa.delete(_modes).where(_modes.c.scope == checked, _modes.c.id == ident)
                )
            return self._cache.pop((checked, ident), None)

    # -- reads (the cache only) -------------------------------------------------------------
    def modes(self) -> list[DebugMode]:
        """Every mode, by scope (resource, tenant, global) then id."""
        order = {scope: n for n, scope in enumerate(SCOPES)}
        return sorted(self._cache.values(), key=lambda m: (order[m.scope], m.id))

    def is_held(self, router_id: str, tenant_id: str | None) -> DebugMode | None:
        """The mode that holds the router (its own, its tenant's, the global one), or None."""
        cache = self._cache
        found = cache.get(("resource", router_id))
        if found is None and tenant_id:
            found = cache.get(("tenant", tenant_id))
        if found is None:
            found = cache.get(("global", GLOBAL_ID))
        return found
