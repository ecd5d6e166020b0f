"""The L2 fabric in real namespaces: ports reach each other, networks stay apart.

Each "host" is a lab namespace holding a whole fabric (its bridges, VLAN and
VXLAN devices); each "VM" is a lab namespace whose ``eth0`` the fabric plugs.
Two hosts are joined by a veth that plays the physical network or the VXLAN
underlay. Nothing is made on the real host, and the fabric's link prefix is
this run's own.
"""

from __future__ import annotations

import ipaddress
import json
import os
import uuid
from typing import Any

import pytest

from astara.fabric import (
    Fabric,
    FabricConflictError,
    FabricInvalidError,
    FabricNotFoundError,
    Network,
    NetworkSpec,
    NetworkType,
    PluggedPort,
    VxlanUnderlay,
)
from astara.fabric.kernel import LinkState
from astara.fabric.names import Names
from astara.fabric.networks import VlanSegment, matches, segment_attrs, segment_of
from astara.lab import Lab, LabError

pytestmark = pytest.mark.netns

NET_A = "6f1c2d3e-0000-4000-8000-00000000000a"
NET_B = "7a2b3c4d-0000-4000-8000-00000000000b"
MAC_1 = "02:00:5e:10:00:01"
MAC_2 = "02:00:5e:10:00:02"
MAC_3 = "02:00:5e:10:00:03"


# -- helpers ----------------------------------------------------------------------
def prefix_of(lab: Lab) -> str:
    """``t<run>-``: this run's tag (a link leaked onto the host would fail the leak check)."""
    return f"t{lab.prefix.split('-')[1]}-"


def links(lab: Lab, ns: str) -> dict[str, dict[str, Any]]:
    """``ip -d link`` of a namespace, by name."""
    return {link["ifname"]: link for link in json.loads(lab.run(ns, ["ip", "-j", "-d", "link"]))}


def owned(lab: Lab, ns: str) -> dict[str, int]:
    """Name -> ifindex of every link in ``ns`` carrying the fabric's prefix."""
    return {
        name: link["ifindex"]
        for name, link in links(lab, ns).items()
        if name.startswith(prefix_of(lab))
    }


def ping(lab: Lab, ns: str, address: str, *extra: str) -> bool:
    out = lab.run(ns, ["ping", "-c1", "-W1", *extra, address], check=False)
    return " 1 received" in out


def reaches(lab: Lab, ns: str, address: str, *extra: str) -> bool:
    """``ns`` answers a ping to ``address`` within a few seconds."""
    try:
        lab.wait_for(f"{ns} -> {address}", lambda: ping(lab, ns, address, *extra), timeout=6)
    except LabError:
        return False
    return True


def kernel_has_8021q(lab: Lab, ns: str, nic: str) -> bool:
    probe = ["ip", "link", "add", "link", nic, "name", "vprobe", "type", "vlan", "id", "4000"]
    try:
        lab.run(ns, probe)
    except LabError:
        return False
    lab.run(ns, ["ip", "link", "del", "vprobe"])
    return True


async def plug(fabric: Fabric, network_id: str, port_id: str, mac: str, ns: str, mtu: int) -> None:
    await fabric.plug(
        network_id=network_id, port_id=port_id, mac=mac, mtu=mtu, netns=ns, ifname="eth0"
    )


# -- names ------------------------------------------------------------------------
def test_names_fill_fifteen_characters_and_keep_the_uuid_visible() -> None:
    names = Names()
    assert names.bridge(NET_A) == "astara-b6f1c2d3"
    assert {len(n) for n in (names.vlan(NET_A), names.vxlan("net"), names.port("p"))} == {15}
    assert names.kind_of(names.port("p")) == "p"
    assert names.kind_of("eth0") is None
    assert Names("ab").bridge(NET_A) == "abb6f1c2d3e0000"
    with pytest.raises(FabricInvalidError, match="at most 8"):
        Names("much-too-long-")
    with pytest.raises(FabricInvalidError):
        NetworkSpec(NET_A, NetworkType.VLAN, segmentation_id=5000, physical_network="physnet1")
    with pytest.raises(FabricInvalidError):
        NetworkSpec(NET_A, NetworkType.FLAT)
    assert NetworkSpec(NET_A, "vxlan", 7).network_type is NetworkType.VXLAN  # type: ignore[arg-type]


def test_vlan_segments_are_planned_matched_and_read_back() -> None:
    """The VLAN logic without the kernel (the traffic tests below need 802.1Q; tests/vm
    runs them in a guest kernel that has it when the host's lacks it)."""
    names = Names("t-")
    nic = LinkState(
        index=2, name="phys0", kind="veth", alias=None, master=None, mtu=1500, mac="", up=True
    )
    segment = VlanSegment(names.vlan(NET_A), nic, 100)
    assert segment_attrs(segment) == {"kind": "vlan", "link": 2, "vlan_id": 100}
    device = LinkState(
        index=7,
        name=names.vlan(NET_A),
        kind="vlan",
        alias=NET_A,
        master=5,
        mtu=1500,
        mac="",
        up=True,
        link=2,
        vlan_id=100,
    )
    assert matches(device, segment)
    assert not matches(device, VlanSegment(segment.name, nic, 200))
    found = segment_of(names, [device], {2: nic}, {"phys0"})
    assert found == (NetworkType.VLAN, 100, "phys0")


# -- traffic ----------------------------------------------------------------------
async def test_two_ports_on_one_network_reach_each_other(lab: Lab) -> None:
    host = lab.namespace("host")
    a = lab.vm("a")
    b = lab.vm("b")
    async with Fabric(prefix=prefix_of(lab), netns=host) as fabric:
        network = await fabric.ensure_network(NetworkSpec(NET_A, NetworkType.LOCAL, mtu=1400))
        assert network == Network(NET_A, fabric.names.bridge(NET_A), 1400, NetworkType.LOCAL)
        await plug(fabric, NET_A, "port-a", MAC_1, a, 1400)
        await plug(fabric, NET_A, "port-b", MAC_2, b, 1400)
    lab.address(a, "eth0", "10.10.0.1/24")
    lab.address(b, "eth0", "10.10.0.2/24")
    lab.address(a, "eth0", "fd00:10::1/64")
    lab.address(b, "eth0", "fd00:10::2/64")
    nic = links(lab, a)["eth0"]
    assert (nic["address"], nic["mtu"], nic["operstate"]) == (MAC_1, 1400, "UP")
    assert reaches(lab, a, "10.10.0.2")
    assert reaches(lab, b, "fd00:10::1")
    # the fabric gives itself no IPv6 address in the network it carries
    assert lab.run(host, ["ip", "-6", "-o", "address", "show", "scope", "link"]) == ""


async def test_two_networks_are_isolated(lab: Lab) -> None:
    host = lab.namespace("host")
    a1 = lab.vm("a1")
    a2 = lab.vm("a2")
    b1 = lab.vm("b1")
    async with Fabric(prefix=prefix_of(lab), netns=host) as fabric:
        for network_id in (NET_A, NET_B):
            await fabric.ensure_network(NetworkSpec(network_id, NetworkType.LOCAL))
        await plug(fabric, NET_A, "a1", MAC_1, a1, 1500)
        await plug(fabric, NET_A, "a2", MAC_2, a2, 1500)
        await plug(fabric, NET_B, "b1", MAC_3, b1, 1500)
    for ns, address in ((a1, "10.20.0.1/24"), (a2, "10.20.0.2/24"), (b1, "10.20.0.3/24")):
        lab.address(ns, "eth0", address)
    assert reaches(lab, a1, "10.20.0.2")
    assert not ping(lab, a1, "10.20.0.3")  # same subnet, other network: not even ARP crosses
    assert not ping(lab, b1, "10.20.0.1")


@pytest.mark.parametrize("flooding", ["unicast", "multicast", "unicast-ipv6"])
async def test_vxlan_networks_carry_traffic_between_hosts(lab: Lab, flooding: str) -> None:
    h1, h2 = lab.namespace("h1"), lab.namespace("h2")
    lab.veth(h1, "under0", h2, "under0")
    v6 = flooding.endswith("ipv6")
    mtu = 1430 if v6 else 1450  # 1500 less the outer Ethernet, IP, UDP and VXLAN headers
    ip = ("fd00:99::1", "fd00:99::2") if v6 else ("10.99.0.1", "10.99.0.2")
    lab.address(h1, "under0", f"{ip[0]}/64" if v6 else f"{ip[0]}/24")
    lab.address(h2, "under0", f"{ip[1]}/64" if v6 else f"{ip[1]}/24")

    def underlay(local: str, remote: str) -> VxlanUnderlay:
        if flooding == "multicast":
            group = ipaddress.ip_address("239.1.1.1")
            return VxlanUnderlay(ipaddress.ip_address(local), device="under0", group=group)
        return VxlanUnderlay(ipaddress.ip_address(local), peers=(ipaddress.ip_address(remote),))

    x1 = lab.vm("x1")
    x2 = lab.vm("x2")
    y2 = lab.vm("y2")
    prefix = prefix_of(lab)
    async with (
        Fabric(prefix=prefix, netns=h1, vxlan=underlay(ip[0], ip[1])) as f1,
        Fabric(prefix=prefix, netns=h2, vxlan=underlay(ip[1], ip[0])) as f2,
    ):
        for fabric in (f1, f2):
            await fabric.ensure_network(NetworkSpec(NET_A, NetworkType.VXLAN, 1001, mtu=mtu))
            await fabric.ensure_network(NetworkSpec(NET_B, NetworkType.VXLAN, 1002, mtu=mtu))
        await plug(f1, NET_A, "x1", MAC_1, x1, mtu)
        await plug(f2, NET_A, "x2", MAC_2, x2, mtu)
        await plug(f2, NET_B, "y2", MAC_3, y2, mtu)
        vxlan = links(lab, h1)[f1.names.vxlan(NET_A)]
    for ns, address in ((x1, "10.40.0.1/24"), (x2, "10.40.0.2/24"), (y2, "10.40.0.3/24")):
        lab.address(ns, "eth0", address)
    info = vxlan["linkinfo"]["info_data"]
    assert (info["id"], info["port"], vxlan["mtu"]) == (1001, 4789, mtu)
    assert info.get("local", info.get("local6")) == ip[0]
    assert vxlan["master"] == f1.names.bridge(NET_A)
    assert reaches(lab, x1, "10.40.0.2")
    # a full-size frame fits through the underlay's 1500 bytes, unfragmented
    assert ping(lab, x1, "10.40.0.2", "-M", "do", "-s", str(mtu - 28))
    assert not ping(lab, x1, "10.40.0.3")  # VNI 1002 on the other host


async def test_flat_network_is_bound_to_the_host_nic(lab: Lab) -> None:
    h1, outside = lab.namespace("h1"), lab.namespace("out")
    lab.veth(h1, "phys0", outside, "phys0")
    lab.address(outside, "phys0", "10.50.0.9/24")
    ext = lab.vm("ext")
    async with Fabric(prefix=prefix_of(lab), netns=h1, uplinks={"public": "phys0"}) as fabric:
        spec = NetworkSpec(NET_A, NetworkType.FLAT, physical_network="public")
        network = await fabric.ensure_network(spec)
        assert (network.network_type, network.nic) == (NetworkType.FLAT, "phys0")
        await plug(fabric, NET_A, "gw", MAC_1, ext, 1500)
        lab.address(ext, "eth0", "10.50.0.1/24")
        assert reaches(lab, ext, "10.50.0.9")
        assert links(lab, h1)["phys0"]["master"] == network.bridge
        await fabric.remove_network(NET_A)
    nic = links(lab, h1)["phys0"]
    assert "master" not in nic
    assert owned(lab, h1) == {}


NO_8021Q = "this kernel has no 802.1Q (tests/vm/test_vlan_in_guest.py runs this in a guest)"


async def test_vlan_networks_carry_traffic_between_hosts(lab: Lab) -> None:
    """Two hosts share a physical network (a veth): VLAN 100 joins them, VLAN 200 stays apart."""
    h1, h2 = lab.namespace("h1"), lab.namespace("h2")
    lab.veth(h1, "phys0", h2, "phys0")
    if not kernel_has_8021q(lab, h1, "phys0"):
        pytest.skip(NO_8021Q)
    x1, x2, y2 = lab.vm("x1"), lab.vm("x2"), lab.vm("y2")
    prefix = prefix_of(lab)
    async with (
        Fabric(prefix=prefix, netns=h1, uplinks={"physnet1": "phys0"}) as f1,
        Fabric(prefix=prefix, netns=h2, uplinks={"physnet1": "phys0"}) as f2,
    ):
        for fabric in (f1, f2):
            network = await fabric.ensure_network(
                NetworkSpec(NET_A, NetworkType.VLAN, 100, "physnet1")
            )
            assert (network.network_type, network.segmentation_id, network.nic) == (
                NetworkType.VLAN,
                100,
                "phys0",
            )
            await fabric.ensure_network(NetworkSpec(NET_B, NetworkType.VLAN, 200, "physnet1"))
        await plug(f1, NET_A, "x1", MAC_1, x1, 1500)
        await plug(f2, NET_A, "x2", MAC_2, x2, 1500)
        await plug(f2, NET_B, "y2", MAC_3, y2, 1500)
        vlan = links(lab, h1)[f1.names.vlan(NET_A)]
        assert sorted(await f1.networks(), key=lambda n: n.network_id) == [
            Network(NET_A, f1.names.bridge(NET_A), 1500, NetworkType.VLAN, 100, "phys0"),
            Network(NET_B, f1.names.bridge(NET_B), 1500, NetworkType.VLAN, 200, "phys0"),
        ]
    info = vlan["linkinfo"]["info_data"]
    assert (info["protocol"], info["id"], vlan["link"]) == ("802.1Q", 100, "phys0")
    assert vlan["master"] == f1.names.bridge(NET_A)
    assert "master" not in links(lab, h1)["phys0"]  # the NIC carries tags, on no bridge
    for ns, address in ((x1, "10.60.0.1/24"), (x2, "10.60.0.2/24"), (y2, "10.60.0.3/24")):
        lab.address(ns, "eth0", address)
    assert reaches(lab, x1, "10.60.0.2")
    # a full-size frame crosses: the 802.1Q tag does not eat into the network's MTU
    assert ping(lab, x1, "10.60.0.2", "-M", "do", "-s", "1472")
    assert not ping(lab, x1, "10.60.0.3")  # VLAN 200 on the same wire: not even ARP crosses
    assert not ping(lab, y2, "10.60.0.1")


async def test_vlan_frames_leave_the_host_tagged_with_their_id(lab: Lab) -> None:
    """A plain kernel VLAN sub-interface on the far end of the wire reads each network's tag."""
    h1, outside = lab.namespace("h1"), lab.namespace("out")
    lab.veth(h1, "phys0", outside, "phys0")
    if not kernel_has_8021q(lab, h1, "phys0"):
        pytest.skip(NO_8021Q)
    for vid, address in (("100", "10.61.0.9/24"), ("200", "10.62.0.9/24")):
        argv = ["ip", "link", "add", "link", "phys0", "name", f"phys0.{vid}", "type", "vlan"]
        lab.run(outside, [*argv, "id", vid])
        lab.run(outside, ["ip", "link", "set", f"phys0.{vid}", "up"])
        lab.address(outside, f"phys0.{vid}", address)
    lab.address(outside, "phys0", "10.63.0.9/24")  # untagged
    x1, y1 = lab.vm("x1"), lab.vm("y1")
    async with Fabric(prefix=prefix_of(lab), netns=h1, uplinks={"physnet1": "phys0"}) as fabric:
        await fabric.ensure_network(NetworkSpec(NET_A, NetworkType.VLAN, 100, "physnet1"))
        await fabric.ensure_network(NetworkSpec(NET_B, NetworkType.VLAN, 200, "physnet1"))
        await plug(fabric, NET_A, "x1", MAC_1, x1, 1500)
        await plug(fabric, NET_B, "y1", MAC_2, y1, 1500)
        lab.address(x1, "eth0", "10.61.0.1/24")
        lab.address(y1, "eth0", "10.62.0.1/24")
        lab.address(y1, "eth0", "10.63.0.1/24")
        assert reaches(lab, x1, "10.61.0.9")
        assert reaches(lab, y1, "10.62.0.9")
        assert not ping(lab, y1, "10.63.0.9")  # nothing of the network leaves untagged
        await fabric.remove_networks([NET_A, NET_B])
        assert owned(lab, h1) == {}
    assert set(links(lab, h1)) == {"lo", "phys0"}


async def test_vlan_without_kernel_support_is_refused_and_leaves_nothing(lab: Lab) -> None:
    h1, h2 = lab.namespace("h1"), lab.namespace("h2")
    lab.veth(h1, "phys0", h2, "phys0")
    if kernel_has_8021q(lab, h1, "phys0"):
        pytest.skip("this kernel has 802.1Q: VLAN devices are made there, not refused")
    async with Fabric(prefix=prefix_of(lab), netns=h1, uplinks={"physnet1": "phys0"}) as fabric:
        with pytest.raises(FabricInvalidError, match="CONFIG_VLAN_8021Q"):
            await fabric.ensure_network(NetworkSpec(NET_A, NetworkType.VLAN, 100, "physnet1"))
        assert await fabric.networks() == []
    assert owned(lab, h1) == {}


# -- idempotence, adoption, cleanup -------------------------------------------------
async def test_plug_and_ensure_are_idempotent_and_fix_drift_in_place(lab: Lab) -> None:
    host = lab.namespace("host")
    a, b = lab.vm("a"), lab.vm("b")
    async with Fabric(prefix=prefix_of(lab), netns=host) as fabric:
        spec = NetworkSpec(NET_A, NetworkType.LOCAL)
        await fabric.ensure_network(spec)
        await fabric.ensure_network(NetworkSpec(NET_B, NetworkType.LOCAL))
        await plug(fabric, NET_A, "p1", MAC_1, a, 1500)
        before = owned(lab, host), links(lab, a)["eth0"]["ifindex"]
        await fabric.ensure_network(spec)
        await plug(fabric, NET_A, "p1", MAC_1, a, 1500)
        assert (owned(lab, host), links(lab, a)["eth0"]["ifindex"]) == before

        await fabric.ensure_network(NetworkSpec(NET_A, NetworkType.LOCAL, mtu=1400))
        await plug(fabric, NET_A, "p1", MAC_2.upper(), a, 1400)  # new MAC and MTU
        nic = links(lab, a)["eth0"]
        assert (nic["ifindex"], nic["address"], nic["mtu"]) == (before[1], MAC_2, 1400)
        assert links(lab, host)[fabric.names.bridge(NET_A)]["mtu"] == 1400
        assert owned(lab, host) == before[0]

        await plug(fabric, NET_B, "p1", MAC_2, a, 1400)  # another network: moved in place
        device = links(lab, host)[fabric.names.port("p1")]
        assert (device["ifindex"], device["master"]) == (
            before[0][fabric.names.port("p1")],
            fabric.names.bridge(NET_B),
        )

        await plug(fabric, NET_B, "p1", MAC_2, b, 1400)  # another namespace: a new pair
        assert "eth0" not in links(lab, a)
        assert links(lab, b)["eth0"]["address"] == MAC_2
        assert await fabric.ports() == [PluggedPort("p1", NET_B, fabric.names.port("p1"), 1400)]

        local: dict[str, Any] = {"network_id": NET_A, "port_id": "p2", "mac": MAC_3, "mtu": 1500}
        await fabric.plug(**local, netns=None, ifname="mgmt0")  # a NIC in the fabric's namespace
        index = links(lab, host)["mgmt0"]["ifindex"]
        await fabric.plug(**local, netns=host, ifname="mgmt0")  # the same namespace, by name
        assert links(lab, host)["mgmt0"]["ifindex"] == index
        assert links(lab, host)["mgmt0"]["address"] == MAC_3

        await fabric.unplug(port_id="p2")
        await fabric.unplug(port_id="p1")
        await fabric.unplug(port_id="p1")
        await fabric.unplug(port_id="never-plugged")
        assert "mgmt0" not in links(lab, host)
        assert "eth0" not in links(lab, b)
        assert await fabric.ports() == []


async def test_a_restarted_fabric_adopts_what_exists(lab: Lab) -> None:
    host, peer = lab.namespace("host"), lab.namespace("peer")
    lab.veth(host, "under0", peer, "under0")
    lab.address(host, "under0", "10.99.0.1/24")
    a, b = lab.vm("a"), lab.vm("b")
    settings: dict[str, Any] = {
        "prefix": prefix_of(lab),
        "netns": host,
        "vxlan": VxlanUnderlay(
            ipaddress.ip_address("10.99.0.1"), peers=(ipaddress.ip_address("10.99.0.2"),)
        ),
    }
    specs = [
        NetworkSpec(NET_A, NetworkType.LOCAL),
        NetworkSpec(NET_B, NetworkType.VXLAN, 4242, mtu=1450),
    ]
    port_id = str(uuid.uuid4())
    async with Fabric(**settings) as first:
        for spec in specs:
            await first.ensure_network(spec)
        await plug(first, NET_A, port_id, MAC_1, a, 1500)
        await plug(first, NET_B, "port-b", MAC_2, b, 1450)
    before = owned(lab, host), links(lab, a)["eth0"]["ifindex"], links(lab, b)["eth0"]["ifindex"]

    async with Fabric(**settings) as second:
        names = second.names
        assert sorted(await second.networks(), key=lambda n: n.network_id) == [
            Network(NET_A, names.bridge(NET_A), 1500, NetworkType.LOCAL),
            Network(NET_B, names.bridge(NET_B), 1450, NetworkType.VXLAN, 4242),
        ]
        assert sorted(await second.ports(), key=lambda p: p.network_id or "") == [
            PluggedPort(port_id, NET_A, names.port(port_id), 1500),
            PluggedPort("port-b", NET_B, names.port("port-b"), 1450),
        ]
        for spec in specs:
            await second.ensure_network(spec)
        await plug(second, NET_A, port_id, MAC_1, a, 1500)
        await plug(second, NET_B, "port-b", MAC_2, b, 1450)
    after = owned(lab, host), links(lab, a)["eth0"]["ifindex"], links(lab, b)["eth0"]["ifindex"]
    assert after == before


async def test_plug_unplug_and_remove_leak_nothing(lab: Lab) -> None:
    host, peer = lab.namespace("host"), lab.namespace("peer")
    lab.veth(host, "under0", peer, "under0")
    lab.address(host, "under0", "10.99.0.1/24")
    vms = [lab.vm(f"v{n}") for n in range(4)]
    fds = len(os.listdir("/proc/self/fd"))
    underlay = VxlanUnderlay(
        ipaddress.ip_address("10.99.0.1"), peers=(ipaddress.ip_address("10.99.0.2"),)
    )
    async with Fabric(prefix=prefix_of(lab), netns=host, vxlan=underlay) as fabric:
        for _ in range(2):
            await fabric.ensure_network(NetworkSpec(NET_A, NetworkType.LOCAL))
            await fabric.ensure_network(NetworkSpec(NET_B, NetworkType.VXLAN, 77, mtu=1450))
            for n, ns in enumerate(vms):
                network_id, mtu = (NET_A, 1500) if n % 2 else (NET_B, 1450)
                await plug(fabric, network_id, f"p{n}", f"02:00:5e:20:00:0{n}", ns, mtu)
            assert len(owned(lab, host)) == 2 + 1 + 4  # bridges, the VXLAN device, ports
            await fabric.unplug(port_id="p0")
            await fabric.remove_network(NET_A)  # ports still on it go with it
            await fabric.remove_network(NET_B)
            await fabric.remove_network(NET_B)
            assert owned(lab, host) == {}
            assert all(set(links(lab, ns)) == {"lo"} for ns in vms)
            assert await fabric.networks() == []
            assert await fabric.ports() == []
    assert len(os.listdir("/proc/self/fd")) == fds


async def test_ensure_reads_back_what_networks_lists_and_remove_networks_takes_many(
    lab: Lab,
) -> None:
    """``ensure_network`` reads its network back by name (no dump of every link): the same
    as ``networks()`` has; ``remove_networks`` removes several with one dump."""
    host, outside = lab.namespace("host"), lab.namespace("out")
    lab.veth(host, "phys0", outside, "phys0")
    lab.veth(host, "under0", outside, "under0")
    lab.address(host, "under0", "10.99.0.1/24")
    net_c = "8b3c4d5e-0000-4000-8000-00000000000c"
    underlay = VxlanUnderlay(
        ipaddress.ip_address("10.99.0.1"), peers=(ipaddress.ip_address("10.99.0.2"),)
    )
    vm = lab.vm("v")
    async with Fabric(
        prefix=prefix_of(lab), netns=host, vxlan=underlay, uplinks={"public": "phys0"}
    ) as fabric:
        made = [
            await fabric.ensure_network(NetworkSpec(NET_A, NetworkType.LOCAL)),
            await fabric.ensure_network(NetworkSpec(NET_B, NetworkType.VXLAN, 78, mtu=1450)),
            await fabric.ensure_network(
                NetworkSpec(net_c, NetworkType.FLAT, physical_network="public")
            ),
        ]
        again = await fabric.ensure_network(NetworkSpec(NET_B, NetworkType.VXLAN, 78, mtu=1450))
        listed = await fabric.networks()
        assert sorted(made, key=lambda n: n.network_id) == sorted(
            listed, key=lambda n: n.network_id
        )
        assert again == made[1]
        vxlan = links(lab, host)[fabric.names.vxlan(NET_B)]
        flood = lab.run(host, ["bridge", "fdb", "show", "dev", vxlan["ifname"]])
        assert "dst 10.99.0.2" in flood  # a new device's flood entries, without reading any
        await plug(fabric, NET_B, "p1", MAC_1, vm, 1450)
        await fabric.remove_networks([NET_A, NET_B, net_c, NET_A])
        assert await fabric.networks() == []
        assert owned(lab, host) == {}
        assert set(links(lab, vm)) == {"lo"}
        assert "master" not in links(lab, host)["phys0"]


# -- errors -------------------------------------------------------------------------
async def test_errors_are_clear_and_change_nothing(lab: Lab) -> None:
    host = lab.namespace("host")
    a = lab.vm("a")
    lab.run(a, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "taken1"])
    with pytest.raises(FabricInvalidError, match="at most 8"):
        Fabric(prefix="much-too-long-")
    async with Fabric(prefix=prefix_of(lab), netns=f"{lab.prefix}-missing") as nowhere:
        with pytest.raises(FabricNotFoundError, match="does not exist"):
            await nowhere.networks()
    prefix = prefix_of(lab)
    async with Fabric(prefix=prefix, netns=host, uplinks={"physnet1": "nic9"}) as fabric:
        with pytest.raises(FabricInvalidError, match="'public' has no host NIC"):
            await fabric.ensure_network(NetworkSpec(NET_A, NetworkType.FLAT, None, "public"))
        with pytest.raises(FabricNotFoundError, match="'nic9' of physical network"):
            await fabric.ensure_network(NetworkSpec(NET_A, NetworkType.FLAT, None, "physnet1"))
        with pytest.raises(FabricInvalidError, match="no underlay"):
            await fabric.ensure_network(NetworkSpec(NET_A, NetworkType.VXLAN, 5))
        with pytest.raises(FabricNotFoundError, match="ensure the network first"):
            await plug(fabric, NET_A, "p1", MAC_1, a, 1500)
        await fabric.ensure_network(NetworkSpec(NET_A, NetworkType.LOCAL))
        with pytest.raises(FabricNotFoundError, match="does not exist"):
            await plug(fabric, NET_A, "p1", MAC_1, f"{lab.prefix}-gone", 1500)
        with pytest.raises(FabricConflictError, match="already has an interface named 'eth0'"):
            await plug(fabric, NET_A, "p1", MAC_1, a, 1500)
        with pytest.raises(FabricInvalidError, match="not a unicast"):
            await plug(fabric, NET_A, "p1", "01:00:5e:00:00:01", a, 1500)
        assert await fabric.ports() == []
        assert set(owned(lab, host)) == {fabric.names.bridge(NET_A)}
        await fabric.remove_network(NET_A)

        # names the fabric would use, taken by links labelled for other ids
        squatter = fabric.names.bridge(NET_B)
        lab.run(host, ["ip", "link", "add", squatter, "type", "bridge"])
        lab.run(host, ["ip", "link", "set", squatter, "alias", "someone-else"])
        with pytest.raises(FabricConflictError, match="taken by bridge someone-else"):
            await fabric.ensure_network(NetworkSpec(NET_B, NetworkType.LOCAL))
        await fabric.remove_network(NET_B)  # not ours: left alone
        assert squatter in links(lab, host)
