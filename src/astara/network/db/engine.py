"""The database: engine, sessions, migrations, and the write discipline per backend.

``open_database(url)`` is the one way in: it creates the engine, brings the
schema to the latest Alembic revision, and returns a ``Database`` whose
``write()`` and ``read()`` hand out sessions. SQLite (the embedded default)
takes one writer at a time, so writes are serialised in-process by a lock
(WAL lets reads go on meanwhile); PostgreSQL takes concurrent writers, and
uniqueness is kept by constraints (see ``models.py``) with the services
retrying on a lost race.

SQLite's WAL is checkpointed by a background thread (``Checkpointer``), not by
the commit that happens to cross the threshold: the checkpoint's fsync
(~20 ms here) would otherwise land on one request in fifty. Durability is
unchanged (``synchronous=NORMAL``: the WAL is synced at checkpoints).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEFAULT_URL = "sqlite:////var/lib/astara/network.db"
IMMEDIATE = "astara_sqlite_immediate"  # execution option: begin a SQLite write transaction


class Checkpointer:
    """Checkpoints a SQLite WAL every ``period`` seconds from its own thread and connection."""

    def __init__(self, engine: Engine, *, period: float = 0.5) -> None:
        self._engine = engine
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                with self._engine.connect() as connection:
                    connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:  # a failed checkpoint is retried next period; never kill the thread
                log.exception("SQLite checkpoint failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Database:
    """Sessions on one database; see the module docstring."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_lock = threading.Lock() if self.sqlite else contextlib.nullcontext()
        self._checkpointer = Checkpointer(engine) if self.sqlite else None

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A session committed on success, rolled back on any exception.

        On SQLite the transaction takes the write lock when it begins (``BEGIN
        IMMEDIATE``): another process writing meanwhile (``network-api
        --workers``) makes it wait (busy timeout) instead of failing on commit.
        """
        with self._write_lock, self._sessions.begin() as session:
            if self.sqlite:
                session.connection(execution_options={IMMEDIATE: True})
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    def warm(self) -> int:
        """Open the pool's connections now (a server's start), not during the first burst of
        requests: a PostgreSQL connection costs a backend fork, ~10 ms of CPU on a machine
        that is then serving. Returns how many the pool holds; a failure only logs."""
        size = getattr(self.engine.pool, "size", None)
        count = size() if callable(size) else 1
        opened: list[Any] = []
        try:
            for _ in range(count):
                opened.append(self.engine.connect())
        except Exception:  # the requests will open (or fail to open) their own
            log.warning("could not open %d database connections at start", count, exc_info=True)
        finally:
            for connection in opened:
                connection.close()  # back to the pool, open
        return len(opened)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # transactions are begun by _sqlite_begin, not by the driver behind SQLAlchemy's back
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer thread does it
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    immediate = connection.get_execution_options().get(IMMEDIATE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def upgrade(engine: Engine) -> None:
    """Bring the schema to the latest migration (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def open_database(url: str = DEFAULT_URL) -> Database:
    """Engine for ``url``, schema migrated; a SQLite file's directory is created."""
    options: dict[str, Any] = {}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {"check_same_thread": False}
    else:
        options["pool_size"] = 20
        options["max_overflow"] = 20
    engine = create_engine(url, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    upgrade(engine)
    return Database(engine)
