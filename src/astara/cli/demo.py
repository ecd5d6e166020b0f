"""``astara demo``: the newcomer's first command."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from astara.demo import run_demo


def register(parts: Any) -> None:
    demo = parts.add_parser(
        "demo", help="show an appliance routing, NATing and serving DHCP for real"
    )
    demo.add_argument("--keep", action="store_true", help="leave it running until Enter is pressed")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("astara demo: run as root (it creates network namespaces)", file=sys.stderr)
        return 1
    return run_demo(keep=args.keep)
