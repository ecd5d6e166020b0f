"""The orchestrator's database: its migrations make what the code declares, on SQLite and
PostgreSQL; a database from before migrations keeps its debug modes; orchestrators that
start together migrate one after the other."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from astara.orchestrator import store
from tests.conftest import scratch_database


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with scratch_database(request.param, tmp_path, "orchestrator") as made:
        yield made


def test_the_migrations_make_what_the_tables_declare(url: str) -> None:
    engine = store.open_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": store.VERSION_TABLE})
            assert compare_metadata(context, store.metadata) == []
            assert context.get_current_revision() is not None
            tables = set(sa.inspect(conn).get_table_names())
        assert {"astara_debug_modes", "astara_pending", "astara_leases"} <= tables
        assert "alembic_version" not in tables  # the network API's, if it shares the database
    finally:
        engine.dispose()


def test_opening_twice_is_idempotent(url: str) -> None:
    for _ in range(2):
        store.open_engine(url).dispose()


def test_a_database_from_before_migrations_keeps_its_debug_modes(url: str) -> None:
    old = sa.create_engine(url)
    with old.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE astara_debug_modes (scope VARCHAR(16) NOT NULL,"
                " id VARCHAR(255) NOT NULL, reason TEXT NOT NULL, since FLOAT NOT NULL,"
                " PRIMARY KEY (scope, id))"
            )
        )
        conn.execute(sa.text("INSERT INTO astara_debug_modes VALUES ('global', '*', 'held', 1.0)"))
    old.dispose()
    engine = store.open_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT scope, id, reason FROM astara_debug_modes")).all()
            assert [tuple(r) for r in rows] == [("global", "*", "held")]
            assert "astara_leases" in sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()


def _open(url: str) -> None:
    store.open_engine(url).dispose()


def test_orchestrators_starting_together_migrate_one_after_the_other(url: str) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_open, args=(url,)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
