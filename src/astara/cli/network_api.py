"""``astara network-api``: the Neutron v2.0-compatible network service, in the foreground."""

from __future__ import annotations

import argparse
from typing import Any

from astara.network import segments
from astara.network.server import serve
from astara.settings import DEFAULT_NETWORK_DB, NetworkSettings


def register(parts: Any) -> None:
    cmd = parts.add_parser("network-api", help="the Neutron-compatible network API (port 9696)")
    cmd.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    cmd.add_argument("--port", type=int, default=9696)
    cmd.add_argument(
        "--db",
        default=DEFAULT_NETWORK_DB,
        metavar="URL",
        help="SQLAlchemy URL (default: SQLite under /var/lib/astara)",
    )
    cmd.add_argument(
        "--default-project",
        default="admin",
        help="no-auth: project of requests without X-Project-Id",
    )
    cmd.add_argument(
        "--no-admin-by-default",
        action="store_true",
        help="no-auth: callers are admin only with X-Roles: admin",
    )
    cmd.add_argument(
        "--vlan-ranges", default="100:4094", help="VLAN ids for tenant networks, START:END[,...]"
    )
    cmd.add_argument(
        "--vxlan-ranges", default="1:65535", help="VXLAN VNIs for tenant networks, START:END[,...]"
    )
    cmd.add_argument(
        "--tenant-network-type", default="vxlan", choices=["vxlan", "vlan", "flat", "local"]
    )
    cmd.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        vlan = segments.parse_ranges(args.vlan_ranges, network_type="vlan")
        vxlan = segments.parse_ranges(args.vxlan_ranges, network_type="vxlan")
    except ValueError as exc:
        raise SystemExit(f"astara network-api: {exc}") from None
    serve(
        NetworkSettings(
            host=args.host,
            port=args.port,
            db_url=args.db,
            default_project=args.default_project,
            admin_by_default=not args.no_admin_by_default,
            vlan_ranges=vlan,
            vxlan_ranges=vxlan,
            tenant_network_type=args.tenant_network_type,
        )
    )
    return 0
