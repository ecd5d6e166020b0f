"""Flush connection-tracking entries of addresses the router no longer owns.

When an address (a floating IP, a router address) goes away, NATed flows
through it would otherwise live on in conntrack and keep translating. The
``conntrack`` tool exits 1 when it deletes nothing; that is not an error here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from astara.appliance.errors import CommandError
from astara.appliance.plan import IPInterface
from astara.appliance.system.netns import Netns

log = logging.getLogger(__name__)


async def flush_addresses(netns: Netns, addresses: Iterable[IPInterface]) -> None:
    """Delete every flow whose original destination or reply destination is a removed address."""
    await asyncio.gather(
        *(
            _flush(netns, address, direction)
            for address in addresses
            for direction in ("--orig-dst", "--reply-dst")
        )
    )


async def _flush(netns: Netns, address: IPInterface, direction: str) -> None:
    family = "ipv4" if address.version == 4 else "ipv6"
    argv = ["conntrack", "-D", "-f", family, direction, str(address.ip)]
    try:
        await netns.run(argv, timeout=10)
    except CommandError as exc:
        if exc.returncode != 1:  # 1: nothing matched
            log.warning("conntrack flush of %s failed: %s", address.ip, exc)
