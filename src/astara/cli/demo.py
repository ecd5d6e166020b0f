"""``astara demo``: the newcomer's first command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from astara.demo import Options, run_demo


def register(parts: Any) -> None:
    demo = parts.add_parser(
        "demo",
        help="run astara up, build two projects through the API and prove every path",
    )
    defaults = Options()
    demo.add_argument(
        "--keep",
        action="store_true",
        help="leave everything running, say what to try next, and remove it when Enter is pressed",
    )
    demo.add_argument(
        "--url",
        default=defaults.url,
        help="the network API: used (and left running) if it answers, else astara up is"
        f" started there (default {defaults.url})",
    )
    isolate = demo.add_argument_group("the astara up it starts (for tests: isolate a run)")
    isolate.add_argument("--state-dir", type=Path, default=defaults.state_dir)
    isolate.add_argument(
        "--server-state-dir", type=Path, default=None, help="where its servers are recorded"
    )
    isolate.add_argument("--fabric-prefix", default=defaults.fabric_prefix)
    isolate.add_argument(
        "--netns-prefix",
        default=defaults.netns_prefix,
        help="appliance namespaces; the outside namespace is <prefix>demo-outside",
    )
    isolate.add_argument("--mgmt-bridge", default=defaults.mgmt_bridge)
    isolate.add_argument("--mgmt-prefix", default=None)
    isolate.add_argument("--admin-port", type=int, default=defaults.admin_port)
    isolate.add_argument("--metadata-port", type=int, default=defaults.metadata_port)
    isolate.add_argument(
        "--timeout",
        type=float,
        default=defaults.timeout,
        help="seconds for routers to be ACTIVE and servers leased (60)",
    )
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("astara demo: run as root (it creates network namespaces)", file=sys.stderr)
        return 1
    return run_demo(
        Options(
            keep=args.keep,
            url=args.url.rstrip("/"),
            state_dir=args.state_dir,
            server_state_dir=args.server_state_dir,
            fabric_prefix=args.fabric_prefix,
            netns_prefix=args.netns_prefix,
            mgmt_bridge=args.mgmt_bridge,
            mgmt_prefix=args.mgmt_prefix,
            admin_port=args.admin_port,
            metadata_port=args.metadata_port,
            timeout=args.timeout,
        )
    )
