"""``astara``: the one command. Each subcommand parses, wires, and hands over."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from astara import __version__
from astara.cli import appliance, demo, network_api, resources, server, up


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
    resources.register(parts)
    server.register(parts)
    up.register(parts)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
