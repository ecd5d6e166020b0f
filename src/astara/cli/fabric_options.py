"""The fabric flags ``astara up`` and ``astara server`` share, and the Fabric they describe.

Both commands must plug onto the same bridges, so they read the same flags
the same way: ``--uplink PHYSNET=NIC`` (repeatable) and ``--vxlan-local``.
"""

from __future__ import annotations

import argparse
import ipaddress
from typing import Any

from astara.fabric import Fabric, VxlanUnderlay


class FabricOptionError(ValueError):
    """A fabric flag that cannot be used; the message names it."""


def add_fabric_options(group: Any) -> None:
    """Add ``--uplink`` and ``--vxlan-local`` to a parser or argument group."""
    group.add_argument(
        "--uplink",
        action="append",
        default=[],
        metavar="PHYSNET=NIC",
        help="the host NIC of a physical network, for flat and VLAN networks (repeatable)",
    )
    group.add_argument(
        "--vxlan-local",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="the VXLAN underlay's local address (default 127.0.0.1: one host)",
    )


def parse_uplinks(values: list[str]) -> dict[str, str]:
    """``--uplink PHYSNET=NIC`` values as the fabric's uplinks."""
    uplinks = {}
    for text in values:
        physnet, sep, nic = text.partition("=")
        if not sep or not physnet or not nic:
            raise FabricOptionError(f"--uplink {text!r}: expected PHYSNET=NIC")
        uplinks[physnet] = nic
    return uplinks


def fabric_from_args(args: argparse.Namespace) -> Fabric:
    """The Fabric of ``--fabric-prefix``, ``--uplink`` and ``--vxlan-local``."""
    try:
        local = ipaddress.ip_address(args.vxlan_local)
    except ValueError as exc:
        raise FabricOptionError(f"--vxlan-local: {exc}") from None
    return Fabric(
        prefix=args.fabric_prefix,
        uplinks=parse_uplinks(args.uplink),
        vxlan=VxlanUnderlay(local=local),
    )
