"""The network API opens its database connections at start, not in its first burst."""

from __future__ import annotations

from pathlib import Path

from astara.network.db.engine import open_database


def test_warm_opens_the_pools_connections_ahead_of_requests(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'n.db'}")
    try:
        size = db.engine.pool.size()  # type: ignore[attr-defined]
        assert db.warm() == size
        assert db.engine.pool.checkedin() == size  # type: ignore[attr-defined]
    finally:
        db.close()
