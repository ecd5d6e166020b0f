"""The orchestrator's database: one SQLAlchemy engine, every table of the orchestrator's.

What the orchestrator must not lose lives here, in SQLite (``astara up``:
``<state dir>/orchestrator.db``) or PostgreSQL (several orchestrators share
one): the operators' debug modes (``control_store``), the resources recorded
as pending before their notification is acknowledged (``pending``), and who
owns which router, fenced by a lease with an epoch (``ownership``).

Invariants:

- Every table of the orchestrator is declared on ``metadata``, in the module
  that uses it, and made by an Alembic migration (``migrations/versions``;
  version table ``astara_orchestrator_version``, so that the network API may
  share the database); ``open_engine`` brings the schema up to date before
  anything reads it. Several orchestrators starting at once migrate one
  after the other (a PostgreSQL advisory lock; a lock file beside a SQLite
  file). A test checks that the migrations give what ``metadata`` declares.
- SQLite runs in WAL mode with a busy timeout, so that readers never wait for
  the writer and two processes sharing a file wait for each other instead of
  failing at once; connections may be used from worker threads.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

__all__ = ["VERSION_TABLE", "metadata", "open_engine", "upgrade"]

metadata = sa.MetaData()
"""Every table of the orchestrator's database."""

BUSY_TIMEOUT_MS = 10_000
VERSION_TABLE = "astara_orchestrator_version"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 0x61737461  # PostgreSQL advisory lock key of the migrations ("asta")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def open_engine(url: str) -> Engine:
    """An engine for ``url`` with the schema up to date; a SQLite file's directory must exist.

    Raises ``sqlalchemy.exc.SQLAlchemyError`` (or ``ArgumentError`` for a bad
    URL) when the database cannot be reached or created.
    """
    options: dict[str, Any] = {}
    if url.startswith("sqlite"):
        options["connect_args"] = {"check_same_thread": False}
    else:
        options["pool_size"] = 10
        options["max_overflow"] = 10
        options["pool_pre_ping"] = True
    engine = sa.create_engine(url, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:" and not Path(path).parent.is_dir():
            engine.dispose()
            raise sa.exc.ArgumentError(f"no directory for the database file {path}")
    _import_tables()
    try:
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def upgrade(engine: Engine) -> None:
    """Bring the schema to the latest migration (idempotent; one process at a time)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _migration_lock(engine), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Held while migrating: orchestrators starting together must not migrate at once."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            _advisory(conn, "pg_advisory_lock")
            try:
                yield
            finally:
                _advisory(conn, "pg_advisory_unlock")
        return
    path = engine.url.database
    if engine.dialect.name != "sqlite" or not path or path == ":memory:":
        yield
        return
    with open(f"{path}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _advisory(conn: Connection, function: str) -> None:
    conn.execute(sa.text(f"SELECT {function}(:key)"), {"key": _MIGRATION_LOCK})
    conn.commit()


def _import_tables() -> None:
    """Import the modules that declare tables on ``metadata`` (each once)."""
    from astara.orchestrator import (
        control_store,  # noqa: F401
        ownership,  # noqa: F401
        pending,  # noqa: F401
    )
