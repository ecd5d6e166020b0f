"""Pending routers: what a notification named, recorded before the notification is acknowledged.

A notification is acknowledged on the bus only once the routers it names
are rows of ``astara_pending`` in the orchestrator's database (SQLite, or
PostgreSQL shared by several orchestrators); a router's rows are deleted
once a reconcile that started after them has finished without failure. So a
crash anywhere between the acknowledgement and the reconcile loses nothing:
the rows are still there, and whoever keeps the router reconciles it after
the restart. Decision record: ``docs/decisions/0012-ack-after-pending.md``.

Two parts:

- ``PendingStore``: the table, an append-only log: ``record`` inserts rows
  in one transaction, ``routers`` answers {router id: its highest row id},
  ``done(router, upto)`` deletes that router's rows up to ``upto``.
  Synchronous (SQLAlchemy); callers on the event loop run it in a worker
  thread.
- ``PendingRouters``: the runner's side. ``record`` is the intake's recorder
  (in a worker thread); ``started``/``finished`` bracket a reconcile;
  ``run`` enqueues, at start and then every ``period`` (0.2 s), the routers
  this process keeps whose highest row id grew since it last looked — rows
  that *other* orchestrators recorded (they consume the same queue and write
  the same database) — and deletes, in one transaction per look, what the
  reconciles finished.

Invariants:

- Row ids only grow, never reused: ``AUTOINCREMENT`` on SQLite, a sequence
  on PostgreSQL. A router is enqueued by the poll only when its highest id
  is above the one this process has seen, so the poll costs one indexed
  ``GROUP BY`` over what is pending (nothing, when idle) and enqueues
  nothing twice.
- ``finished(key, upto)`` deletes only rows with ids at most ``upto``, the
  highest id seen *before* that reconcile started: it read the network API
  after those notifications were received, so it saw their changes. On
  PostgreSQL a row with a smaller id may commit after a larger one; its id
  was allocated before the larger one's, after its notification was
  received, so the reconcile covers it too. A reconcile that failed (or was
  held) deletes nothing.
- Every database call runs in a worker thread (``asyncio.to_thread``): the
  loop is never blocked by it. A failed poll or delete is logged and tried
  again at the next look; a failed ``record`` raises to the intake, which
  does not acknowledge and tries again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from astara.orchestrator import store
from astara.orchestrator.resolution import ResourceKey, ResourceKind

__all__ = ["DEFAULT_POLL_PERIOD", "TABLE", "PendingRouters", "PendingStore"]

log = logging.getLogger(__name__)

TABLE = "astara_pending"
DEFAULT_POLL_PERIOD = 0.2
"""Seconds between two looks at what other orchestrators recorded."""
MAX_EVENT_TYPE = 255

_pending = sa.Table(
    TABLE,
    store.metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("router_id", sa.String(64), nullable=False),
    sa.Column("event_type", sa.String(MAX_EVENT_TYPE), nullable=False),
    sa.Column("recorded_at", sa.Float, nullable=False),
    # (router_id, id): the poll's GROUP BY and done's DELETE read the index only
    sa.Index("ix_astara_pending_router_id", "router_id", "id"),
    # ids never reused, even once every row is deleted (the poll compares them)
    sqlite_autoincrement=True,
)


class PendingStore:
    """``astara_pending`` in the database at ``url`` (or on ``engine``, one that
    ``store.open_engine`` gave: its schema is up to date); see the module.

    Safe to call from several threads and processes at once.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: Engine | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (url is None) == (engine is None):
            raise ValueError("give the database's url or an engine, not both")
        self._owned = engine is None
        self._engine = engine if engine is not None else store.open_engine(url or "")
        self._clock = clock
        self._lock = threading.Lock()  # SQLite: one writer of this process at a time

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Release the database's connections (of an engine this store opened)."""
        if self._owned:
            self._engine.dispose()

    def record(self, router_ids: Iterable[str], event_type: str) -> dict[str, int]:
        """Rows for ``router_ids``, one transaction; {router id: the highest id given to it}."""
        return self.record_many((router_id, event_type) for router_id in router_ids)

    def record_many(self, entries: Iterable[tuple[str, str]]) -> dict[str, int]:
        """Rows for (router id, event type) pairs, one transaction; {router id: highest id}.

        Raises ``sqlalchemy.exc.SQLAlchemyError`` when the database fails: then
        nothing was recorded.
        """
        now = self._clock()
        rows = [
            {"router_id": r, "event_type": e[:MAX_EVENT_TYPE], "recorded_at": now}
            for r, e in entries
        ]
        if not rows:
            return {}
        ids: dict[str, int] = {}
        with self._lock, self._engine.begin() as conn:
            result = conn.execute(
                sa.insert(_pending).returning(_pending.c.id, _pending.c.router_id), rows
            )
            for row_id, router_id in result:
                if row_id > ids.get(router_id, 0):
                    ids[router_id] = row_id
        return ids

    def routers(self) -> dict[str, int]:
        """Every router with pending rows: {router id: its highest row id}."""
        return self.look()[0]

    def look(self) -> tuple[dict[str, int], int]:
        """``routers()`` and the highest id among them (0: nothing pending), in one read."""
        query = sa.select(_pending.c.router_id, sa.func.max(_pending.c.id)).group_by(
            _pending.c.router_id
        )
        with self._engine.connect() as conn:
            found = {str(router_id): int(top) for router_id, top in conn.execute(query)}
        return found, max(found.values(), default=0)

    def done(self, router_id: str, upto_id: int) -> int:
        """Delete ``router_id``'s rows with ids at most ``upto_id``; how many went."""
        return self.done_many({router_id: upto_id})

    def done_many(self, upto: dict[str, int]) -> int:
        """``done`` for every router of ``upto``, in one transaction; how many rows went."""
        if not upto:
            return 0
        statement = sa.delete(_pending).where(
            _pending.c.router_id == sa.bindparam("r"), _pending.c.id <= sa.bindparam("upto")
        )
        with self._lock, self._engine.begin() as conn:
            result = conn.execute(statement, [{"r": r, "upto": u} for r, u in upto.items()])
        return max(result.rowcount, 0)

    def count(self) -> int:
        """Rows pending (tests, metrics)."""
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(_pending)).scalar_one())


class PendingRouters:
    """The runner's side of ``PendingStore``; see the module.

    ``keeps(key)`` says whether this process reconciles a router (its
    ownership filter); ``enqueue`` takes the routers the poll finds (the
    filtered enqueue is fine: only kept keys are passed). ``period``: seconds
    between two looks.
    """

    def __init__(
        self,
        store: PendingStore,
        *,
        keeps: Callable[[ResourceKey], bool],
        enqueue: Callable[[ResourceKey], None],
        period: float = DEFAULT_POLL_PERIOD,
    ) -> None:
        self.store = store
        self._keeps = keeps
        self._enqueue = enqueue
        self._period = period
        self._seen: dict[str, int] = {}
        """Router id -> the highest pending id this process knows of (recorded or polled)."""
        self._finished: dict[str, int] = {}
        """Router id -> rows to delete at the next look (reconciled up to that id)."""
        self._closing = False
        self._wakeup = asyncio.Event()
        self.recorded = 0
        """Rows this process recorded."""
        self.polled = 0
        """Routers the poll enqueued (recorded elsewhere, or before a restart)."""

    # -- the intake's recorder ----------------------------------------------------------------
    async def record(self, entries: Sequence[tuple[str, ResourceKey]]) -> None:
        """Record the routers of (event type, key) pairs, one transaction; raises if it failed."""
        rows = [(key.id, event) for event, key in entries if key.kind is ResourceKind.ROUTER]
        if not rows:
            return
        ids = await asyncio.to_thread(self.store.record_many, rows)
        self.recorded += len(rows)
        for router_id, top in ids.items():
            if top > self._seen.get(router_id, 0):
                self._seen[router_id] = top

    # -- around a reconcile -------------------------------------------------------------------
    def started(self, key: ResourceKey) -> int | None:
        """A reconcile of ``key`` starts: the highest pending id it covers (None: none)."""
        return self._seen.get(key.id) if key.kind is ResourceKind.ROUTER else None

    def finished(self, key: ResourceKey, upto: int | None) -> None:
        """That reconcile ended without failure: its rows go at the next look."""
        if upto is None or key.kind is not ResourceKind.ROUTER:
            return
        if upto > self._finished.get(key.id, 0):
            self._finished[key.id] = upto

    # -- the look -----------------------------------------------------------------------------
    async def look(self) -> int:
        """Delete what was reconciled, then enqueue the kept routers whose rows grew; how many.

        Raises what the database raises (``run`` logs it and looks again later).
        """
        finished, self._finished = self._finished, {}
        try:
            found, top = await asyncio.to_thread(self._look, finished)
        except BaseException:
            for router_id, upto in finished.items():  # deleted at the next look
                self._finished[router_id] = max(upto, self._finished.get(router_id, 0))
            raise
        enqueued = 0
        for router_id, highest in found.items():
            if highest <= self._seen.get(router_id, 0):
                continue
            self._seen[router_id] = highest
            key = ResourceKey.router(router_id)
            if self._keeps(key):
                self._enqueue(key)
                enqueued += 1
        # forget routers with nothing pending any more (recorded after this read: kept)
        for router_id in [r for r, seen in self._seen.items() if r not in found and seen <= top]:
            del self._seen[router_id]
        self.polled += enqueued
        return enqueued

    def _look(self, finished: dict[str, int]) -> tuple[dict[str, int], int]:
        self.store.done_many(finished)
        return self.store.look()

    async def run(self) -> None:
        """Look at once (what survived a restart), then every ``period`` until ``close``."""
        first = True
        while not self._closing:
            try:
                enqueued = await self.look()
                if first and enqueued:
                    log.info("%d routers with pending notifications enqueued", enqueued)
                first = False
            except Exception as exc:  # noqa: BLE001 - the database is down: the next look retries
                log.warning("the pending routers could not be read: %s", exc)
            self._wakeup.clear()
            try:
                async with asyncio.timeout(self._period):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
        if self._finished:  # what finished meanwhile, deleted before leaving
            try:
                await asyncio.to_thread(self.store.done_many, self._finished)
                self._finished = {}
            except Exception as exc:  # noqa: BLE001 - reconciled again after the restart
                log.warning("the reconciled routers' pending rows were not deleted: %s", exc)

    def close(self) -> None:
        """``run`` ends after its current look (deleting what finished)."""
        self._closing = True
        self._wakeup.set()
