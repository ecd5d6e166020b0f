"""``astara up``/``down`` flags that need no root: ``--uplink`` as the fabric's uplinks."""

from __future__ import annotations

import argparse
import io
import logging
import stat
from pathlib import Path

import pytest

from astara.cli import up
from astara.cli.fabric_options import FabricOptionError, parse_uplinks
from astara.cli.main import main
from astara.orchestrator.logcontext import ResourceFilter, about


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    up.register(parser.add_subparsers())
    return parser.parse_args(list(argv))


def test_uplinks_are_repeatable_and_default_to_none() -> None:
    assert _parse("up").uplink == []
    args = _parse("down", "--uplink", "physnet1=eth1", "--uplink", "physnet2=eth2")
    assert parse_uplinks(args.uplink) == {"physnet1": "eth1", "physnet2": "eth2"}


@pytest.mark.parametrize("text", ["physnet1", "=eth1", "physnet1="])
def test_a_malformed_uplink_is_refused(text: str) -> None:
    with pytest.raises(FabricOptionError, match="expected PHYSNET=NIC"):
        parse_uplinks([text])


def test_admin_api_and_orchestrator_database_flags() -> None:
    args = _parse("up")
    assert args.admin_port == 44250
    assert args.orchestrator_db is None  # sqlite:///<state dir>/orchestrator.db
    args = _parse(
        "up", "--admin-port", "0", "--orchestrator-db", "postgresql+psycopg://u@h:5432/astara"
    )
    assert args.admin_port == 0
    assert args.orchestrator_db == "postgresql+psycopg://u@h:5432/astara"
    layout = up.Layout(Path("/var/lib/astara"))
    assert layout.admin_token == Path("/var/lib/astara/admin-token")
    assert layout.orchestrator_db == Path("/var/lib/astara/orchestrator.db")


def test_the_token_file_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "admin-token"
    token = up._token_file(path)
    assert len(token) >= 32
    assert all(c in "0123456789abcdef" for c in token)  # never "-…": it goes on command lines
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert up._token_file(path) == token  # kept, not regenerated


def test_up_log_lines_carry_the_resource() -> None:
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    try:
        up.structured_logs([handler])
        up.structured_logs([handler])  # idempotent: one filter
        assert sum(isinstance(f, ResourceFilter) for f in handler.filters) == 1
        log = logging.getLogger("astara.orchestrator.test")
        with about("router-1"):
            log.warning("reconciling")
        log.warning("idle")
    finally:
        root.removeHandler(handler)
    first, second = stream.getvalue().splitlines()
    assert first.endswith(" WARNING astara.orchestrator.test [router-1] reconciling")
    assert second.endswith(" WARNING astara.orchestrator.test [-] idle")


def test_an_orchestrator_database_that_cannot_open_is_a_clear_exit(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="astara: the orchestrator database sqlite:////nonexist"):
        up._control_store("sqlite:////nonexistent/dir/orchestrator.db")
    store = up._control_store(f"sqlite:///{tmp_path / 'orchestrator.db'}")
    try:
        assert store.modes() == []
        assert (tmp_path / "orchestrator.db").exists()
    finally:
        store.close()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["orchestrator"], "needs --bus-url rabbit://"),
        (["orchestrator", "--bus-url", "embedded://"], "the embedded bus lives inside one process"),
        (["orchestrator", "--bus-url", "kafka://broker"], "unknown bus transport kafka://"),
        (["up", "--bus-url", "kafka://broker"], "unknown bus transport kafka://"),
    ],
)
def test_a_bus_that_cannot_serve_is_refused_before_anything_starts(
    argv: list[str], says: str, tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--state-dir", str(tmp_path / "state")])
    assert says in str(stopped.value.code)
    assert not (tmp_path / "state").exists()  # no agent, no state directory


def test_the_orchestrator_takes_its_bus_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "astara.toml"
    config.write_text('[orchestrator]\nbus-url = "kafka://from-the-file"\n')
    with pytest.raises(SystemExit) as stopped:
        main(["orchestrator", "--config", str(config), "--state-dir", str(tmp_path / "s")])
    assert "kafka://" in str(stopped.value.code)  # read from the file, then refused


def test_shard_is_i_of_n() -> None:
    assert up._shard("1/3") == (1, 3)
    assert up._shard("0/1") == (0, 1)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(argparse.ArgumentTypeError):
            up._shard(bad)
