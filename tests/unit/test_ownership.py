"""The hash ring, the fenced leases (SQLite and PostgreSQL) and ``Ownership`` on a static group."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from astara.domain.lifecycle import Action
from astara.orchestrator.coordination import HashRing, StaticMembership
from astara.orchestrator.ownership import LeaseStore, Ownership
from astara.orchestrator.resolution import ResourceKey
from tests.conftest import scratch_database
from tests.unit.test_reconcile import KEY, World

ROUTERS = [str(uuid.UUID(int=n * 7919 + 1)) for n in range(300)]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with scratch_database(request.param, tmp_path, "leases") as made:
        yield made


# -- the ring ----------------------------------------------------------------------------------
def test_the_ring_is_the_same_in_every_process_and_shares_fairly() -> None:
    one, two = HashRing(["a", "b", "c"]), HashRing(["c", "b", "a"])
    owners = [one.owner_of(r) for r in ROUTERS]
    assert owners == [two.owner_of(r) for r in ROUTERS]
    counts = Counter(owners)
    assert set(counts) == {"a", "b", "c"}
    assert all(60 <= n <= 140 for n in counts.values()), counts
    assert HashRing().owner_of(ROUTERS[0]) is None


def test_a_member_leaving_moves_only_its_own_routers() -> None:
    three, two = HashRing(["a", "b", "c"]), HashRing(["a", "b"])
    for router in ROUTERS:
        before = three.owner_of(router)
        if before != "c":
            assert two.owner_of(router) == before


# -- the leases ----------------------------------------------------------------------------------
def test_a_lease_is_held_by_one_member_until_it_expires_then_taken_with_a_new_epoch(
    url: str,
) -> None:
    a = LeaseStore(url, member="a", ttl=0.5)
    b = LeaseStore(a.engine, member="b", ttl=0.5)
    try:
        held, _ = a.acquire(["r1", "r2"])
        assert held == {"r1": 1, "r2": 1}
        assert b.acquire(["r1"])[0] == {}  # a holds it
        assert a.check("r1", 1)
        assert not b.check("r1", 1)
        assert not a.check("r1", 2)  # another epoch is not ours
        time.sleep(0.3)
        renewed, _ = a.renew()
        assert renewed == {"r1": 1, "r2": 1}
        time.sleep(0.3)
        assert b.acquire(["r1"])[0] == {}  # renewed: still a's
        time.sleep(0.4)  # expired now
        assert not a.check("r1", 1)
        assert b.acquire(["r1"])[0] == {"r1": 2}
        assert a.renew()[0] == {}  # a renews nothing it lost (r2 expired too)
        assert {lease.router_id: (lease.owner, lease.epoch) for lease in a.leases()} == {
            "r1": ("b", 2),
            "r2": ("a", 1),
        }
    finally:
        a.close()


def test_a_released_lease_is_taken_at_once_and_a_forgotten_one_is_gone(url: str) -> None:
    a = LeaseStore(url, member="a", ttl=30)
    b = LeaseStore(a.engine, member="b", ttl=30)
    try:
        a.acquire(["r1", "r2"])
        a.release({"r1": 1})
        assert b.acquire(["r1", "r2"])[0] == {"r1": 2}
        a.forget("r2", 1)
        assert [lease.router_id for lease in a.leases()] == ["r1"]
        b.release({"r1": 1})  # an old epoch releases nothing
        assert b.check("r1", 2)
    finally:
        a.close()


def test_two_members_racing_for_many_leases_never_share_one(url: str) -> None:
    a = LeaseStore(url, member="a", ttl=30)
    b = LeaseStore(a.engine, member="b", ttl=30)

    async def race() -> tuple[dict[str, int], dict[str, int]]:
        (got_a, _), (got_b, _) = await asyncio.gather(
            asyncio.to_thread(a.acquire, ROUTERS), asyncio.to_thread(b.acquire, ROUTERS)
        )
        return got_a, got_b

    try:
        got_a, got_b = asyncio.run(race())
        assert not set(got_a) & set(got_b)
        assert set(got_a) | set(got_b) == set(ROUTERS)
    finally:
        a.close()


# -- Ownership -------------------------------------------------------------------------------------
class Harness:
    """Two ``Ownership``s on one database, with static memberships changed by hand."""

    def __init__(self, url: str, ttl: float = 1.0) -> None:
        self.memberships = {m: StaticMembership(m, timeout=0.5) for m in ("a", "b")}
        first = LeaseStore(url, member="a", ttl=ttl)
        self.owners = {
            m: Ownership(
                membership=self.memberships[m],
                leases=first if m == "a" else LeaseStore(first.engine, member=m, ttl=ttl),
                renew_period=0.1,
                members_period=0.05,
            )
            for m in ("a", "b")
        }
        self.taken: dict[str, list[str]] = {"a": [], "b": []}
        self.busy: set[str] = set()
        for member, ownership in self.owners.items():

            async def acquired(ids: list[str], member: str = member) -> None:
                self.taken[member] += ids

            async def candidates() -> list[str]:
                return ROUTERS[:30]

            ownership.bind(acquired=acquired, busy=self.busy.__contains__, candidates=candidates)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, *members: str) -> None:
        for member in members:
            self.tasks.append(asyncio.create_task(self.owners[member].run()))

    def kept(self, member: str) -> set[str]:
        return {r for r in ROUTERS[:30] if self.owners[member].keeps(ResourceKey.router(r))}

    async def until(self, what: str, check: object, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        for ownership in self.owners.values():
            await ownership.close()
        await asyncio.gather(*self.tasks)
        self.owners["a"].leases.close()


async def test_one_member_alone_takes_every_router_then_shares_with_a_second(url: str) -> None:
    h = Harness(url)
    try:
        h.memberships["a"].others = set()
        h.start("a")
        await h.until("a keeps all", lambda: h.kept("a") == set(ROUTERS[:30]))
        await h.until("a adopted them", lambda: len(h.taken["a"]) == 30)
        assert sorted(h.taken["a"]) == sorted(ROUTERS[:30])  # adopted and enqueued once each
        busy = next(r for r in ROUTERS[:30] if HashRing(["a", "b"]).owner_of(r) == "b")
        h.busy.add(busy)  # a reconcile of it is running on a
        h.memberships["a"].others = {"b"}
        h.memberships["b"].others = {"a"}
        h.start("b")
        ring = HashRing(["a", "b"])
        b_share = {r for r in ROUTERS[:30] if ring.owner_of(r) == "b"}
        await h.until("b keeps its share", lambda: h.kept("b") == b_share - {busy})
        assert busy in h.kept("a") or not h.owners["a"].wants(busy)
        assert busy not in h.kept("b")  # not released while its reconcile runs
        h.busy.clear()
        await h.until("b keeps the busy one too", lambda: h.kept("b") == b_share)
        assert h.kept("a") == set(ROUTERS[:30]) - b_share
        assert not h.kept("a") & h.kept("b")
    finally:
        await h.close()


async def test_a_member_that_dies_loses_its_routers_once_its_leases_expire(url: str) -> None:
    h = Harness(url, ttl=0.6)
    try:
        h.memberships["a"].others = {"b"}
        h.memberships["b"].others = {"a"}
        h.start("a", "b")
        await h.until("all kept", lambda: len(h.kept("a") | h.kept("b")) == 30)
        a_share = h.kept("a")
        h.tasks[0].cancel()  # a dies: no renewals, no release
        await asyncio.gather(h.tasks[0], return_exceptions=True)
        h.memberships["b"].others = set()  # the group dropped it
        started = time.monotonic()
        await h.until("b keeps all", lambda: h.kept("b") == set(ROUTERS[:30]))
        assert time.monotonic() - started < 2.0
        await h.until("b adopted them", lambda: set(h.taken["b"]) >= a_share)
        epochs = {lease.router_id: lease.epoch for lease in h.owners["b"].leases.leases()}
        assert all(epochs[r] == 2 for r in a_share)  # a new owner: a new epoch
        assert not any(await asyncio.gather(*(h.owners["a"].fence(r) for r in a_share)))
    finally:
        h.tasks = h.tasks[1:]
        await h.close()


async def test_a_member_cut_off_from_the_group_owns_nothing_after_the_timeout(url: str) -> None:
    h = Harness(url)
    try:
        h.start("a")
        await h.until("a keeps all", lambda: len(h.kept("a")) == 30)
        h.memberships["a"].failing = True
        await h.until("a keeps nothing", lambda: not h.kept("a"), timeout=3)
    finally:
        await h.close()


async def test_the_fence_is_checked_in_the_database(url: str) -> None:
    h = Harness(url, ttl=30)
    try:
        h.start("a")
        await h.until("a keeps all", lambda: len(h.kept("a")) == 30)
        router = ROUTERS[0]
        assert await h.owners["a"].fence(router)
        # another member takes the row behind a's back (as if a's lease had expired)
        with h.owners["a"].leases.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE astara_leases SET owner = 'b', epoch = epoch + 1 WHERE router_id = "
                f"'{router}'"
            )
        assert not await h.owners["a"].fence(router)
        assert not h.owners["a"].keeps(ResourceKey.router(router))
        assert h.owners["a"].lost_total == 1
    finally:
        await h.close()


# -- the reconciler's fence ------------------------------------------------------------------------
async def test_the_reconciler_takes_no_action_without_the_fence() -> None:
    world = World()
    asked: list[str] = []

    async def fence(router_id: str) -> bool:
        asked.append(router_id)
        return False

    world.reconciler._fence = fence
    assert await world.step() is Action.BOOT  # decided, not taken
    assert asked == [KEY.id]
    assert world.operations() == []  # nothing booted
    assert await world.state() is None  # nothing stored, published or requeued
    assert world.published == []
    assert world.requeued == []
    entry = world.journal.get(KEY.id)
    assert entry is not None
    assert "lease lost" in (entry.history[-1].reason or "")
