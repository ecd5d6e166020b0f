"""``astara up``'s appliance lifecycle, end to end: metadata, hot-plug, restart, faults.

One ``astara up`` (``world``) serves most tests: an ``outside`` namespace on
203.0.113.1/24 (the internet, on TEST-NET) behind a veth bound as physnet1, a
flat external network on it, and each test's own VXLAN networks, routers and
servers (``astara server``), deleted by the test. The restart test restarts
that same ``astara up``; the test of an appliance that never answers runs its
own with a short boot timeout.

What it proves (issue 4):

- metadata: a server reads its own instance id and hostname through its
  router (169.254.169.254), as the network API knows its port;
- hot-plug: an interface added to or removed from a running router changes
  its appliance's NICs in the same namespace (same inode, same ``ge0`` label:
  no rebuild), and servers on two subnets reach each other through it;
- isolation: changing one router of three leaves the other two appliances
  as they were;
- restart: ``astara up`` stopped and started again adopts the appliance (same
  namespace) and a server's traffic through it loses no packet;
- never answers: an appliance whose API the host cannot reach is ERROR past
  the boot timeout, and recovers on its own once it can;
- kill: an appliance namespace killed is rebuilt, and traffic flows again.

Identity of an appliance: the inode of ``/run/netns/<name>`` (the namespace
itself) and ``ge0``'s ifalias (``astara-router <router id> <booted at>``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from astara.cli import up as up_cli
from astara.lab import kill_namespace
from astara.orchestrator.appliance_client import DEFAULT_PORT as APPLIANCE_PORT
from tests.component.conftest import connect
from tests.conftest import RUN, _inodes, new_lab
from tests.netns.test_up import (
    NETNS_PREFIX,
    Up,
    _addresses,
    _astara_up,
    _connect,
    _listening,
    _namespaces,
    _ping,
)
from tests.netns.test_up import _until as _until_up

pytestmark = [pytest.mark.netns, pytest.mark.database]

OUTSIDE = "203.0.113.1"
#: seconds within which a router's change reaches its appliance
BOUND = 30.0


def _agent_log(up: Up) -> str:
    state = Path(up.flags[up.flags.index("--state-dir") + 1])
    try:
        return (state / "agent.log").read_text()[-4000:]
    except OSError:
        return ""


def _until(what: str, check: Callable[[], object], timeout: float, up: Up) -> None:
    """``_until`` of test_up, whose failure also shows the appliance agent's log."""
    try:
        _until_up(what, lambda: bool(check()), timeout, up.log)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nthe appliance agent said:\n{_agent_log(up)}") from None


@dataclass
class World:
    """A running ``astara up`` with an external network, and what the tests made on it."""

    up: Up
    sdk: Any
    public: Any
    outside: str
    servers: list[str] = field(default_factory=list)
    routers: list[Any] = field(default_factory=list)

    def network(self, name: str, third_octet: int) -> tuple[Any, Any]:
        """A VXLAN network with a subnet 10.<third_octet>.0.0/24, gateway .1."""
        network = self.sdk.network.create_network(
            name=name,
            provider_network_type="vxlan",
            provider_segmentation_id=100_000 + secrets.randbelow(16_000_000),
        )
        subnet = self.sdk.network.create_subnet(
            network_id=network.id,
            cidr=f"10.{third_octet}.0.0/24",
            ip_version=4,
            gateway_ip=f"10.{third_octet}.0.1",
        )
        return network, subnet

    def router(self, name: str, *subnets: Any, gateway: bool = False) -> Any:
        """A router with an interface on each of ``subnets`` (and a gateway on public)."""
        info = {"network_id": self.public.id} if gateway else None
        router = self.sdk.network.create_router(name=name, external_gateway_info=info)
        self.routers.append(router)
        for subnet in subnets:
            self.sdk.network.add_interface_to_router(router, subnet=subnet.id)
        return router

    def server(self, name: str, network: Any) -> dict[str, Any]:
        """A server on ``network`` with its DHCP lease (``astara server create --wait``)."""
        self.servers.append(name)
        created = self.up.server(
            "create", "--network", network.id, "--name", name, "--wait", "30", "-f", "json"
        )
        assert created.returncode == 0, created.stderr + self.up.log.read_text()[-4000:]
        server: dict[str, Any] = json.loads(created.stdout)
        return server

    def active(self, router: Any, timeout: float = 60) -> None:
        _until(
            f"router {router.name} ACTIVE",
            lambda: self.sdk.network.get_router(router.id).status == "ACTIVE",
            timeout,
            self.up,
        )

    def appliance(self, router: Any, *addresses: str, timeout: float = 60) -> str:
        """The namespace of ``router``'s appliance, once it has ``addresses`` and is ACTIVE."""
        found: list[str] = []

        def there() -> bool:
            found[:] = [n for n in _appliances(router.id) if set(addresses) <= _addresses(n)]
            return bool(found)

        _until(f"router {router.name}'s appliance", there, timeout, self.up)
        self.active(router, timeout)
        return found[0]

    def cleanup(self) -> None:
        """Delete the servers and routers made so far (best effort; ``astara down`` follows)."""
        for name in self.servers:
            self.up.server("delete", name)
        self.servers.clear()
        for router in self.routers:
            _drop_router(self.sdk, router)
        self.routers.clear()


def _drop_router(sdk: Any, router: Any) -> None:
    with contextlib.suppress(Exception):
        for port in sdk.network.ports(device_id=router.id):
            if port.device_owner == "network:router_interface":
                subnet_id = port.fixed_ips[0]["subnet_id"]
                sdk.network.remove_interface_from_router(router, subnet=subnet_id)
        with contextlib.suppress(Exception):
            sdk.network.remove_gateway_from_router(router)
        sdk.network.delete_router(router)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """``astara up`` with physnet1 bound to a veth whose far end is ``outside``."""
    lab = new_lab()
    try:
        outside = lab.namespace("out")
        nic = lab.host_name()
        lab.veth(None, nic, outside, "eth0")
        lab.address(outside, "eth0", f"{OUTSIDE}/24")
        with _astara_up([f"physnet1={nic}"]) as up:
            sdk = connect(up.url)
            public = sdk.network.create_network(
                name="public",
                is_router_external=True,
                provider_network_type="flat",
                provider_physical_network="physnet1",
            )
            sdk.network.create_subnet(
                network_id=public.id,
                cidr="203.0.113.0/24",
                ip_version=4,
                gateway_ip=OUTSIDE,
                is_dhcp_enabled=False,
            )
            made = World(up, sdk, public, outside)
            try:
                yield made
            finally:
                made.cleanup()
    finally:
        _inodes.update(lab.netns_inodes)
        lab.close()


@pytest.fixture
def w(world: World) -> Iterator[World]:
    """The shared world, with what the test made deleted after it."""
    try:
        yield world
    finally:
        world.cleanup()


# -- helpers -------------------------------------------------------------------------------
def _links(netns: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["ip", "-j", "-n", netns, "addr", "show"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        return []
    links: list[dict[str, Any]] = json.loads(out.stdout or "[]")
    return links


def _nics(netns: str) -> dict[str, set[str]]:
    """The appliance's ``geN`` NICs and their addresses."""
    return {
        link["ifname"]: {a["local"] for a in link.get("addr_info", [])}
        for link in _links(netns)
        if re.fullmatch(r"ge\d+", link["ifname"])
    }


def _alias(netns: str) -> str | None:
    out = subprocess.run(
        ["ip", "-j", "-n", netns, "link", "show", "ge0"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return None
    shown = json.loads(out.stdout or "[]")
    return shown[0].get("ifalias") if shown else None


def _identity(netns: str) -> tuple[int, str | None]:
    """The namespace itself (its inode) and the boot label on its ``ge0``."""
    return os.stat(f"/run/netns/{netns}").st_ino, _alias(netns)


def _appliances(router_id: str) -> list[str]:
    """Namespaces with the appliance prefix whose ``ge0`` is labelled with ``router_id``."""
    found = []
    for name in sorted(_namespaces(NETNS_PREFIX)):
        alias = _alias(name) or ""
        if alias.split(" ")[1:2] == [router_id]:
            found.append(name)
    return found


def _nic_with(netns: str, address: str) -> str | None:
    return next((nic for nic, addrs in _nics(netns).items() if address in addrs), None)


@contextlib.contextmanager
def _pinging(netns: str, address: str) -> Iterator[dict[str, Any]]:
    """``ping -D -i 0.1 address`` from ``netns`` for the block; after it, ``result`` holds
    transmitted, received and the replies' timestamps (epoch seconds)."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, "ping", "-D", "-n", "-i", "0.1", "-W", "1", address],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    result: dict[str, Any] = {}
    try:
        yield result
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=5)
        summary = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        result["output"] = out
        result["transmitted"] = int(summary.group(1)) if summary else 0
        result["received"] = int(summary.group(2)) if summary else 0
        result["replies"] = [
            float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)
        ]


def _in_server(w: World, name: str, *argv: str) -> str:
    done = w.up.server("exec", name, "--", *argv)
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done.stdout


# -- the tests -----------------------------------------------------------------------------
# first, while the shared ``astara up`` is not running yet: its clients' connections take
# ephemeral ports, one of which a second ``astara up`` could pick for its API (EADDRINUSE)
def test_never_answers_is_error_then_recovers() -> None:
    table = f"t{RUN}-drop"
    flags = ["--boot-timeout", "3", "--max-failures", "2"]
    with _astara_up(extra=flags) as up:
        sdk = connect(up.url)
        mgmt = up.flags[up.flags.index("--mgmt-prefix") + 1]
        network = sdk.network.create_network(
            name="na",
            provider_network_type="vxlan",
            provider_segmentation_id=100_000 + secrets.randbelow(16_000_000),
        )
        subnet = sdk.network.create_subnet(
            network_id=network.id, cidr="10.97.0.0/24", ip_version=4, gateway_ip="10.97.0.1"
        )
        rules = (
            f"table inet {table} {{\n"
            "  chain out {\n"
            "    type filter hook output priority 0; policy accept;\n"
            f"    ip6 daddr {mgmt} tcp dport {APPLIANCE_PORT} drop\n"
            "  }\n"
            "}\n"
        )
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
        try:
            router = sdk.network.create_router(name="na")
            sdk.network.add_interface_to_router(router, subnet=subnet.id)
            started = time.monotonic()
            _until(
                "router ERROR",
                lambda: sdk.network.get_router(router.id).status == "ERROR",
                60,
                up,
            )
            print(f"ERROR after {time.monotonic() - started:.1f}s")
            assert "boot timeout" in up.log.read_text(), up.log.read_text()[-4000:]
        finally:
            subprocess.run(["nft", "delete", "table", "inet", table], check=False)
        listed = subprocess.run(
            ["nft", "list", "tables"], capture_output=True, text=True, check=True
        )
        assert table not in listed.stdout
        started = time.monotonic()
        _until(
            "router ACTIVE again",
            lambda: sdk.network.get_router(router.id).status == "ACTIVE",
            60,
            up,
        )
        print(f"ACTIVE again {time.monotonic() - started:.1f}s after the API was reachable")
        assert any(_nic_with(n, "10.97.0.1") for n in _appliances(router.id))
        _drop_router(sdk, router)


def test_metadata_through_the_router(w: World) -> None:
    network, subnet = w.network("md", 81)
    router = w.router("md", subnet)
    w.appliance(router, "10.81.0.1")
    server = w.server("md1", network)
    port = w.sdk.network.get_port(server["port_id"])
    assert port.device_id and port.name == "md1"

    def get(path: str) -> str:
        return _in_server(
            w, "md1", "curl", "-s", "-f", "-m", "5", f"http://169.254.169.254{path}"
        ).strip()

    assert get("/latest/meta-data/instance-id") == port.device_id
    assert get("/latest/meta-data/hostname") == port.name
    meta = json.loads(get("/openstack/latest/meta_data.json"))
    assert meta["uuid"] == port.device_id
    assert meta["hostname"] == port.name
    assert w.sdk.network.get_router(router.id).status == "ACTIVE"


def test_hot_plug_keeps_the_namespace(w: World) -> None:
    net1, sub1 = w.network("hp1", 82)
    net2, sub2 = w.network("hp2", 83)
    router = w.router("hp", sub1)
    netns = w.appliance(router, "10.82.0.1")
    before = _identity(netns)
    assert before[1] and before[1].startswith(f"astara-router {router.id} ")
    assert set(_nics(netns)) == {"ge0", "ge1"}, _nics(netns)
    s1 = w.server("hp-a", net1)
    a1 = s1["addresses"][0].split("/")[0]

    # plugged: a new NIC with the second subnet's gateway, in the same namespace
    w.sdk.network.add_interface_to_router(router, subnet=sub2.id)
    _until("10.83.0.1 in the appliance", lambda: _nic_with(netns, "10.83.0.1"), BOUND, w.up)
    nic = _nic_with(netns, "10.83.0.1")
    assert nic not in ("ge0", "ge1") and nic is not None and re.fullmatch(r"ge\d+", nic)
    assert _identity(netns) == before, "the appliance was rebuilt to plug an interface"
    w.active(router)

    # east-west: a server on the second network reaches the first one through the router
    s2 = w.server("hp-b", net2)
    assert s2["gateways"] == ["10.83.0.1"]
    ping = w.up.server("exec", "hp-b", "--", "ping", "-c2", "-W2", a1)
    assert ping.returncode == 0, ping.stdout + ping.stderr + w.up.log.read_text()[-3000:]

    # unplugged: the NIC is gone, the namespace is the same
    w.up.server("delete", "hp-b")
    w.servers.remove("hp-b")
    w.sdk.network.remove_interface_from_router(router, subnet=sub2.id)
    _until("the NIC unplugged", lambda: nic not in _nics(netns), BOUND, w.up)
    assert _nic_with(netns, "10.83.0.1") is None
    assert _identity(netns) == before, "the appliance was rebuilt to unplug an interface"
    w.active(router)
    assert _ping(_server_netns(s1), "10.82.0.1")


def _server_netns(server: dict[str, Any]) -> str:
    return str(server["namespace"])


def test_three_routers_change_one_at_a_time(w: World) -> None:
    routers = []
    for i in range(3):
        _, subnet = w.network(f"tr{i}", 84 + i)
        routers.append(w.router(f"tr{i}", subnet))
    namespaces = [w.appliance(r, f"10.{84 + i}.0.1") for i, r in enumerate(routers)]
    assert len(set(namespaces)) == 3
    identities = [_identity(n) for n in namespaces]
    for i, router in enumerate(routers):
        _, extra = w.network(f"tr{i}x", 90 + i)
        started = time.monotonic()
        w.sdk.network.add_interface_to_router(router, subnet=extra.id)
        gateway = f"10.{90 + i}.0.1"
        _until(
            f"{gateway} in router tr{i}'s appliance",
            lambda n=namespaces[i], g=gateway: _nic_with(n, g) is not None,  # type: ignore[misc]
            BOUND,
            w.up,
        )
        print(f"router tr{i}: interface plugged in {time.monotonic() - started:.2f}s")
        for j, router_j in enumerate(routers):
            w.active(router_j)
            assert _identity(namespaces[j]) == identities[j], f"router tr{j}'s appliance changed"
    for j in range(3):  # and each has what it was given, nothing of the others'
        assert _nics(namespaces[j]).keys() == {"ge0", "ge1", "ge2"}, _nics(namespaces[j])
        assert _nic_with(namespaces[j], f"10.{84 + j}.0.1")
        assert _nic_with(namespaces[j], f"10.{90 + j}.0.1")


def test_restart_adopts_without_loss(w: World) -> None:
    network, subnet = w.network("rs", 95)
    router = w.router("rs", subnet, gateway=True)
    netns = w.appliance(router, "10.95.0.1")
    external = w.sdk.network.get_router(router.id).external_gateway_info
    external = external["external_fixed_ips"][0]["ip_address"]
    _until("the external address", lambda: external in _addresses(netns), BOUND, w.up)
    server = w.server("rs1", network)
    vm = _server_netns(server)
    _until("the server reaches outside", lambda: _ping(vm, OUTSIDE), BOUND, w.up)
    before = _identity(netns)
    agent = _agent_pid(w.up)
    assert agent is not None, "no agent recorded in agent.pid"
    agent_log = Path(w.up.flags[w.up.flags.index("--state-dir") + 1]) / "agent.log"

    with _pinging(vm, OUTSIDE) as pinged:
        time.sleep(1)
        applied = agent_log.read_text().count(": applied (")
        started = time.monotonic()
        w.up.restart()
        print(f"astara up restarted in {time.monotonic() - started:.2f}s")
        w.active(router)
        time.sleep(4)  # two health periods: a rebuild would show now
    assert _identity(netns) == before, "the appliance was rebuilt, not adopted"
    assert w.sdk.network.get_router(router.id).status == "ACTIVE"
    # the agent outlived astara up (decision 0016): adopted, its appliances not re-applied
    assert _agent_pid(w.up) == agent, "the agent was restarted with astara up"
    assert "adopted the appliance agent" in w.up.log.read_text()
    assert agent_log.read_text().count(": applied (") == applied, "configurations re-applied"
    print(f"ping: {pinged['transmitted']} sent, {pinged['received']} received")
    assert pinged["transmitted"] > 30, pinged["output"]
    assert pinged["received"] == pinged["transmitted"], (
        pinged["output"][-2000:] + w.up.log.read_text()[-3000:]
    )
    # and it serves as before: SNAT still seen by outside
    with _listening(w.outside, OUTSIDE, 8090):
        assert _connect(vm, OUTSIDE, 8090) == (external, f"{OUTSIDE}:8090")


def test_kill_rebuilds_and_traffic_flows_again(w: World) -> None:
    network, subnet = w.network("kl", 96)
    router = w.router("kl", subnet, gateway=True)
    netns = w.appliance(router, "10.96.0.1")
    server = w.server("kl1", network)
    vm = _server_netns(server)
    _until("the server reaches outside", lambda: _ping(vm, OUTSIDE), BOUND, w.up)
    before = _identity(netns)

    with _pinging(vm, OUTSIDE) as pinged:
        time.sleep(1)
        killed_at = time.time()
        kill_namespace(netns)
        dead_at = time.time()  # a reply before this may have crossed the appliance before it died
        found: list[str] = []

        def rebuilt() -> bool:
            found[:] = [n for n in _appliances(router.id) if _identity(n) != before]
            return bool(found)

        _until("a new namespace for the router", rebuilt, 30, w.up)
        w.active(router, timeout=30)
        _until("the server reaches outside again", lambda: _ping(vm, OUTSIDE), 30, w.up)
        time.sleep(0.5)
    after = [t for t in pinged["replies"] if t > dead_at]
    assert after, pinged["output"][-2000:]
    restored = after[0] - killed_at
    lost = pinged["transmitted"] - pinged["received"]
    print(
        f"kill -> traffic restored in {restored:.2f}s (kill_namespace took"
        f" {dead_at - killed_at:.2f}s; {lost} pings lost; new namespace {found[0]})"
    )
    assert restored < 15, w.up.log.read_text()[-3000:]


def _agent_pid(up: Up) -> int | None:
    """The pid of the appliance agent serving ``up`` (``agent.pid`` in its state directory);
    None while there is none running (a killed one not yet reaped is a zombie)."""
    state = Path(up.flags[up.flags.index("--state-dir") + 1])
    try:
        pid = int(json.loads((state / "agent.pid").read_text())["pid"])
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, KeyError):
        return None
    if up_cli._start_time(pid) is None:  # gone, or a zombie
        return None
    if b"serve" not in argv or str(state / "agent.sock").encode() not in argv:
        return None
    return pid


def test_agent_killed_is_restarted_and_appliances_adopted_without_loss(w: World) -> None:
    network, subnet = w.network("ag", 97)
    router = w.router("ag", subnet, gateway=True)
    netns = w.appliance(router, "10.97.0.1")
    server = w.server("ag1", network)
    vm = _server_netns(server)
    _until("the server reaches outside", lambda: _ping(vm, OUTSIDE), BOUND, w.up)
    before = _identity(netns)
    agent = _agent_pid(w.up)
    assert agent is not None, "no agent recorded in agent.pid"

    with _pinging(vm, OUTSIDE) as pinged:
        time.sleep(1)
        os.kill(agent, signal.SIGKILL)  # started by an astara up this test started
        _until("a new agent", lambda: _agent_pid(w.up) not in (None, agent), 30, w.up)
        _until("re-adopted", lambda: "re-adopted" in w.up.log.read_text(), 30, w.up)
        time.sleep(3)  # health probes of the re-adopted appliance answer again
    assert _identity(netns) == before, "the appliance was rebuilt, not re-adopted"
    w.active(router)
    assert pinged["received"] == pinged["transmitted"], pinged["output"][-2000:]
    # the new agent serves the appliance: a change reaches it
    _network2, subnet2 = w.network("ag2", 98)
    w.sdk.network.add_interface_to_router(router, subnet=subnet2.id)
    _until("the new interface", lambda: _nic_with(netns, "10.98.0.1"), BOUND, w.up)
    assert _identity(netns) == before
