"""The dnsmasq service against the real kernel: DHCP reservations, names, SIGHUP, adoption.

A router namespace has an external NIC ge1 (192.0.2.1/24, towards an 'outside'
namespace) and internal NICs ge2 (10.0.1.1/24) and ge3 (10.0.2.1/24), each
joined by a veth to a 'VM' namespace whose eth0 has the MAC of its allocation.
Addresses on the router are set with the lab (in the product the netlink
service does it). VMs take leases with udhcpc, whose script writes the VM's
resolv.conf (/etc/netns/<vm>/resolv.conf); names are resolved by glibc in the VM.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from astara.appliance.errors import ApplyError
from astara.appliance.plan import Link, RouterPlan, build_plan
from astara.appliance.services.dnsmasq import Dnsmasq
from astara.appliance.system.netns import Netns
from astara.lab import Lab
from astara.wire.appliance_v1 import Configuration

pytestmark = pytest.mark.netns

GOLDEN_FULL = Path(__file__).resolve().parent.parent / "golden" / "dnsmasq" / "full" / "input.json"
EXT_MAC = "fa:16:3e:00:00:01"
GE2_MAC = "fa:16:3e:00:00:02"
GE3_MAC = "fa:16:3e:00:00:03"
VM_A_MAC = "fa:16:3e:aa:00:0a"
VM_B_MAC = "fa:16:3e:bb:00:0b"
LINKS = [Link("ge1", EXT_MAC), Link("ge2", GE2_MAC), Link("ge3", GE3_MAC)]


def config(
    *, vm_a: str = "10.0.1.10", internal: bool = True, upstream: list[str] | None = None
) -> dict[str, Any]:
    external: dict[str, Any] = {
        "network_id": "ext",
        "network_type": "external",
        "interface": {"ifname": "ge1", "addresses": ["192.0.2.1/24"]},
    }
    tenant_a: dict[str, Any] = {
        "network_id": "tenant-a",
        "network_type": "internal",
        "interface": {"ifname": "ge2", "addresses": ["10.0.1.1/24"]},
        "subnets": [{"cidr": "10.0.1.0/24", "dns_nameservers": upstream or []}],
        "address_allocations": [
            {"hostname": "vm-a", "mac_address": VM_A_MAC, "ip_addresses": {vm_a: True}}
        ],
    }
    tenant_b: dict[str, Any] = {
        "network_id": "tenant-b",
        "network_type": "internal",
        "interface": {"ifname": "ge3", "addresses": ["10.0.2.1/24"]},
        "address_allocations": [
            {"hostname": "vm-b", "mac_address": VM_B_MAC, "ip_addresses": {"10.0.2.10": True}}
        ],
    }
    return {"networks": [external, tenant_a, tenant_b] if internal else [external]}


def plan(**kwargs: Any) -> RouterPlan:
    return build_plan(Configuration.model_validate(config(**kwargs)), links=LINKS)


@dataclass(frozen=True)
class Topology:
    router: str
    vm_a: str
    vm_b: str
    outside: str


@pytest.fixture
def topology(lab: Lab) -> Topology:
    router, outside = lab.namespace("r"), lab.namespace("out")
    vm_a, vm_b = lab.vm("a"), lab.vm("b")
    lab.veth(router, "ge1", outside, "eth0", mac_a=EXT_MAC)
    lab.veth(router, "ge2", vm_a, "eth0", mac_a=GE2_MAC, mac_b=VM_A_MAC)
    lab.veth(router, "ge3", vm_b, "eth0", mac_a=GE3_MAC, mac_b=VM_B_MAC)
    lab.address(router, "ge1", "192.0.2.1/24")
    lab.address(router, "ge2", "10.0.1.1/24")
    lab.address(router, "ge3", "10.0.2.1/24")
    lab.address(outside, "eth0", "192.0.2.2/24")
    lab.route(outside, "10.0.0.0/16", "via", "192.0.2.1")
    return Topology(router, vm_a, vm_b, outside)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state dir dnsmasq's unprivileged user can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="astara-dnsmasq-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
async def dnsmasq(topology: Topology, state_dir: Path) -> AsyncIterator[Dnsmasq]:
    service = Dnsmasq(netns=Netns(topology.router), state_dir=state_dir)
    try:
        yield service
    finally:
        await service.stop()


# -- probes ---------------------------------------------------------------------------
def resolve(lab: Lab, ns: str, name: str) -> str:
    """The address glibc in ``ns`` finds for ``name`` (through the DHCP-written resolv.conf)."""
    code = f"import socket; print(socket.gethostbyname({name!r}))"
    return lab.run(ns, ["python3", "-c", code], check=False, timeout=15).strip()


def reverse(lab: Lab, ns: str, address: str) -> str:
    code = f"import socket; print(socket.gethostbyaddr({address!r})[0])"
    return lab.run(ns, ["python3", "-c", code], timeout=15).strip()


def dns_answers(ns: str, server: str, name: str = "vm-b") -> bool:
    """Whether a DNS server at ``server`` answers an A query sent from namespace ``ns``."""
    query = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    query += struct.pack(">HH", 1, 1)
    with Netns(ns).socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        sock.sendto(query, (server, 53))
        try:
            reply = sock.recv(512)
        except TimeoutError:
            return False
    return reply[:2] == b"\x42\x42"


def dnsmasq_pids(ns: str) -> list[int]:
    """Every live dnsmasq inside namespace ``ns``."""
    inode = os.stat(f"/run/netns/{ns}").st_ino
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            in_ns = os.stat(f"/proc/{entry}/ns/net").st_ino == inode
        except OSError:
            continue
        if comm == "dnsmasq" and in_ns and state != "Z":
            found.append(int(entry))
    return found


# -- tests ----------------------------------------------------------------------------
async def test_reservations_names_and_reload_without_restart(
    lab: Lab, topology: Topology, dnsmasq: Dnsmasq
) -> None:
    assert await dnsmasq.apply(plan()) is True
    pid = dnsmasq.pid()
    assert pid is not None
    assert dnsmasq_pids(topology.router) == [pid]

    assert lab.dhcp(topology.vm_a) == "10.0.1.10"
    assert lab.dhcp(topology.vm_b) == "10.0.2.10"
    assert resolve(lab, topology.vm_a, "vm-b") == "10.0.2.10"
    assert resolve(lab, topology.vm_b, "vm-a") == "10.0.1.10"
    assert reverse(lab, topology.vm_a, "10.0.2.10") == "vm-b"

    assert await dnsmasq.apply(plan()) is False
    assert dnsmasq.pid() == pid

    # vm-a's reservation moves: a SIGHUP, not a restart
    assert await dnsmasq.apply(plan(vm_a="10.0.1.11")) is True
    assert dnsmasq.pid() == pid
    lab.wait_for(
        "vm-a to resolve to 10.0.1.11",
        lambda: resolve(lab, topology.vm_b, "vm-a") == "10.0.1.11",
        timeout=10,
    )
    assert lab.dhcp(topology.vm_a) == "10.0.1.11"
    assert reverse(lab, topology.vm_b, "10.0.1.11") == "vm-a"
    assert dnsmasq.pid() == pid
    assert await dnsmasq.apply(plan(vm_a="10.0.1.11")) is False


async def test_dns_answers_on_internal_nics_only(
    lab: Lab, topology: Topology, dnsmasq: Dnsmasq
) -> None:
    await dnsmasq.apply(plan())
    lab.address(topology.vm_a, "eth0", "10.0.1.50/24")  # not reserved: DNS works regardless
    assert dns_answers(topology.vm_a, "10.0.1.1")
    # from outside: neither the external address nor an internal one through ge1,
    # although packets to that address do arrive (ping)
    lab.run(topology.outside, ["ping", "-c1", "-W1", "10.0.1.1"])
    assert not dns_answers(topology.outside, "192.0.2.1")
    assert not dns_answers(topology.outside, "10.0.1.1")
    listening = lab.run(topology.router, ["ss", "-Hlnu", "sport", "=", "53"])
    bound = {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines()}
    assert {"10.0.1.1", "10.0.2.1"} <= bound
    assert not bound & {"192.0.2.1", "127.0.0.1", "[::1]", "0.0.0.0", "*"}


async def test_main_conf_change_restarts(lab: Lab, topology: Topology, dnsmasq: Dnsmasq) -> None:
    assert await dnsmasq.apply(plan())
    before = dnsmasq.pid()
    assert await dnsmasq.apply(plan(upstream=["192.0.2.53"])) is True
    after = dnsmasq.pid()
    assert after is not None
    assert after != before
    assert dnsmasq_pids(topology.router) == [after]
    assert "server=192.0.2.53" in dnsmasq.paths.conf.read_text().splitlines()
    assert lab.dhcp(topology.vm_a) == "10.0.1.10"


async def test_restarted_agent_adopts_running_dnsmasq(
    lab: Lab, topology: Topology, dnsmasq: Dnsmasq, state_dir: Path
) -> None:
    await dnsmasq.apply(plan())
    pid = dnsmasq.pid()
    assert lab.dhcp(topology.vm_b) == "10.0.2.10"  # vm-b's resolv.conf points at the router
    successor = Dnsmasq(netns=Netns(topology.router), state_dir=state_dir)
    try:
        assert successor.pid() == pid
        assert await successor.apply(plan()) is False
        assert await successor.apply(plan(vm_a="10.0.1.11")) is True  # SIGHUP to the adoptee
        assert dnsmasq_pids(topology.router) == [pid]
        lab.wait_for(
            "the adopted dnsmasq to reload",
            lambda: resolve(lab, topology.vm_b, "vm-a") == "10.0.1.11",
            timeout=10,
        )
        assert lab.dhcp(topology.vm_a) == "10.0.1.11"
    finally:
        await successor.stop()
    assert dnsmasq_pids(topology.router) == []


async def test_no_internal_network_stops_dnsmasq(topology: Topology, dnsmasq: Dnsmasq) -> None:
    await dnsmasq.apply(plan())
    assert dnsmasq.pid() is not None
    assert await dnsmasq.apply(plan(internal=False)) is True
    assert dnsmasq.pid() is None
    assert dnsmasq_pids(topology.router) == []
    assert not dnsmasq.directory.exists()
    assert await dnsmasq.apply(plan(internal=False)) is False
    await dnsmasq.stop()  # idempotent


async def test_check_runs_dnsmasq_test(topology: Topology, dnsmasq: Dnsmasq) -> None:
    rich = json.loads(GOLDEN_FULL.read_text())
    links = [Link(**link) for link in rich["links"]]
    await dnsmasq.check(build_plan(Configuration.model_validate(rich["configuration"]), links))

    # dnsmasq serves DHCPv6 on /64 or longer prefixes only
    body = config()
    tenant_a = body["networks"][1]
    tenant_a["interface"]["addresses"].append("2001:db8:1::1/48")
    tenant_a["subnets"].append({"cidr": "2001:db8:1::/48", "ipv6_address_mode": "dhcpv6-stateful"})
    refused = build_plan(Configuration.model_validate(body), LINKS)
    with pytest.raises(ApplyError) as caught:
        await dnsmasq.check(refused)
    assert caught.value.step == "dnsmasq"
    assert "prefix length must be at least 64" in caught.value.reason
    assert "dhcp-range=set:ge2-s1,2001:db8:1::,static,48" in caught.value.reason
    assert not dnsmasq.directory.exists()  # check wrote nothing of ours

    # apply refuses it too, and the running dnsmasq keeps its files and its pid
    await dnsmasq.apply(plan())
    pid, conf = dnsmasq.pid(), dnsmasq.paths.conf.read_text()
    with pytest.raises(ApplyError):
        await dnsmasq.apply(refused)
    assert dnsmasq.pid() == pid
    assert dnsmasq.paths.conf.read_text() == conf
    assert [p.name for p in dnsmasq.state_dir.iterdir()] == ["dnsmasq"]  # no scratch left


async def test_unreachable_state_dir_is_refused(topology: Topology, state_dir: Path) -> None:
    hidden = state_dir / "private"
    hidden.mkdir(mode=0o700)
    service = Dnsmasq(netns=Netns(topology.router), state_dir=hidden / "appliance")
    try:
        with pytest.raises(ApplyError, match="not searchable"):
            await service.apply(plan())
        assert service.pid() is None
    finally:
        await service.stop()
