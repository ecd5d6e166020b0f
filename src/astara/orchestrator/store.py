"""The orchestrator's database: one SQLAlchemy engine, every table of the orchestrator's.

What the orchestrator must not lose lives here, in SQLite (``astara up``:
``<state dir>/orchestrator.db``) or PostgreSQL (several orchestrators share
one): the operators' debug modes (``control_store``), the resources recorded
as pending before their notification is acknowledged (``pending``), and who
owns which router, fenced by a lease with an epoch (``ownership``).

Invariants:

- Every table of the orchestrator is declared on ``metadata``, in the module
  that uses it; ``open_engine`` brings the schema up to date before anything
  reads it.
- SQLite runs in WAL mode with a busy timeout, so that readers never wait for
  the writer and two processes sharing a file wait for each other instead of
  failing at once; connections may be used from worker threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

__all__ = ["metadata", "open_engine"]

metadata = sa.MetaData()
"""Every table of the orchestrator's database."""

BUSY_TIMEOUT_MS = 10_000


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
    metadata.create_all(engine)
    return engine


def _import_tables() -> None:
    """Import the modules that declare tables on ``metadata`` (each once)."""
    from astara.orchestrator import (
        control_store,  # noqa: F401
        ownership,  # noqa: F401
        pending,  # noqa: F401
    )
