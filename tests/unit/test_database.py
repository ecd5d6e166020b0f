"""The SQLite database: migrated on open, WAL checkpointed off the request path."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import text

from astara.network.db.engine import open_database


def test_the_wal_is_checkpointed_by_the_background_thread(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'n.db'}")
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        before = (tmp_path / "n.db").stat().st_size
        with db.write() as session:
            for i in range(2000):
                session.execute(
                    text(
                        "INSERT INTO networks (id, project_id, name, description, created_at, "
                        "updated_at, revision_number, tags, admin_state_up, status, mtu, shared, "
                        "external, network_type, port_security_enabled) VALUES (:id, 'p', '', "
                        "'', '2026-01-01', '2026-01-01', 0, '[]', 1, 'ACTIVE', 1500, 0, 0, "
                        "'local', 1)"
                    ),
                    {"id": f"{i:036d}"},
                )
        deadline = time.monotonic() + 5
        while (tmp_path / "n.db").stat().st_size == before:
            assert time.monotonic() < deadline, "no checkpoint copied the WAL into the database"
            time.sleep(0.1)
    finally:
        db.close()
    assert not any(t.name == "sqlite-checkpoint" for t in threading.enumerate())


def test_opening_twice_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'n.db'}"
    open_database(url).close()
    db = open_database(url)
    try:
        with db.engine.connect() as conn:
            assert (
                conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0001"
            )
    finally:
        db.close()
