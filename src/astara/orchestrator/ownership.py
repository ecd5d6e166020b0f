"""Fenced ownership of routers among several orchestrators: leases with an epoch, in SQL.

The hash ring (``coordination.py``) says which member *should* own a router;
a member *owns* it only while it holds the router's lease in table
``astara_leases`` (router_id, owner, epoch, expires_at, acquired_at) of the
orchestrators' shared database (``store.metadata``; PostgreSQL for several
hosts, SQLite for one):

- **acquire** takes a lease only if it is free (no row, no owner), expired,
  or already this member's; every change of owner adds one to ``epoch``;
- **renew** extends every lease of this member in one statement, every
  ``renew_period`` (1 s), up to ``ttl`` (4 s) from now;
- **release** frees a lease (hand-over: the ring moved the router away and
  its reconcile in flight has ended; or a clean stop);
- **fence(router_id)** is True only if this member holds an unexpired lease
  on the router with the epoch it acquired: the reconciler asks it before
  every action it carries out (boot, configure, replug, rebuild, stop).

Clocks. Expiry is decided by the *database's* clock only (``_now``:
``clock_timestamp()`` on PostgreSQL, ``julianday('now')`` on SQLite), so
hosts whose clocks differ agree on whether a lease has expired. The holder
also keeps a local deadline on its monotonic clock: the instant it *sent*
the renew (or acquire), plus ``SAFETY * ttl``; since the database set
the expiry later than that, the holder stops acting before anyone else may
take over (only the clocks' *rates* must agree, to within 10 %). A holder
stalled between its fence check and its action (a paused VM) is the
residual risk every lease has; the appliances would need to check the
epoch themselves to close it (not done: docs/decisions/0013).

``Ownership`` joins the ring and the leases for the runner: ``keeps(key)``
(the ring says this member AND the lease is held and not past its local
deadline) is what the intake, the requeue timers and every reconcile
check; routers the ring gives this member are acquired as soon as their
lease is free or expired, handed to ``acquired`` (the runner adopts their
appliance and enqueues them), and those it takes away are released once
``busy`` says no reconcile of theirs is running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from astara.orchestrator import store
from astara.orchestrator.coordination import HashRing, Membership
from astara.orchestrator.resolution import ResourceKey, ResourceKind

__all__ = [
    "DEFAULT_RENEW_PERIOD",
    "DEFAULT_TTL",
    "TABLE",
    "Lease",
    "LeaseStore",
    "Ownership",
]

log = logging.getLogger(__name__)

TABLE = "astara_leases"
DEFAULT_TTL = 4.0
"""Seconds a lease lasts after its last renewal."""
DEFAULT_RENEW_PERIOD = 1.0
"""Seconds between two renewals of every lease of a member."""
SAFETY = 0.9
"""The share of ``ttl`` after the renewal was sent that the holder trusts its lease for."""
MEMBERS_PERIOD = 0.5
"""Seconds between two looks at the group's members."""
BATCH = 500
"""Routers per acquire statement."""

_leases = sa.Table(
    TABLE,
    store.metadata,
    sa.Column("router_id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=True, index=True),
    sa.Column("epoch", sa.Integer, nullable=False, default=0),
    sa.Column("expires_at", sa.Float, nullable=False, default=0.0),
    sa.Column("acquired_at", sa.Float, nullable=False, default=0.0),
)


@dataclass(frozen=True, slots=True)
class Lease:
    """One row: who holds the router, since which epoch, until when (database clock, epoch s)."""

    router_id: str
    owner: str | None
    epoch: int
    expires_at: float
    acquired_at: float
    live: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "router_id": self.router_id,
            "owner": self.owner,
            "epoch": self.epoch,
            "expires_at": self.expires_at,
            "acquired_at": self.acquired_at,
            "live": self.live,
        }


def _now(dialect: str) -> sa.ColumnElement[float]:
    """The database's clock, in seconds since the epoch, as an SQL expression."""
    if dialect == "postgresql":
        return sa.cast(sa.extract("epoch", sa.func.clock_timestamp()), sa.Float)
    if dialect == "sqlite":
        return (sa.func.julianday("now") - 2440587.5) * 86400.0
    raise ValueError(f"leases need PostgreSQL or SQLite, not {dialect}")


class LeaseStore:
    """The leases of one member (``member``) in the database at ``url``; blocking calls
    (run them in a worker thread). Each method is one transaction."""

    def __init__(
        self, url: str | Engine, *, member: str, ttl: float = DEFAULT_TTL, clock: Any = None
    ) -> None:
        self.member = member
        self.ttl = ttl
        self._own_engine = isinstance(url, str)
        self.engine = store.open_engine(url) if isinstance(url, str) else url
        self._clock: Callable[[], float] = clock or time.monotonic
        self._now = _now(self.engine.dialect.name)
        self._insert: Any = (
            postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        )

    def close(self) -> None:
        if self._own_engine:
            self.engine.dispose()

    def deadline(self, sent: float) -> float:
        """Until when (local monotonic clock) a lease renewed at ``sent`` may be trusted."""
        return sent + self.ttl * SAFETY

    def acquire(self, router_ids: Collection[str]) -> tuple[dict[str, int], float]:
        """Take the leases of ``router_ids`` that are free, expired or ours; (held router ->
        epoch, the local time the statements were sent)."""
        sent = self._clock()
        held: dict[str, int] = {}
        ids = sorted(set(router_ids))
        t = _leases.c
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            with self.engine.begin() as conn:
                now = conn.execute(sa.select(self._now)).scalar_one()
                conn.execute(
                    self._insert(_leases)
                    .values(
                        [
                            {
                                "router_id": r,
                                "owner": None,
                                "epoch": 0,
                                "expires_at": 0.0,
                                "acquired_at": 0.0,
                            }
                            for r in chunk
                        ]
                    )
                    .on_conflict_do_nothing(index_elements=["router_id"])
                )
                conn.execute(
                    sa.update(_leases)
                    .where(
                        t.router_id.in_(chunk),
                        sa.or_(
                            t.owner.is_(None), t.owner == self.member, t.expires_at <= self._now
                        ),
                    )
                    .values(
                        owner=self.member,
                        epoch=t.epoch + 1,
                        expires_at=self._now + self.ttl,
                        acquired_at=now,
                    )
                )
                rows = conn.execute(
                    sa.select(t.router_id, t.epoch).where(
                        t.router_id.in_(chunk), t.owner == self.member
                    )
                ).all()
            held.update({row.router_id: row.epoch for row in rows})
        return held, sent

    def renew(self) -> tuple[dict[str, int], float]:
        """Extend every unexpired lease of this member; (router -> epoch still held, sent)."""
        sent = self._clock()
        t = _leases.c
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(_leases)
                .where(t.owner == self.member, t.expires_at > self._now)
                .values(expires_at=self._now + self.ttl)
            )
            rows = conn.execute(
                sa.select(t.router_id, t.epoch).where(
                    t.owner == self.member, t.expires_at > self._now
                )
            ).all()
        return {row.router_id: row.epoch for row in rows}, sent

    def release(self, leases: Mapping[str, int]) -> None:
        """Free these leases of this member (router -> epoch), for the next owner at once."""
        if not leases:
            return
        t = _leases.c
        with self.engine.begin() as conn:
            for router_id, epoch in leases.items():
                conn.execute(
                    sa.update(_leases)
                    .where(t.router_id == router_id, t.owner == self.member, t.epoch == epoch)
                    .values(owner=None, expires_at=0.0)
                )

    def forget(self, router_id: str, epoch: int) -> None:
        """Delete the lease of a router that is gone (deleted and destroyed) if still ours."""
        t = _leases.c
        with self.engine.begin() as conn:
            conn.execute(
                sa.delete(_leases).where(
                    t.router_id == router_id, t.owner == self.member, t.epoch == epoch
                )
            )

    def check(self, router_id: str, epoch: int) -> bool:
        """Whether this member holds the router's lease, unexpired, with ``epoch``."""
        t = _leases.c
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(sa.literal(1)).where(
                    t.router_id == router_id,
                    t.owner == self.member,
                    t.epoch == epoch,
                    t.expires_at > self._now,
                )
            ).first()
        return found is not None

    def router_ids(self) -> list[str]:
        """Every router that has a lease row (held or not)."""
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(_leases.c.router_id)).scalars())

    def leases(self) -> list[Lease]:
        """Every row, by router id, with whether it is live now (database clock)."""
        t = _leases.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    t.router_id,
                    t.owner,
                    t.epoch,
                    t.expires_at,
                    t.acquired_at,
                    (t.expires_at > self._now).label("live"),
                ).order_by(t.router_id)
            ).all()
        return [
            Lease(r.router_id, r.owner, r.epoch, r.expires_at, r.acquired_at, bool(r.live))
            for r in rows
        ]


class _OwnershipMetrics(Collector):
    def __init__(self, ownership: Ownership) -> None:
        self._ownership = ownership

    def collect(self) -> Iterator[Metric]:
        o = self._ownership
        yield GaugeMetricFamily(
            "astara_owned_routers", "Routers whose lease this member holds", value=len(o.owned())
        )
        yield GaugeMetricFamily(
            "astara_ring_members", "Orchestrators on the hash ring", value=len(o.ring.members)
        )
        yield CounterMetricFamily(
            "astara_leases_acquired", "Router leases acquired", value=o.acquired_total
        )
        yield CounterMetricFamily("astara_leases_lost", "Router leases lost", value=o.lost_total)


Acquired = Callable[[list[str]], Coroutine[Any, Any, None]]


async def _none() -> Collection[str]:
    return ()


async def _nothing(_router_ids: list[str]) -> None:
    return None


class Ownership:
    """The ring and the leases, for one orchestrator; see the module docstring.

    ``bind`` gives it the runner's parts: ``acquired`` (adopt and enqueue
    routers just acquired), ``busy`` (a reconcile of the router is running),
    ``candidates`` (every router id worth asking about: the network API's and
    the provider's; the lease rows are added here). ``run`` until ``close``.
    """

    def __init__(
        self,
        *,
        membership: Membership,
        leases: LeaseStore,
        renew_period: float = DEFAULT_RENEW_PERIOD,
        members_period: float = MEMBERS_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.membership = membership
        self.leases = leases
        self.member_id = membership.member_id
        self._renew_period = renew_period
        self._members_period = members_period
        self._clock = clock
        self.ring = HashRing()
        #: router -> (epoch, local deadline)
        self._held: dict[str, tuple[int, float]] = {}
        #: routers the ring gives this member whose lease is not held yet
        self._wanted: set[str] = set()
        self._acquired: Acquired = _nothing
        self._busy: Callable[[str], bool] = lambda _id: False
        self._candidates: Callable[[], Awaitable[Collection[str]]] = _none
        self._wake = asyncio.Event()
        self._closing = False
        self._started = False
        self._rebalance_due = True
        self._members_ok = 0.0
        self._db = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        #: counters (metrics): leases acquired and lost
        self.acquired_total = 0
        self.lost_total = 0
        #: when the ring last changed, and when it was last fully owned after that (monotonic)
        self.ring_changed_at: float | None = None

    def bind(
        self,
        *,
        acquired: Acquired,
        busy: Callable[[str], bool],
        candidates: Callable[[], Awaitable[Collection[str]]],
    ) -> None:
        self._acquired = acquired
        self._busy = busy
        self._candidates = candidates

    # -- what the runner asks (on the loop, no I/O) --------------------------------------------
    def wants(self, router_id: str) -> bool:
        """Whether the ring gives the router to this member."""
        return self.ring.owner_of(router_id) == self.member_id

    def holds(self, router_id: str) -> bool:
        held = self._held.get(router_id)
        return held is not None and self._clock() < held[1]

    def keeps(self, key: ResourceKey) -> bool:
        """Whether this member reconciles ``key`` now: the ring's AND the lease held."""
        if key.kind is not ResourceKind.ROUTER:
            return self.wants(key.id)
        return self.wants(key.id) and self.holds(key.id)

    def claims(self, key: ResourceKey) -> bool:
        """Whether the ring gives ``key`` to this member (its lease held or not): what ``wrap``'s
        enqueue takes (enqueued now, or acquired first)."""
        return self.wants(key.id)

    def wrap(self, enqueue: Callable[[ResourceKey], None]) -> Callable[[ResourceKey], None]:
        """An ``enqueue`` that passes on the keys kept, and claims those the ring gives this
        member whose lease is not held yet (enqueued by ``acquired`` once it is)."""

        def enqueue_kept(key: ResourceKey) -> None:
            if self.keeps(key):
                enqueue(key)
            elif key.kind is ResourceKind.ROUTER and self.wants(key.id):
                self.claim([key.id])

        return enqueue_kept

    def claim(self, router_ids: Iterable[str]) -> None:
        """Acquire these routers' leases as soon as they are free (those the ring gives us)."""
        added = False
        for router_id in router_ids:
            if router_id not in self._held and self.wants(router_id):
                self._wanted.add(router_id)
                added = True
        if added:
            self._wake.set()

    def owned(self) -> dict[str, int]:
        """The routers held now, with their epochs."""
        return {r: epoch for r, (epoch, _) in self._held.items() if self.holds(r)}

    def collector(self) -> Collector:
        """Prometheus metrics: ``astara_owned_routers``, ``astara_leases_acquired_total``,
        ``astara_leases_lost_total``, ``astara_ring_members``."""
        return _OwnershipMetrics(self)

    def epoch(self, router_id: str) -> int | None:
        held = self._held.get(router_id)
        return held[0] if held is not None else None

    async def fence(self, router_id: str) -> bool:
        """True only if this member holds the router's unexpired lease with its epoch (checked
        in the database); a lost lease drops the router from this member."""
        held = self._held.get(router_id)
        if held is None or not self.holds(router_id) or not self.wants(router_id):
            return False
        if await asyncio.to_thread(self.leases.check, router_id, held[0]):
            return True
        self._lose([router_id], "fenced")
        return False

    def lost(self, router_id: str) -> None:
        """The router's lease is known lost: drop it (claimed again if the ring says ours)."""
        self._lose([router_id], "lost")

    async def forget(self, router_id: str) -> None:
        """The router is gone (deleted, its appliance destroyed): delete its lease."""
        held = self._held.pop(router_id, None)
        self._wanted.discard(router_id)
        if held is None:
            return
        async with self._db:
            await asyncio.to_thread(self.leases.forget, router_id, held[0])

    def _lose(self, router_ids: Iterable[str], why: str) -> None:
        for router_id in router_ids:
            if self._held.pop(router_id, None) is not None:
                self.lost_total += 1
                log.warning("router %s: lease %s; no longer reconciled here", router_id, why)
                if self.wants(router_id):
                    self._wanted.add(router_id)

    # -- the loop --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Join the group (raises when the backend cannot be reached); ``run`` does it if needed."""
        if not self._started:
            await self.membership.start()
            self._started = True

    async def run(self) -> None:
        """Join the group and keep the ring, the leases and the claims current until ``close``."""
        await self.start()
        last_renew = self._clock()
        last_members = 0.0
        while not self._closing:
            now = self._clock()
            if now - last_members >= self._members_period:
                last_members = now
                await self._look_at_members()
            if self._rebalance_due:
                await self._rebalance()
            if now - last_renew >= self._renew_period:
                last_renew = now
                await self._renew()
            await self._hand_over()
            if self._wanted:
                await self._acquire()
            self._wake.clear()
            try:
                async with asyncio.timeout(min(self._members_period, self._renew_period) / 2):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if self._wanted and not self._closing:
                await asyncio.sleep(0.02)  # a burst of claims in one statement

    async def _look_at_members(self) -> None:
        try:
            members = await self.membership.members()
        except Exception as exc:  # noqa: BLE001 - the backend is away: the ring stands, for a while
            if self._clock() - self._members_ok > self.membership.timeout and self.ring.members:
                log.error("the coordination backend is away (%s): owning nothing", exc)
                self._set_ring(frozenset())
            else:
                log.warning("the coordination backend did not answer: %s", exc)
            return
        self._members_ok = self._clock()
        if members != self.ring.members:
            self._set_ring(members)

    def _set_ring(self, members: frozenset[str]) -> None:
        log.info(
            "members: %s (was %s)",
            ", ".join(sorted(members)) or "none",
            ", ".join(sorted(self.ring.members)) or "none",
        )
        self.ring = HashRing(members)
        self.ring_changed_at = self._clock()
        self._wanted = {r for r in self._wanted if self.wants(r)}
        self._rebalance_due = True

    async def _rebalance(self) -> None:
        """The ring changed (or this member started): claim every router it now gives us."""
        if not self.ring.members:
            self._rebalance_due = False
            return
        try:
            ids = set(await self._candidates())
            async with self._db:
                ids |= set(await asyncio.to_thread(self.leases.router_ids))
        except Exception as exc:  # noqa: BLE001 - tried again on the next turn
            log.warning("rebalance: the routers could not be listed: %s", exc)
            return
        self._rebalance_due = False
        mine = [r for r in ids if self.wants(r) and r not in self._held]
        log.info("rebalance: %d routers, %d to acquire", len(ids), len(mine))
        self.claim(mine)

    async def _renew(self) -> None:
        if not self._held:
            return
        try:
            async with self._db:
                renewed, sent = await asyncio.to_thread(self.leases.renew)
        except Exception as exc:  # noqa: BLE001 - the local deadlines stop us in time
            log.warning("leases not renewed: %s", exc)
            return
        deadline = self.leases.deadline(sent)
        lost = []
        for router_id, (epoch, _) in list(self._held.items()):
            if renewed.get(router_id) == epoch:
                self._held[router_id] = (epoch, deadline)
            else:
                lost.append(router_id)
        self._lose(lost, "expired or taken")
        strays = {r: e for r, e in renewed.items() if r not in self._held}
        if strays:  # ours in the database, not here (a release that failed): free them
            async with self._db:
                await asyncio.to_thread(self.leases.release, strays)

    async def _hand_over(self) -> None:
        """Release the routers the ring moved away once their reconcile in flight ended."""
        moving = {
            r: epoch
            for r, (epoch, _) in self._held.items()
            if not self.wants(r) and not self._busy(r)
        }
        if not moving:
            return
        for router_id in moving:
            del self._held[router_id]  # keeps() is False from now on
        try:
            async with self._db:
                await asyncio.to_thread(self.leases.release, moving)
        except Exception as exc:  # noqa: BLE001 - they expire on their own
            log.warning("%d leases not released (they expire): %s", len(moving), exc)
        log.info("handed over %d routers", len(moving))

    async def _acquire(self) -> None:
        wanted = {r for r in self._wanted if self.wants(r) and r not in self._held}
        self._wanted = wanted
        if not wanted:
            return
        try:
            async with self._db:
                got, sent = await asyncio.to_thread(self.leases.acquire, wanted)
                if self._closing:  # ``close`` released the others meanwhile
                    await asyncio.to_thread(self.leases.release, got)
                    return
        except Exception as exc:  # noqa: BLE001 - tried again on the next turn
            log.warning("leases not acquired: %s", exc)
            return
        deadline = self.leases.deadline(sent)
        new = []
        for router_id, epoch in got.items():
            if router_id not in self._held and self.wants(router_id):
                self._held[router_id] = (epoch, deadline)
                new.append(router_id)
        self._wanted -= set(got)
        if not new:
            return
        self.acquired_total += len(new)
        log.info("acquired %d routers (%d still held elsewhere)", len(new), len(self._wanted))
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._acquired(sorted(new))
        )
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("adopting acquired routers failed", exc_info=task.exception())

    async def close(self) -> None:
        """Leave the group, release every lease (the others take over at once); idempotent."""
        self._closing = True
        self._wake.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.membership.stop()
        except Exception as exc:  # noqa: BLE001 - the others drop us on the timeout
            log.warning("leaving the group: %s", exc)
        held = {r: epoch for r, (epoch, _) in self._held.items()}
        self._held.clear()
        try:
            async with self._db:
                await asyncio.to_thread(self.leases.release, held)
        except Exception as exc:  # noqa: BLE001 - they expire on their own
            log.warning("leases not released at close (they expire): %s", exc)
