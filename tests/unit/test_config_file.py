"""``--config FILE``: flags from a TOML table named after the command; the command line wins."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from astara.cli.config_file import add_config_option, parse_with_config


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="astara")
    parts = parser.add_subparsers(dest="command", required=True)
    up = parts.add_parser("up")
    add_config_option(up)
    up.add_argument("--state-dir", type=Path, default=Path("/var/lib/astara"))
    up.add_argument("--boot-timeout", type=float, default=300.0)
    up.add_argument("--port", type=int, default=9696)
    up.add_argument("--uplink", action="append", default=[])
    up.add_argument("--verbose", action="store_true")
    up.add_argument("--mode", choices=["a", "b"], default="a")
    return parser, {"up": up}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "astara.toml"
    path.write_text(text)
    return path


def test_the_file_gives_defaults_and_the_command_line_wins(tmp_path: Path) -> None:
    config = _write(
        tmp_path,
        '[up]\nstate-dir = "/srv/astara"\nboot_timeout = 60\nport = 9797\n'
        'uplink = ["physnet1=eth1"]\nverbose = true\n\n[orchestrator]\nport = 1\n',
    )
    parser, commands = _parser()
    args = parse_with_config(parser, commands, ["up", "--config", str(config), "--port", "9000"])
    assert args.state_dir == Path("/srv/astara")
    assert args.boot_timeout == 60.0
    assert args.port == 9000  # the command line wins
    assert args.uplink == ["physnet1=eth1"]
    assert args.verbose is True
    assert args.mode == "a"  # untouched


def test_without_config_nothing_changes() -> None:
    parser, commands = _parser()
    args = parse_with_config(parser, commands, ["up"])
    assert args.port == 9696
    assert args.config is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[up]\nbogus = 1\n", "[up] has no key 'bogus'"),
        ("[up]\nport = 'nine'\n", "[up] port: 'nine' is not valid"),
        ("[up]\nverbose = 'yes'\n", "[up] verbose must be true or false"),
        ("[up]\nmode = 'c'\n", "[up] mode: 'c' is not one of"),
        ("[up]\nport = [1, 2]\n", "[up] port takes one value"),
        ("port = 1\n", "keys outside a table: port"),
        ("[up\n", "not TOML"),
    ],
)
def test_a_bad_file_is_a_clear_error_and_nothing_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, says: str
) -> None:
    config = _write(tmp_path, text)
    parser, commands = _parser()
    with pytest.raises(SystemExit) as stopped:
        parse_with_config(parser, commands, ["up", "--config", str(config)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert says in err
    assert str(config) in err


def test_a_missing_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser, commands = _parser()
    with pytest.raises(SystemExit):
        parse_with_config(parser, commands, ["up", "--config", str(tmp_path / "nope.toml")])
    assert "nope.toml: cannot read it" in capsys.readouterr().err
