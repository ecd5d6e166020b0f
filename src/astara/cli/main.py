"""``astara``: the one command. Each subcommand parses, wires, and hands over."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from astara import __version__
from astara.cli import appliance, ctl, demo, network_api, resources, server, up
from astara.cli.config_file import parse_with_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astara",
        description="Network services (routing, NAT, DHCP/DNS, RAs, BGP, metadata) as Linux appliances.",
    )
    parser.add_argument("--version", action="version", version=f"astara {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parts = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    appliance.register(parts)
    demo.register(parts)
    network_api.register(parts)
    ctl.register(parts, resources.register(parts)["router"])
    server.register(parts)
    up.register(parts)
    return parser


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands' parsers by name."""
    for action in parser._actions:  # argparse offers no public way to reach them
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_with_config(parser, _commands(parser), argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
