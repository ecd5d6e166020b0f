"""bird in a router namespace, on the real kernel: RAs give a VM its address, BGP a peer its routes.

    outside  eth0 2001:db8:ffff::1/64 203.0.113.1/24   bird2, AS 64512 (the test's peer)
       |
    router   ge1  2001:db8:ffff::2/64 203.0.113.2/24   bird2 under test, AS 64513
             ge2  2001:db8:1::1/64    10.0.1.1/24      IPv6 forwarding on
       |
    vm       eth0 (SLAAC, DAD off)

The test stands in for the netlink service: it puts the router's addresses on
the NICs itself, then drives ``Bird`` with plans built from wire configs.
Every wait is bounded; every process is stopped in a ``finally``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from astara.appliance.errors import ApplyError
from astara.appliance.plan import Link, RouterPlan, build_plan
from astara.appliance.services.bird import Bird
from astara.appliance.system.netns import Netns
from astara.lab import Lab
from astara.wire.appliance_v1 import Configuration

pytestmark = pytest.mark.netns

ROUTER_ASN = 64513
PEER_ASN = 64512
GE1_MAC = "fa:16:3e:10:00:01"
GE2_MAC = "fa:16:3e:10:00:02"
LINKS = [Link("ge1", GE1_MAC), Link("ge2", GE2_MAC)]


def router_config(*, v6_prefixes: int = 1, bgp: bool = True, v6: bool = True) -> dict[str, Any]:
    """ge1 external, ge2 internal with ``v6_prefixes`` SLAAC subnets 2001:db8:<n>::/64."""
    internal_addresses = ["10.0.1.1/24"]
    internal_subnets: list[dict[str, Any]] = [{"cidr": "10.0.1.0/24", "gateway_ip": "10.0.1.1"}]
    for n in range(1, v6_prefixes + 1 if v6 else 1):
        internal_addresses.append(f"2001:db8:{n}::1/64")
        internal_subnets.append(
            {
                "cidr": f"2001:db8:{n}::/64",
                "gateway_ip": f"2001:db8:{n}::1",
                "ipv6_ra_mode": "slaac",
                "ipv6_address_mode": "slaac",
            }
        )
    external_addresses = ["203.0.113.2/24"]
    external_subnets: list[dict[str, Any]] = [
        {"cidr": "203.0.113.0/24", "gateway_ip": "203.0.113.1"}
    ]
    if v6:
        external_addresses.append("2001:db8:ffff::2/64")
        external_subnets.append({"cidr": "2001:db8:ffff::/64", "gateway_ip": "2001:db8:ffff::1"})
    config: dict[str, Any] = {
        "networks": [
            {
                "network_id": "ext",
                "network_type": "external",
                "interface": {"lladdr": GE1_MAC, "addresses": external_addresses},
                "subnets": external_subnets,
            },
            {
                "network_id": "int",
                "network_type": "internal",
                "interface": {"lladdr": GE2_MAC, "addresses": internal_addresses},
                "subnets": internal_subnets,
            },
        ]
    }
    if bgp:
        config.update(asn=ROUTER_ASN, neighbor_asn=PEER_ASN)
    return config


def plan_of(config: dict[str, Any]) -> RouterPlan:
    return build_plan(Configuration.model_validate(config), links=LINKS)


def peer_config() -> str:
    return textwrap.dedent(
        f"""\
        router id 203.0.113.1;
        timeformat protocol iso long ms;
        timeformat route iso long ms;
        protocol device {{
        }}
        protocol bgp appliance {{
          local 2001:db8:ffff::1 as {PEER_ASN};
          neighbor 2001:db8:ffff::2 as {ROUTER_ASN};
          interface "eth0";
          connect delay time 1;
          connect retry time 1;
          error wait time 1, 5;
          ipv6 {{
            import all;
            export none;
          }};
        }}
        """
    )


class Topology:
    """The three namespaces, the peer's bird and the helpers the assertions use."""

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab = lab
        self.router = lab.namespace("router")
        self.outside = lab.namespace("outside")
        self.vm = lab.vm("vm")
        # DAD off on the router's NICs (set before they exist): bird advertises from the
        # link-local address, which DAD would hold back for 1-2 s after the link comes up
        lab.sysctl(
            self.router, "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.default.accept_dad=0"
        )
        lab.veth(self.router, "ge1", self.outside, "eth0", mac_a=GE1_MAC)
        lab.veth(self.router, "ge2", self.vm, "eth0", mac_a=GE2_MAC)
        for cidr in ("203.0.113.2/24", "2001:db8:ffff::2/64"):
            lab.address(self.router, "ge1", cidr)
        for cidr in ("10.0.1.1/24", "2001:db8:1::1/64"):
            lab.address(self.router, "ge2", cidr)
        for cidr in ("203.0.113.1/24", "2001:db8:ffff::1/64"):
            lab.address(self.outside, "eth0", cidr)
        self.peer_socket = workdir / "peer.ctl"
        peer_conf = workdir / "peer.conf"
        peer_conf.write_text(peer_config())
        lab.spawn(
            self.outside,
            [
                "bird",
                "-f",
                "-c",
                str(peer_conf),
                "-s",
                str(self.peer_socket),
                "-P",
                str(workdir / "peer.pid"),
            ],
        )

    def peer(self, *command: str) -> str:
        return self.lab.run(
            self.outside, ["birdc", "-s", str(self.peer_socket), *command], check=False
        )

    def peer_routes(self) -> dict[str, str]:
        """Prefix -> the time the peer learned it."""
        found = re.findall(
            r"^(\S+)\s+unicast \[appliance ([^\]]+)\]", self.peer("show", "route"), re.M
        )
        return dict(found)

    def peer_session(self) -> tuple[str, str]:
        """(state, since) of the peer's session with the router."""
        for line in self.peer("show", "protocols", "appliance").splitlines():
            fields = line.split()
            if fields[:2] == ["appliance", "BGP"]:
                return fields[3], f"{fields[4]} {fields[5]}"
        return "absent", ""

    def vm_addresses(self) -> set[ipaddress.IPv6Interface]:
        out = self.lab.run(
            self.vm, ["ip", "-6", "-o", "address", "show", "dev", "eth0", "scope", "global"]
        )
        return {ipaddress.IPv6Interface(line.split()[3]) for line in out.splitlines()}

    def vm_has_address_in(self, prefix: str) -> bool:
        network = ipaddress.IPv6Network(prefix)
        return any(a.network == network for a in self.vm_addresses())


async def eventually(what: str, probe: Callable[[], bool], timeout: float) -> float:
    """Poll ``probe`` until it is true; return the seconds it took; fail after ``timeout``."""
    start = time.monotonic()
    while not probe():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_ra_and_bgp_follow_the_plan(lab: Lab, tmp_path: Path) -> None:
    net = Topology(lab, tmp_path)
    state_dir = tmp_path / "router"
    bird = Bird(netns=Netns(net.router), state_dir=state_dir)
    adopter = Bird(netns=Netns(net.router), state_dir=state_dir)
    try:
        # first plan: bird starts, the VM gets an address, the peer learns the prefix
        plan = plan_of(router_config())
        await bird.check(plan)
        t0 = time.monotonic()
        assert await bird.apply(plan) is True
        t1 = time.monotonic()
        pid = bird.pid()
        assert pid is not None
        slaac, learned = await asyncio.gather(
            eventually(
                "a SLAAC address in 2001:db8:1::/64 on the VM",
                lambda: net.vm_has_address_in("2001:db8:1::/64"),
                timeout=15,
            ),
            eventually(
                "the peer to learn 2001:db8:1::/64",
                lambda: "2001:db8:1::/64" in net.peer_routes(),
                timeout=20,
            ),
        )
        slaac, learned = slaac + t1 - t0, learned + t1 - t0
        print(f"\napply -> VM SLAAC address {slaac:.3f}s, -> peer learns prefix {learned:.3f}s")
        assert await bird.bgp_state() == "Established"
        assert set(net.peer_routes()) == {"2001:db8:1::/64"}  # nothing else is exported
        session_before = net.peer_session()
        first_route = net.peer_routes()["2001:db8:1::/64"]
        assert session_before[0] == "up"

        # a second prefix: the netlink service adds the address, bird is reconfigured in place
        lab.address(net.router, "ge2", "2001:db8:2::1/64")
        plan2 = plan_of(router_config(v6_prefixes=2))
        await bird.check(plan2)
        reconfigured = time.monotonic()
        assert await bird.apply(plan2) is True
        assert bird.pid() == pid
        second = await eventually(
            "the peer to learn 2001:db8:2::/64",
            lambda: "2001:db8:2::/64" in net.peer_routes(),
            timeout=10,
        )
        slaac2 = await eventually(
            "a SLAAC address in 2001:db8:2::/64 on the VM",
            lambda: net.vm_has_address_in("2001:db8:2::/64"),
            timeout=10,
        )
        print(f"configure -> peer learns 2nd prefix {second:.3f}s, VM 2nd address {slaac2:.3f}s")
        assert time.monotonic() - reconfigured < 10
        assert net.peer_session() == session_before  # the session was not reset
        assert net.peer_routes()["2001:db8:1::/64"] == first_route
        assert await bird.bgp_state() == "Established"

        # the same plan again touches nothing
        assert await bird.apply(plan2) is False
        assert bird.pid() == pid

        # a restarted agent adopts the running bird instead of starting a second one
        assert adopter.pid() == pid
        assert await adopter.apply(plan2) is False
        assert await adopter.bgp_state() == "Established"

        # no IPv6 and no BGP: bird stops, the peer loses the routes, the files go
        assert await adopter.apply(plan_of(router_config(v6=False, bgp=False))) is True
        assert adopter.pid() is None
        assert bird.pid() is None
        await eventually("the peer to drop the routes", lambda: not net.peer_routes(), timeout=10)
        assert sorted(p.name for p in state_dir.iterdir()) == []
        assert await adopter.bgp_state() is None
        assert await adopter.apply(plan_of(router_config(v6=False, bgp=False))) is False
    finally:
        await adopter.stop()
        await bird.stop()


async def test_rejected_config_is_an_apply_error_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "bird").write_text(
        '#!/bin/sh\necho "bird: bird.check.conf:3:1 syntax error" >&2\nexit 1\n'
    )
    (fake / "bird").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:/usr/sbin:/usr/bin:/sbin:/bin")
    state_dir = tmp_path / "state"
    bird = Bird(netns=Netns(None), state_dir=state_dir)
    plan = plan_of(router_config())
    with pytest.raises(ApplyError) as caught:
        await bird.check(plan)
    assert caught.value.step == "bird"
    assert "syntax error" in caught.value.reason
    with pytest.raises(ApplyError):
        await bird.apply(plan)
    assert bird.pid() is None
    assert list(state_dir.iterdir()) == []


async def test_stop_is_idempotent_and_nothing_to_do_is_no_change(tmp_path: Path) -> None:
    bird = Bird(netns=Netns(None), state_dir=tmp_path / "state")
    await bird.stop()
    await bird.stop()
    assert await bird.apply(plan_of(router_config(v6=False, bgp=False))) is False
    assert bird.pid() is None
    assert await bird.bgp_state() is None


def test_control_socket_path_must_fit(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too long"):
        Bird(netns=Netns(None), state_dir=tmp_path / ("x" * 120))
