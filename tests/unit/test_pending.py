"""The pending log (``astara_pending``) on SQLite and PostgreSQL, and the runner's side of it.

The PostgreSQL cases need the server at 127.0.0.1:5432 (``ASTARA_TEST_PG`` names
its admin URL): each makes a fresh database and drops it after. They fail,
never skip, when the server is not there.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from astara.orchestrator.pending import TABLE, PendingRouters, PendingStore
from astara.orchestrator.resolution import ResourceKey
from tests.conftest import scratch_database


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with scratch_database(request.param, tmp_path, "pending") as made:
        yield made


@pytest.fixture
def store(url: str) -> Iterator[PendingStore]:
    made = PendingStore(url, clock=lambda: 1234.5)
    try:
        yield made
    finally:
        made.close()


def test_record_gives_growing_ids_and_routers_the_highest_per_router(store: PendingStore) -> None:
    first = store.record(["r1", "r2", "r1"], "router.update.end")
    assert set(first) == {"r1", "r2"}
    second = store.record_many([("r2", "port.create.end"), ("r3", "router.create.end")])
    assert min(second.values()) > max(first.values())
    assert store.routers() == {"r1": first["r1"], "r2": second["r2"], "r3": second["r3"]}
    assert store.count() == 5
    assert store.record([], "x") == {} and store.record_many([]) == {}
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT router_id, event_type, recorded_at FROM {TABLE}"))
        assert ("r3", "router.create.end", 1234.5) in [tuple(r) for r in rows]


def test_done_deletes_only_the_rows_up_to_the_id_given(store: PendingStore) -> None:
    early = store.record(["r1", "r2"], "router.update.end")
    late = store.record(["r1"], "router.update.end")
    assert store.done("r1", early["r1"]) == 1
    assert store.routers() == {"r1": late["r1"], "r2": early["r2"]}
    assert store.done_many({"r1": late["r1"], "r2": early["r2"], "nobody": 10**9}) == 2
    assert store.routers() == {} and store.count() == 0
    assert store.look() == ({}, 0)


def test_ids_are_never_reused_once_every_row_is_gone(store: PendingStore) -> None:
    before = store.record(["r1"], "e")["r1"]
    store.done("r1", before)
    assert store.count() == 0
    assert store.record(["r1"], "e")["r1"] > before  # else the poll would take it as seen


def test_rows_survive_a_reopen(url: str) -> None:
    first = PendingStore(url)
    try:
        ids = first.record(["r1"], "router.update.end")
    finally:
        first.close()
    again = PendingStore(url)
    try:
        assert again.routers() == ids
    finally:
        again.close()


def _writer(url: str, tag: str, count: int) -> None:
    store = PendingStore(url)
    try:
        for n in range(count):
            store.record([f"{tag}-{n % 7}", "shared"], "router.update.end")
    finally:
        store.close()


def test_several_processes_record_at_once(url: str, store: PendingStore) -> None:
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(url, f"w{n}", 50)) for n in range(3)]
    for writer in writers:
        writer.start()
    seen: dict[str, int] = {}
    while any(w.is_alive() for w in writers):  # a reader (and deleter) meanwhile
        found = store.routers()
        assert all(found.get(r, 0) >= 0 for r in seen)
        if "shared" in found:
            store.done("shared", found["shared"])
        seen = found
    for writer in writers:
        writer.join(timeout=60)
        assert writer.exitcode == 0
    found = store.routers()
    assert {r for r in found if r != "shared"} == {f"w{w}-{n}" for w in range(3) for n in range(7)}
    assert store.count() >= 3 * 50


# -- the runner's side ----------------------------------------------------------------------


class Enqueued(list[ResourceKey]):
    def __call__(self, key: ResourceKey) -> None:
        self.append(key)


def _mine(key: ResourceKey) -> bool:
    return not key.id.startswith("other")


async def test_the_poll_enqueues_kept_routers_whose_rows_grew_once(store: PendingStore) -> None:
    enqueued = Enqueued()
    routers = PendingRouters(store, keeps=_mine, enqueue=enqueued)
    survived = store.record(["r1", "other-1"], "router.update.end")  # before a restart
    assert await routers.look() == 1
    assert enqueued == [ResourceKey.router("r1")]
    assert await routers.look() == 0  # nothing grew

    store.record(["r2", "other-2"], "router.update.end")  # another orchestrator's rows
    await routers.look()
    assert enqueued[1:] == [ResourceKey.router("r2")]

    # a reconcile of r1 that started having seen its row, then finished: the row goes
    upto = routers.started(ResourceKey.router("r1"))
    assert upto == survived["r1"]
    routers.finished(ResourceKey.router("r1"), upto)
    await routers.look()
    assert "r1" not in store.routers()
    # and a new row for it later is noticed again, though its id is "new" only to the poll
    store.record(["r1"], "router.update.end")
    await routers.look()
    assert enqueued[2:] == [ResourceKey.router("r1")]


async def test_rows_recorded_here_are_seen_and_not_enqueued_again_by_the_poll(
    store: PendingStore,
) -> None:
    enqueued = Enqueued()
    routers = PendingRouters(store, keeps=_mine, enqueue=enqueued)
    await routers.record([("router.update.end", ResourceKey.router("r1"))] * 3)
    assert routers.recorded == 3
    upto = routers.started(ResourceKey.router("r1"))
    assert upto == store.routers()["r1"]
    assert await routers.look() == 0 and enqueued == []  # the intake enqueues them itself
    later = store.record(["r1"], "router.update.end")["r1"]  # arrives while it runs
    routers.finished(ResourceKey.router("r1"), upto)
    await routers.look()
    assert store.routers() == {"r1": later}  # the later row stays...
    assert enqueued == [ResourceKey.router("r1")]  # ...and its router is enqueued


async def test_a_failed_delete_is_tried_again_at_the_next_look(
    store: PendingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    routers = PendingRouters(store, keeps=_mine, enqueue=Enqueued())
    await routers.record([("e", ResourceKey.router("r1"))])
    routers.finished(ResourceKey.router("r1"), routers.started(ResourceKey.router("r1")))

    def down(_upto: dict[str, int]) -> int:
        raise sa.exc.OperationalError("DELETE", {}, Exception("database is down"))

    with monkeypatch.context() as patched:
        patched.setattr(store, "done_many", down)
        with pytest.raises(sa.exc.OperationalError):
            await routers.look()
    assert store.count() == 1
    await routers.look()
    assert store.count() == 0


async def test_run_looks_until_closed_and_deletes_what_finished_before_leaving(
    store: PendingStore,
) -> None:
    enqueued = Enqueued()
    routers = PendingRouters(store, keeps=_mine, enqueue=enqueued, period=0.01)
    task = asyncio.create_task(routers.run())
    store.record(["r1"], "router.update.end")
    async with asyncio.timeout(5):
        while not enqueued:
            await asyncio.sleep(0.01)
    routers.finished(ResourceKey.router("r1"), routers.started(ResourceKey.router("r1")))
    routers.close()
    await asyncio.wait_for(task, 5)
    assert store.count() == 0 and routers.polled == 1
