"""``--config FILE``: a command's flags read from a TOML file, under the command's own table.

One mechanism for every command that takes ``--config``: each key of the
table named after the command (``[up]``, ``[orchestrator]``) is one of that
command's long flags, spelt with dashes or underscores, with a TOML value of
the flag's kind (a string, a number, a boolean, a list for a flag that may be
repeated)::

    [up]
    state-dir = "/var/lib/astara"
    boot-timeout = 120
    uplink = ["physnet1=eth1"]

The file gives the defaults; a flag on the command line wins. An unknown
key, a value of the wrong kind, a missing file or bad TOML is a clear error
naming the file and the key, and nothing runs.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["ConfigFileError", "add_config_option", "defaults_from", "parse_with_config"]


class ConfigFileError(ValueError):
    """The configuration file cannot be used; the message says where and why."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="read this command's flags from the TOML file's table of its name (flags win)",
    )


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's long options by destination (``state_dir``), the config option left out."""
    found: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse offers no public way to list them
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.dest not in ("help", "config"):
            found[action.dest] = action
    return found


def _value(where: str, action: argparse.Action, value: Any) -> Any:
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if not isinstance(value, bool):
            raise ConfigFileError(f"{where} must be true or false")
        return value
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [_scalar(where, action, item) for item in items]
    if isinstance(value, list | dict):
        raise ConfigFileError(f"{where} takes one value, not a {type(value).__name__}")
    return _scalar(where, action, value)


def _scalar(where: str, action: argparse.Action, value: Any) -> Any:
    if isinstance(value, bool | list | dict):
        raise ConfigFileError(f"{where}: {value!r} is not a value of this flag")
    convert = action.type if callable(action.type) else str
    try:
        converted = convert(str(value)) if not isinstance(value, str) else convert(value)
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise ConfigFileError(f"{where}: {value!r} is not valid: {exc}") from None
    if action.choices is not None and converted not in action.choices:
        raise ConfigFileError(f"{where}: {value!r} is not one of {sorted(action.choices)}")
    return converted


def defaults_from(path: Path, command: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The defaults ``[command]`` of ``path`` gives ``parser``'s flags; ConfigFileError if bad."""
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not TOML: {exc}") from None
    table = document.get(command, {})
    if not isinstance(table, dict):
        raise ConfigFileError(f"{path}: [{command}] must be a table")
    others = sorted(k for k, v in document.items() if k != command and not isinstance(v, dict))
    if others:
        raise ConfigFileError(
            f"{path}: keys outside a table: {', '.join(others)} (put them under [{command}])"
        )
    options = _options(parser)
    defaults: dict[str, Any] = {}
    for key, value in table.items():
        dest = key.replace("-", "_")
        action = options.get(dest)
        if action is None:
            known = ", ".join(sorted(d.replace("_", "-") for d in options))
            raise ConfigFileError(f"{path}: [{command}] has no key {key!r}; known: {known}")
        defaults[dest] = _value(f"{path}: [{command}] {key}", action, value)
    return defaults


def parse_with_config(
    parser: argparse.ArgumentParser,
    commands: dict[str, argparse.ArgumentParser],
    argv: Sequence[str] | None,
) -> argparse.Namespace:
    """Parse ``argv``; when the command was given ``--config``, parse again with its defaults."""
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    command = getattr(args, "command", None)
    if path is None or command not in commands:
        return args
    sub = commands[command]
    try:
        sub.set_defaults(**defaults_from(path, command, sub))
    except ConfigFileError as exc:
        parser.error(str(exc))
    return parser.parse_args(argv)
