"""The in-process echo of the status probe, in real namespaces, and the status it feeds."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from astara.appliance.router import Router
from astara.appliance.system.icmp import Pinger
from astara.appliance.system.netns import Netns
from astara.lab import Lab

V4_GW, V4_ME, V4_NOBODY = "198.51.100.1", "198.51.100.2", "198.51.100.9"
V6_GW, V6_ME = "2001:db8:e0::1", "2001:db8:e0::2"


def _pair(lab: Lab) -> tuple[str, str]:
    """Two namespaces (``me`` and ``gw``) on one veth, IPv4 and IPv6 addressed."""
    me, gw = lab.vm("me"), lab.vm("gw")
    lab.veth(me, "eth0", gw, "eth0")
    for ns, v4, v6 in ((me, V4_ME, V6_ME), (gw, V4_GW, V6_GW)):
        lab.address(ns, "eth0", f"{v4}/24")
        lab.address(ns, "eth0", f"{v6}/64")
    return me, gw


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> bool:
    """``check`` came true within ``timeout`` (a fresh link's IPv6 needs a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


def test_echo_is_answered_by_a_live_address_in_both_families(lab: Lab) -> None:
    me, _gw = _pair(lab)

    async def scenario() -> None:
        pinger = Pinger(Netns(me))
        try:
            v4, v6 = ipaddress.ip_address(V4_GW), ipaddress.ip_address(V6_GW)
            assert await _eventually(lambda: pinger.echo(v4))
            assert await _eventually(lambda: pinger.echo(v6))
            # again and again on the same sockets: each reply matched to its own request
            for _ in range(20):
                assert await pinger.echo(v4)
                assert await pinger.echo(v6)
        finally:
            pinger.close()

    asyncio.run(scenario())


def test_echo_to_nobody_is_false_within_the_timeout(lab: Lab) -> None:
    me, _gw = _pair(lab)

    async def scenario() -> None:
        pinger = Pinger(Netns(me))
        try:
            started = time.monotonic()
            assert not await pinger.echo(ipaddress.ip_address(V4_NOBODY), timeout=0.3)
            assert time.monotonic() - started < 2.0
            # no route at all: refused at once, False
            assert not await pinger.echo(ipaddress.ip_address("203.0.113.7"), timeout=0.3)
            # a link-local target without the NIC's index cannot be asked
            assert not await pinger.echo(ipaddress.ip_address("fe80::1"))
        finally:
            pinger.close()

    asyncio.run(scenario())


def test_echo_is_false_when_the_gateway_drops_echo_requests(lab: Lab) -> None:
    me, gw = _pair(lab)
    v4 = ipaddress.ip_address(V4_GW)

    async def answered() -> bool:
        pinger = Pinger(Netns(me))
        try:
            return await _eventually(lambda: pinger.echo(v4, timeout=0.3), timeout=2.0)
        finally:
            pinger.close()

    assert asyncio.run(answered())
    lab.run(
        gw,
        [
            "nft",
            "add table inet t; add chain inet t in { type filter hook input "
            "priority 0; icmp type echo-request drop; }",
        ],
    )
    assert not asyncio.run(answered())


def test_status_counts_a_gateway_that_drops_echo_but_answers_arp(lab: Lab, tmp_path: Path) -> None:
    """The router's status: the echo first, then the neighbour table (ARP was answered)."""
    me, gw = _pair(lab)
    lab.run(
        gw,
        [
            "nft",
            "add table inet t; add chain inet t in { type filter hook input "
            "priority 0; icmp type echo-request drop; }",
        ],
    )
    router = Router(netns=Netns(me), state_dir=tmp_path)

    async def gateway_ok(address: str) -> bool:
        ok = await router._gateway_ok(ipaddress.ip_address(address), None)
        return ok

    async def scenario() -> None:
        try:
            assert await _eventually(lambda: gateway_ok(V4_GW), timeout=5.0)
            assert not await gateway_ok(V4_NOBODY)  # no echo, and its ARP went unanswered
        finally:
            router.pinger.close()
            router.links.close()

    asyncio.run(scenario())
