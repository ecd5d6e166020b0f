"""``astara network-api``: the Neutron v2.0-compatible network service, in the foreground."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from astara.network import segments
from astara.network.server import serve
from astara.settings import DEFAULT_NETWORK_DB, NetworkSettings

PASSWORD_ENV = "ASTARA_KEYSTONE_PASSWORD"  # noqa: S105 -- the variable's name


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
        "--bus-url",
        default="embedded://",
        metavar="URL",
        help="where notifications go: rabbit://user:pass@host:5672/ for orchestrators in other"
        " processes (exchange neutron, oslo envelope); embedded:// keeps them in this process",
    )
    cmd.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes serving the API (default 1); with more than one, notifications reach"
        " orchestrators only through --bus-url rabbit://…",
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
    keystone = cmd.add_argument_group(
        "authentication", "noauth: identity from X-Project-Id/X-Roles; keystone: X-Auth-Token"
    )
    keystone.add_argument("--auth-strategy", default="noauth", choices=["noauth", "keystone"])
    keystone.add_argument(
        "--keystone-url", default="", metavar="URL", help="keystone: http://keystone:5000"
    )
    keystone.add_argument(
        "--keystone-username", default="neutron", help="keystone: the service user (neutron)"
    )
    keystone.add_argument(
        "--keystone-password-file",
        type=Path,
        metavar="PATH",
        help=f"keystone: file holding the service user's password (else ${PASSWORD_ENV})",
    )
    keystone.add_argument(
        "--keystone-project", default="service", help="keystone: the service user's project"
    )
    keystone.add_argument("--keystone-user-domain", default="Default")
    keystone.add_argument("--keystone-project-domain", default="Default")
    keystone.add_argument(
        "--token-cache-ttl",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="keystone: trust a validated token this long (default 300, never past its expiry)",
    )
    cmd.set_defaults(handler=run)


def _keystone_password(args: argparse.Namespace) -> str:
    """From ``--keystone-password-file`` or the environment: never from the command line."""
    if args.keystone_password_file is not None:
        try:
            return str(args.keystone_password_file.read_text()).strip("\r\n")
        except OSError as exc:
            raise SystemExit(
                f"astara network-api: cannot read the Keystone password file: {exc}"
            ) from None
    return os.environ.get(PASSWORD_ENV, "")


def run(args: argparse.Namespace) -> int:
    try:
        vlan = segments.parse_ranges(args.vlan_ranges, network_type="vlan")
        vxlan = segments.parse_ranges(args.vxlan_ranges, network_type="vxlan")
    except ValueError as exc:
        raise SystemExit(f"astara network-api: {exc}") from None
    password = ""
    if args.auth_strategy == "keystone":
        if not args.keystone_url:
            raise SystemExit("astara network-api: --auth-strategy keystone needs --keystone-url")
        password = _keystone_password(args)
        if not password:
            raise SystemExit(
                "astara network-api: --auth-strategy keystone needs the service user's password"
                f" in --keystone-password-file or ${PASSWORD_ENV}"
            )
    if args.workers < 1:
        raise SystemExit("astara network-api: --workers must be at least 1")
    serve(
        NetworkSettings(
            host=args.host,
            port=args.port,
            db_url=args.db,
            bus_url=args.bus_url,
            default_project=args.default_project,
            admin_by_default=not args.no_admin_by_default,
            vlan_ranges=vlan,
            vxlan_ranges=vxlan,
            tenant_network_type=args.tenant_network_type,
            auth_strategy=args.auth_strategy,
            keystone_url=args.keystone_url,
            keystone_username=args.keystone_username,
            keystone_password=password,
            keystone_user_domain=args.keystone_user_domain,
            keystone_project=args.keystone_project,
            keystone_project_domain=args.keystone_project_domain,
            keystone_token_cache_ttl=args.token_cache_ttl,
        ),
        workers=args.workers,
    )
    return 0
