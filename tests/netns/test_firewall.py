"""The firewall with the real kernel: rules loaded by Firewall, proven with real packets.

Topology (addresses and routes set by the lab here; in the product that is the
netlink service's job):

    mgmt  eth0 fdca:3ba5:a17a:acda::2/64 ── ge0 fdca:3ba5:a17a:acda::1/64 ┐
    outside eth0 203.0.113.1/24           ── ge1 203.0.113.2/24 (+ FIP    │ router
                 2001:db8:ffff::1/64           203.0.113.20/32)           │ (ip_forward,
    vm1   eth0 10.0.1.10/24 2001:db8:1::10 ── ge2 10.0.1.1/24             │  v6 forwarding)
    vm2   eth0 10.0.2.10/24 2001:db8:2::10 ── ge3 10.0.2.1/24             ┘

Floating IP 203.0.113.20 belongs to vm2; vm1 has none. TCP checks use a tiny
listener that answers each connection with "<peer address> <local address>:<port>",
so a test sees both who the server thought was calling and where it landed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from astara.appliance.errors import ApplyError
from astara.appliance.plan import Link, RouterPlan, build_plan
from astara.appliance.services.firewall import Firewall
from astara.appliance.system.netns import Netns
from astara.lab import Lab, LabError
from astara.wire.appliance_v1 import Configuration
from tests.unit.test_render_nftables import big_router_plan, plan_of, router_config

pytestmark = pytest.mark.netns

FIP = "203.0.113.20"
LISTENER = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
server = socket.create_server((host, port), family=family, dualstack_ipv6=host == "::")
while True:
    conn, peer = server.accept()
    local = conn.getsockname()
    conn.sendall(f"{peer[0]} {local[0]}:{local[1]}".encode())
    conn.close()
"""
CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as c:
    print(c.recv(200).decode())
"""


@dataclass
class Dataplane:
    lab: Lab
    router: str
    mgmt: str
    outside: str
    vm1: str
    vm2: str
    firewall: Firewall
    state_dir: Path


def _mac(index: int) -> str:
    return f"fa:16:3e:00:00:{index:02x}"  # what router_config() names for ge<index>


def _build(lab: Lab) -> tuple[str, str, str, str, str]:
    router, mgmt, outside = lab.namespace("r"), lab.namespace("m"), lab.namespace("o")
    vm1, vm2 = lab.vm("vm1"), lab.vm("vm2")
    for ns in (router, mgmt, outside):
        # no duplicate address detection: link-local addresses usable at once, as in lab.vm()
        lab.sysctl(ns, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
    lab.sysctl(router, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
    for index, peer in enumerate((mgmt, outside, vm1, vm2)):
        lab.veth(router, f"ge{index}", peer, "eth0", mac_a=_mac(index))
    lab.address(router, "ge0", "fdca:3ba5:a17a:acda::1/64")
    lab.address(mgmt, "eth0", "fdca:3ba5:a17a:acda::2/64")
    lab.route(mgmt, "2001:db8::/32", "via", "fdca:3ba5:a17a:acda::1")
    for cidr in ("203.0.113.2/24", f"{FIP}/32", "2001:db8:ffff::2/64"):
        lab.address(router, "ge1", cidr)
    lab.address(outside, "eth0", "203.0.113.1/24")
    lab.address(outside, "eth0", "2001:db8:ffff::1/64")
    # the outside knows the tenants' IPv6 prefixes (announced by BGP) and nothing of 10/8
    lab.route(outside, "2001:db8::/40", "via", "2001:db8:ffff::2")
    for n, vm in ((1, vm1), (2, vm2)):
        lab.address(router, f"ge{n + 1}", f"10.0.{n}.1/24")
        lab.address(router, f"ge{n + 1}", f"2001:db8:{n}::1/64")
        lab.address(vm, "eth0", f"10.0.{n}.10/24")
        lab.address(vm, "eth0", f"2001:db8:{n}::10/64")
        lab.route(vm, "default", "via", f"10.0.{n}.1")
        lab.route(vm, "::/0", "via", f"2001:db8:{n}::1")
    return router, mgmt, outside, vm1, vm2


@pytest.fixture
async def dataplane(lab: Lab, tmp_path: Path) -> AsyncIterator[Dataplane]:
    router, mgmt, outside, vm1, vm2 = _build(lab)
    firewall = Firewall(netns=Netns(router), state_dir=tmp_path / "firewall")
    assert await firewall.apply(plan_of(router_config(floating=1)))
    yield Dataplane(lab, router, mgmt, outside, vm1, vm2, firewall, tmp_path / "firewall")
    await firewall.stop()


def listen(lab: Lab, ns: str, host: str, port: int) -> None:
    lab.spawn(ns, ["python3", "-c", LISTENER, host, str(port)])
    lab.wait_for(
        f"a listener on {ns} port {port}",
        lambda: lab.run(ns, ["ss", "-Hltn", "sport", "=", f":{port}"]).strip(),
        timeout=5,
    )


def connect(lab: Lab, ns: str, host: str, port: int, timeout: float = 3.0) -> tuple[str, str]:
    """Connect from ``ns``; return (the address the server saw, where the server was reached)."""
    out = lab.run(ns, ["python3", "-c", CLIENT, host, str(port), str(timeout)], timeout=10)
    peer, local = out.split()
    return peer, local


def assert_unreachable(lab: Lab, ns: str, host: str, port: int) -> None:
    with pytest.raises(LabError, match="timed out"):
        connect(lab, ns, host, port, timeout=1.0)


def ping(lab: Lab, ns: str, address: str) -> bool:
    try:
        lab.run(ns, ["ping", "-c1", "-W1", address])
    except LabError:
        return False
    return True


async def test_east_west_is_routed_without_nat(dataplane: Dataplane) -> None:
    d = dataplane
    assert ping(d.lab, d.vm1, "10.0.2.10")
    listen(d.lab, d.vm2, "0.0.0.0", 8080)
    assert connect(d.lab, d.vm1, "10.0.2.10", 8080) == ("10.0.1.10", "10.0.2.10:8080")


async def test_egress_leaves_as_router_address_or_floating_ip(dataplane: Dataplane) -> None:
    d = dataplane
    listen(d.lab, d.outside, "203.0.113.1", 8080)
    assert connect(d.lab, d.vm1, "203.0.113.1", 8080)[0] == "203.0.113.2"
    assert connect(d.lab, d.vm2, "203.0.113.1", 8080)[0] == FIP


async def test_floating_ip_reaches_the_instance_with_the_real_source(
    dataplane: Dataplane,
) -> None:
    d = dataplane
    listen(d.lab, d.vm2, "0.0.0.0", 8080)
    assert connect(d.lab, d.outside, FIP, 8080) == ("203.0.113.1", "10.0.2.10:8080")


async def test_hairpin_to_a_floating_ip(dataplane: Dataplane) -> None:
    d = dataplane
    listen(d.lab, d.vm2, "0.0.0.0", 8080)
    # vm1 has no floating IP of its own: it arrives as the router's external address
    assert connect(d.lab, d.vm1, FIP, 8080) == ("203.0.113.2", "10.0.2.10:8080")


async def test_metadata_address_lands_on_the_proxy_port(dataplane: Dataplane) -> None:
    d = dataplane
    listen(d.lab, d.router, "10.0.1.1", 9602)
    assert connect(d.lab, d.vm1, "169.254.169.254", 80) == ("10.0.1.10", "10.0.1.1:9602")


async def test_api_port_only_from_the_management_side(dataplane: Dataplane) -> None:
    d = dataplane
    listen(d.lab, d.router, "::", 5000)
    peer, _ = connect(d.lab, d.mgmt, "fdca:3ba5:a17a:acda::1", 5000)
    assert peer == "fdca:3ba5:a17a:acda::2"
    assert_unreachable(d.lab, d.vm1, "10.0.1.1", 5000)
    assert_unreachable(d.lab, d.outside, "203.0.113.2", 5000)


async def test_outside_reaches_tenants_by_ipv6_but_not_by_private_ipv4(
    dataplane: Dataplane,
) -> None:
    d = dataplane
    assert ping(d.lab, d.outside, "2001:db8:1::10")
    d.lab.route(d.outside, "10.0.0.0/16", "via", "203.0.113.2")
    assert not ping(d.lab, d.outside, "10.0.1.10")


async def test_management_is_never_forwarded(dataplane: Dataplane) -> None:
    d = dataplane
    assert ping(d.lab, d.mgmt, "fdca:3ba5:a17a:acda::1")
    assert not ping(d.lab, d.mgmt, "2001:db8:1::10")
    assert not ping(d.lab, d.vm1, "fdca:3ba5:a17a:acda::2")


async def test_same_plan_twice_changes_nothing(dataplane: Dataplane) -> None:
    d = dataplane
    assert not await d.firewall.apply(plan_of(router_config(floating=1)))
    before = await d.firewall.listing()
    assert "203.0.113.20 : 10.0.2.10" in before
    assert await d.firewall.apply(plan_of(router_config(floating=2)))
    after = await d.firewall.listing()
    assert "203.0.113.21 : 10.0.1.10" in after


async def test_stop_removes_the_table_and_is_idempotent(dataplane: Dataplane) -> None:
    d = dataplane
    await d.firewall.stop()
    await d.firewall.stop()
    assert await d.firewall.listing() == ""
    assert list(d.state_dir.iterdir()) == []
    assert await d.firewall.apply(plan_of(router_config(floating=1)))
    assert (await d.firewall.listing()).startswith("table inet astara {")


def _plan_with_a_bad_interface_name() -> RouterPlan:
    """A kernel link name nft cannot quote: what a broken provider could hand us."""
    config = router_config(floating=0, bgp=False)
    links = [Link(f"ge{i}", _mac(i)) for i in range(4)]
    links[2] = Link('ge"2', _mac(2))
    return build_plan(Configuration.model_validate(config), links=links)


async def test_rejected_ruleset_leaves_the_previous_one_in_force(dataplane: Dataplane) -> None:
    d = dataplane
    before = await d.firewall.listing()
    bad = _plan_with_a_bad_interface_name()
    with pytest.raises(ApplyError) as checked:
        await d.firewall.check(bad)
    assert checked.value.step == "firewall"
    assert "syntax error" in checked.value.reason
    with pytest.raises(ApplyError):
        await d.firewall.apply(bad)
    assert await d.firewall.listing() == before
    assert sorted(p.name for p in d.state_dir.iterdir()) == ["ruleset.nft"]
    with pytest.raises(ApplyError, match="firewall"):
        await d.firewall._check_text("table inet astara { chain input { bogus } }\n")
    await d.firewall.check(plan_of(router_config(floating=3)))  # valid: accepted, not loaded
    assert await d.firewall.listing() == before


async def test_big_router_is_accepted(lab: Lab, tmp_path: Path) -> None:
    """How fast it loads is bench/'s P8a; here, that nft takes it."""
    firewall = Firewall(netns=Netns(lab.namespace("big")), state_dir=tmp_path)
    plan = big_router_plan()
    await firewall.check(plan)
    assert await firewall.apply(plan)
    listing = await firewall.listing()
    assert "203.0.113.219 : 10.0." in listing
    assert '"ge51"' in listing
    await firewall.stop()


async def test_floating_ip_removed_and_restored_by_element_update(dataplane: Dataplane) -> None:
    """Only the floating maps change: the element batch, proven with real packets."""
    d = dataplane
    listen(d.lab, d.vm2, "0.0.0.0", 8080)
    both = router_config(floating=2)  # 203.0.113.20 -> vm2, 203.0.113.21 -> vm1
    assert await d.firewall.apply(plan_of(both))
    table_before = await d.firewall.listing()
    assert connect(d.lab, d.outside, FIP, 8080) == ("203.0.113.1", "10.0.2.10:8080")
    without = router_config(floating=2)
    without["floating_ips"] = without["floating_ips"][1:]
    assert await d.firewall.apply(plan_of(without))
    assert_unreachable(d.lab, d.outside, FIP, 8080)
    assert "203.0.113.21 : 10.0.1.10" in await d.firewall.listing()
    assert await d.firewall.apply(plan_of(both))
    assert connect(d.lab, d.outside, FIP, 8080) == ("203.0.113.1", "10.0.2.10:8080")
    assert await d.firewall.listing() == table_before


async def test_refused_element_update_changes_nothing(dataplane: Dataplane) -> None:
    """The kernel refuses one change of the batch: none of it is applied."""
    d = dataplane
    assert await d.firewall.apply(plan_of(router_config(floating=3)))
    # someone deleted an element behind the agent's back
    d.lab.run(
        d.router, ["nft", "delete", "element", "inet", "astara", "floating_snat", "{ 10.0.2.11 }"]
    )
    before = await d.firewall.listing()
    with pytest.raises(ApplyError, match="No such file or directory") as refused:
        await d.firewall.apply(plan_of(router_config(floating=1)))
    assert "delete element inet astara floating_snat { 10.0.2.11 }" in refused.value.reason
    assert await d.firewall.listing() == before
