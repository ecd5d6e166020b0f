"""Debug modes persist in the database (SQLite and PostgreSQL) and are read from memory.

The PostgreSQL cases need the server at 127.0.0.1:5432 (``ASTARA_TEST_PG`` names
its admin URL, as for tests/component): each makes a fresh database and drops
it after. They fail, never skip, when the server is not there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from astara.orchestrator.control_store import TABLE, ControlStore, DebugMode
from tests.conftest import scratch_database


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with scratch_database(request.param, tmp_path, "orchestrator") as made:
        yield made


def test_the_table_is_made_on_open_and_modes_survive_a_reopen(url: str) -> None:
    clock = Clock()
    store = ControlStore(url, clock=clock)
    try:
        assert store.modes() == []
        mode = store.set_debug("resource", "r1", "looking at it")
        assert mode == DebugMode(scope="resource", id="r1", reason="looking at it", since=5000.0)
        clock.now = 5001.0
        store.set_debug("tenant", "p1", "tenant maintenance")
        store.set_debug("global", "ignored", "freeze")
    finally:
        store.close()

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT scope, id, reason, since FROM {TABLE}")).all()
    finally:
        engine.dispose()
    assert sorted(tuple(r) for r in rows) == [
        ("global", "*", "freeze", 5001.0),
        ("resource", "r1", "looking at it", 5000.0),
        ("tenant", "p1", "tenant maintenance", 5001.0),
    ]

    again = ControlStore(url)
    try:
        assert [m.as_dict() for m in again.modes()] == [
            {"scope": "resource", "id": "r1", "reason": "looking at it", "since": 5000.0},
            {"scope": "tenant", "id": "p1", "reason": "tenant maintenance", "since": 5001.0},
            {"scope": "global", "id": "*", "reason": "freeze", "since": 5001.0},
        ]
    finally:
        again.close()


def test_is_held_answers_the_most_specific_mode(url: str) -> None:
    store = ControlStore(url)
    try:
        assert store.is_held("r1", "p1") is None
        tenant = store.set_debug("tenant", "p1", "tenant")
        assert store.is_held("r1", "p1") == tenant
        assert store.is_held("r1", None) is None  # the tenant is not known
        assert store.is_held("r2", "p2") is None
        own = store.set_debug("resource", "r1", "own")
        assert store.is_held("r1", "p1") == own
        everything = store.set_debug("global", "*", "all")
        assert store.is_held("r2", "p2") == everything
        assert store.is_held("r1", "p1") == own
        assert store.manage("resource", "r1") == own
        assert store.is_held("r1", "p1") == tenant
        assert store.manage("tenant", "p1") == tenant
        assert store.is_held("r1", "p1") == everything
    finally:
        store.close()


def test_manage_ends_a_mode_in_the_database_too(url: str) -> None:
    store = ControlStore(url)
    try:
        store.set_debug("resource", "r1", "x")
        assert store.manage("resource", "r1") is not None
        assert store.manage("resource", "r1") is None  # not in debug any more
        assert store.manage("tenant", "nobody") is None
    finally:
        store.close()
    again = ControlStore(url)
    try:
        assert again.modes() == []
    finally:
        again.close()


def test_setting_again_changes_the_reason_and_keeps_since(url: str) -> None:
    clock = Clock()
    store = ControlStore(url, clock=clock)
    try:
        store.set_debug("resource", "r1", "first")
        clock.now = 6000.0
        mode = store.set_debug("resource", "r1", "second")
        assert (mode.reason, mode.since) == ("second", 5000.0)
        assert store.modes() == [mode]
    finally:
        store.close()
    again = ControlStore(url)
    try:
        assert again.modes() == [mode]
    finally:
        again.close()


def test_reads_come_from_memory(url: str) -> None:
    store = ControlStore(url)
    try:
        store.set_debug("resource", "r1", "x")
        store._engine.dispose()
        # the database is now unreachable through this engine's pool: reads do not need it
        store._engine = sa.create_engine("sqlite:////nonexistent/dir/x.db")
        assert store.is_held("r1", None) is not None
        assert len(store.modes()) == 1
        with pytest.raises(sa.exc.OperationalError):
            store.set_debug("resource", "r2", "y")  # a write does; a failed one changes nothing
        assert store.is_held("r2", None) is None
    finally:
        store.close()


def test_bad_scopes_and_ids_are_refused(url: str) -> None:
    store = ControlStore(url)
    try:
        with pytest.raises(ValueError, match="unknown scope"):
            store.set_debug("host", "h1", "x")
        with pytest.raises(ValueError, match="needs an id"):
            store.set_debug("tenant", "", "x")
        assert store.modes() == []
    finally:
        store.close()


async def test_writes_from_worker_threads(url: str) -> None:
    store = ControlStore(url)
    try:
        await asyncio.gather(
            *(asyncio.to_thread(store.set_debug, "resource", f"r{n}", "x") for n in range(8))
        )
        assert len(store.modes()) == 8
    finally:
        store.close()
    again = ControlStore(url)
    try:
        assert sorted(m.id for m in again.modes()) == sorted(f"r{n}" for n in range(8))
    finally:
        again.close()
