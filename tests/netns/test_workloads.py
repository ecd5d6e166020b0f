"""``astara server …`` against a real network API (SQLite and PostgreSQL) and the real kernel.

Each command runs ``astara.cli.main.main`` in-process, as typed, so every call
builds its fabric and workloads afresh from the state directory and the
kernel, as separate CLI invocations (or a restarted service) would. What the
commands made is checked through the API itself and the kernel, not through
the CLI.

Names: the fabric and server prefix is ``t<run>w-`` (so every link falls
under the session leak check's ``t<run>`` links), the state directory lives
in a ``test-<run>-…`` scratch directory (so a leaked DHCP client, whose
command line names it, is caught too), and the server namespaces and their
``/etc/netns`` entries, which the session check does not see, are checked
after every test by the ``servers`` fixture. Each network has a random VNI
so that concurrent runs on the host never share one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from astara.cli.main import main
from astara.cli.server import network_spec
from astara.fabric import Fabric, VxlanUnderlay
from astara.fabric.names import Names
from astara.lab import Lab
from tests.component.conftest import NetworkApi, database_url, network_api  # noqa: F401
from tests.conftest import RUN

pytestmark = pytest.mark.netns

PREFIX = f"t{RUN}w-"
LOOPBACK = VxlanUnderlay(local=ipaddress.ip_address("127.0.0.1"))


# -- helpers ----------------------------------------------------------------------------
@dataclass
class Servers:
    """``astara server …`` against one API, fabric prefix and state directory."""

    url: str
    state_dir: Path
    capfd: pytest.CaptureFixture[str]

    def __call__(self, verb: str, *argv: str) -> tuple[int, str, str]:
        self.capfd.readouterr()
        options = ["--url", self.url, "--fabric-prefix", PREFIX, "--state-dir", str(self.state_dir)]
        code = main(["server", verb, *options, *argv])
        out = self.capfd.readouterr()
        return code, out.out, out.err

    def json(self, verb: str, *argv: str) -> Any:
        code, out, err = self(verb, "-f", "json", *argv)
        assert (code, err) == (0, ""), err
        return json.loads(out)

    def fails(self, verb: str, *argv: str) -> str:
        code, out, err = self(verb, *argv)
        assert (code, out) == (1, ""), out
        return err

    def exec(self, name: str, *command: str) -> tuple[int, str]:
        code, out, err = self("exec", name, "--", *command)
        return code, out + err

    # -- the API, over plain HTTP -------------------------------------------------------
    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.request(method, f"{self.url}/v2.0/{path}", json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def network(self, name: str, cidr: str, **provider: Any) -> dict[str, Any]:
        """A network (VXLAN with a random VNI unless ``provider`` says otherwise) and a subnet."""
        vxlan = {
            "provider:network_type": "vxlan",
            "provider:segmentation_id": 100_000 + secrets.randbelow(16_000_000),
        }
        body = {"name": name} | (provider or vxlan)
        network: dict[str, Any] = self.api("POST", "networks", {"network": body})["network"]
        gateway, dns = cidr.replace("0/24", "1"), cidr.replace("0/24", "53")
        subnet = {
            "network_id": network["id"],
            "cidr": cidr,
            "ip_version": 4,
            "dns_nameservers": [dns],
            "gateway_ip": gateway,
        }
        self.api("POST", "subnets", {"subnet": subnet})
        return network

    def ports(self, **filters: str) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        found: list[dict[str, Any]] = self.api("GET", f"ports?{query}")["ports"]
        return found


def namespaces() -> set[str]:
    return {n for n in os.listdir("/run/netns") if n.startswith(PREFIX)}


def links() -> set[str]:
    return {n for n in os.listdir("/sys/class/net") if n.startswith(PREFIX)}


def netns_etc() -> set[str]:
    try:
        return {n for n in os.listdir("/etc/netns") if n.startswith(PREFIX)}
    except FileNotFoundError:
        return set()


def clients(state_dir: Path) -> set[int]:
    """Live processes whose command line names ``state_dir`` (our DHCP clients)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(state_dir) in cmdline and state not in ("Z", "X"):
            found.add(int(entry))
    return found


def remove_networks() -> None:
    async def remove() -> None:
        async with Fabric(prefix=PREFIX, vxlan=LOOPBACK) as fabric:
            for network in await fabric.networks():
                await fabric.remove_network(network.network_id)

    asyncio.run(remove())


def gone(servers: Servers, server: dict[str, Any]) -> None:
    """Nothing of ``server`` is left: namespace, /etc/netns, veth, client, state, port."""
    assert server["namespace"] not in namespaces()
    assert server["namespace"] not in netns_etc()
    assert Names(PREFIX).port(server["port_id"]) not in links()
    assert not (servers.state_dir / server["name"]).exists()
    assert servers.ports(device_id=server["id"]) == []
    if server["dhcp_client_pid"] is not None:
        assert not Path(f"/proc/{server['dhcp_client_pid']}/cmdline").read_bytes()


def until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def servers(
    network_api: NetworkApi,  # noqa: F811 - the fixture imported above
    workdir: Path,
    capfd: pytest.CaptureFixture[str],
) -> Iterator[Servers]:
    """The CLI bound to this test's API and state; after it, deletes what the test kept,
    removes the networks from the fabric, and checks that nothing of ours is left."""
    made = Servers(network_api.url, workdir / "servers", capfd)
    try:
        yield made
    finally:
        kept = sorted(p.name for p in made.state_dir.glob("*")) if made.state_dir.exists() else []
        deleted = [made("delete", name) for name in kept]
        remove_networks()
        left = {
            "failed deletes": [result for result in deleted if result[0] != 0],
            "namespaces": sorted(namespaces()),
            "links": sorted(links()),
            "/etc/netns": sorted(netns_etc()),
            "processes": sorted(clients(made.state_dir)),
        }
        assert not {k: v for k, v in left.items() if v}, f"left behind: {left}"


# -- (a) fixed addresses ------------------------------------------------------------------
def test_fixed_ip_servers_on_one_network_reach_each_other(servers: Servers) -> None:
    network = servers.network("net-a", "10.61.0.0/24")
    a = servers.json("create", "--network", "net-a", "--name", "a", "--fixed-ip", "10.61.0.10")
    b = servers.json(
        "create", "--network", network["id"], "--name", "b", "--fixed-ip", "10.61.0.11"
    )
    assert (b["status"], b["addresses"]) == ("ACTIVE", ["10.61.0.11/24"])

    assert (a["status"], a["mode"], a["namespace"]) == ("ACTIVE", "fixed", f"{PREFIX}vm-a")
    assert (a["addresses"], a["gateways"], a["dns_nameservers"]) == (
        ["10.61.0.10/24"],
        ["10.61.0.1"],
        ["10.61.0.53"],
    )
    (port,) = servers.ports(device_id=a["id"])
    assert (port["name"], port["device_owner"], port["network_id"]) == (
        "a",
        "compute:astara",
        network["id"],
    )
    assert [ip["ip_address"] for ip in port["fixed_ips"]] == ["10.61.0.10"]
    # the NIC is the port: its MAC, the network's MTU (VXLAN on the loopback underlay)
    code, out = servers.exec("a", "ip", "-j", "link", "show", "eth0")
    (nic,) = json.loads(out)
    assert (code, nic["address"], nic["mtu"], a["mtu"]) == (0, port["mac_address"], 1450, 1450)

    until("a -> b", lambda: servers.exec("a", "ping", "-c1", "-W1", "10.61.0.11")[0] == 0)
    assert servers.exec("b", "ping", "-c1", "-W1", "10.61.0.10")[0] == 0
    # the command's exit code is exec's; /etc/resolv.conf inside is the server's own
    assert servers.exec("a", "sh", "-c", "exit 3")[0] == 3
    assert servers.exec("a", "cat", "/etc/resolv.conf") == (0, "nameserver 10.61.0.53\n")
    assert servers.exec("a", "ip", "-4", "route", "show", "default")[1].startswith(
        "default via 10.61.0.1 dev eth0"
    )


# -- (b) list, show, delete -----------------------------------------------------------------
def test_list_show_delete_leave_nothing_behind(servers: Servers) -> None:
    servers.network("net-b", "10.63.0.0/24")
    fixed = servers.json(
        "create", "--network", "net-b", "--name", "fixed", "--fixed-ip", "10.63.0.7"
    )
    dhcp = servers.json("create", "--network", "net-b", "--name", "dhcp")
    assert dhcp["mode"] == "dhcp" and dhcp["dhcp_client_pid"] is not None

    listed = servers.json("list")
    assert [(s["name"], s["status"]) for s in listed] == [("dhcp", "ACTIVE"), ("fixed", "ACTIVE")]
    shown = servers.json("show", "fixed")
    assert {k: shown[k] for k in ("id", "port_id", "network_id", "mode")} == {
        k: fixed[k] for k in ("id", "port_id", "network_id", "mode")
    }
    code, out, err = servers("list")  # the table, for people
    assert code == 0 and "fixed" in out and "10.63.0.7/24" in out

    for server in (fixed, dhcp):
        code, out, err = servers("delete", server["name"])
        assert (code, out, err) == (0, "", "")
        gone(servers, server)
    assert servers.json("list") == []
    assert "no server named 'fixed'" in servers.fails("show", "fixed")
    assert "no server named 'fixed'" in servers.fails("delete", "fixed")
    assert "no server named 'fixed'" in servers.fails("exec", "fixed", "true")
    assert servers.ports(device_owner="compute:astara") == []


# -- (c) DHCP --------------------------------------------------------------------------------
def test_dhcp_server_takes_its_lease_route_and_dns(
    servers: Servers, lab: Lab, workdir: Path
) -> None:
    host_resolv = Path("/etc/resolv.conf").read_text()
    network = servers.network("net-c", "10.62.0.0/24")
    # no DHCP server yet: create returns at once, the client keeps asking
    a = servers.json("create", "--network", "net-c", "--name", "a")
    assert (a["status"], a["addresses"], a["dns_nameservers"]) == ("ACTIVE", [], [])
    assert Path(f"/etc/netns/{a['namespace']}/resolv.conf").read_text() == ""
    (port,) = servers.ports(device_id=a["id"])
    address = port["fixed_ips"][0]["ip_address"]

    # a DHCP server on the network, as a router will be: dnsmasq in a lab namespace
    dhcp_port = servers.api(
        "POST",
        "ports",
        {"port": {"network_id": network["id"], "device_owner": "network:dhcp", "name": "dhcp"}},
    )["port"]
    dhcp_ip = dhcp_port["fixed_ips"][0]["ip_address"]
    ns = lab.namespace("dhcp")

    async def plug() -> None:
        async with Fabric(prefix=PREFIX, vxlan=LOOPBACK) as fabric:
            spec = network_spec(network)
            await fabric.ensure_network(spec)
            await fabric.plug(
                network_id=network["id"],
                port_id=dhcp_port["id"],
                mac=dhcp_port["mac_address"],
                mtu=spec.mtu,
                netns=ns,
                ifname="eth0",
            )

    asyncio.run(plug())
    lab.address(ns, "eth0", f"{dhcp_ip}/24")
    lab.spawn(
        ns,
        [
            *("dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--pid-file"),
            *("--interface=eth0", "--bind-interfaces", "--no-ping"),
            "--dhcp-range=10.62.0.100,10.62.0.150,255.255.255.0,120",
            f"--dhcp-host={port['mac_address']},{address}",
            "--dhcp-option=option:router,10.62.0.1",
            "--dhcp-option=option:dns-server,10.62.0.53",
            f"--dhcp-leasefile={workdir / 'leases'}",
        ],
        log=workdir / "dnsmasq.log",
    )

    def leased() -> bool:
        return bool(servers.json("show", "a")["addresses"])

    until("server a's lease", leased)
    shown = servers.json("show", "a")
    assert shown["addresses"] == [f"{address}/24"]  # the port's address, by its MAC
    assert (shown["gateways"], shown["dns_nameservers"]) == (["10.62.0.1"], ["10.62.0.53"])
    assert (shown["lease"]["ip"], shown["lease"]["router"]) == (address, "10.62.0.1")
    assert Path(f"/etc/netns/{a['namespace']}/resolv.conf").read_text() == "nameserver 10.62.0.53\n"
    assert servers.exec("a", "cat", "/etc/resolv.conf") == (0, "nameserver 10.62.0.53\n")
    assert servers.exec("a", "ip", "-4", "route", "show", "default")[1].startswith(
        "default via 10.62.0.1 dev eth0"
    )
    assert servers.exec("a", "ping", "-c1", "-W2", dhcp_ip)[0] == 0
    assert Path("/etc/resolv.conf").read_text() == host_resolv  # the host's is untouched

    # --wait returns with the lease (this one from the range: no reservation)
    b = servers.json("create", "--network", "net-c", "--name", "b", "--wait", "20")
    (b_address,) = b["addresses"]
    assert b_address.startswith("10.62.0.1") and b_address.endswith("/24")
    assert b["dns_nameservers"] == ["10.62.0.53"]

    for server in (a, b):
        assert servers("delete", server["name"])[0] == 0
        gone(servers, server)


# -- (d) errors -------------------------------------------------------------------------------
def test_unknown_network_is_refused_before_anything_is_made(servers: Servers) -> None:
    err = servers.fails("create", "--network", "nowhere", "--name", "x")
    assert err == "astara: no network has the id or name 'nowhere'\n"
    err = servers.fails("create", "--network", "nowhere", "--name", "Bad_Name")
    assert "server name 'Bad_Name' must be" in err
    assert servers.ports() == []
    assert namespaces() == set()
    assert not servers.state_dir.exists() or not any(servers.state_dir.iterdir())


def test_fabric_refusal_deletes_the_port_again(servers: Servers) -> None:
    network = servers.network(
        "public",
        "10.64.0.0/24",
        **{"provider:network_type": "flat", "provider:physical_network": "public"},
    )
    err = servers.fails(
        "create", "--network", "public", "--name", "edge", "--fixed-ip", "10.64.0.5"
    )
    lines = err.splitlines()
    assert lines[0] == "astara: physical network 'public' has no host NIC in the fabric's uplinks"
    assert lines[1] == "astara: name the host NIC with --uplink PHYSNET=NIC"
    assert lines[2].startswith("astara: nothing was kept: port ") and lines[2].endswith(
        " was deleted again"
    )
    assert "Traceback" not in err
    assert servers.ports(network_id=network["id"]) == []
    assert namespaces() == set() and netns_etc() == set()
    assert not any(servers.state_dir.iterdir())


def test_no_lease_within_wait_removes_the_server_and_its_port(servers: Servers) -> None:
    servers.network("quiet", "10.65.0.0/24")
    servers.json("create", "--network", "quiet", "--name", "taken", "--fixed-ip", "10.65.0.9")
    err = servers.fails("create", "--network", "quiet", "--name", "taken")
    assert err == "astara: a server named 'taken' exists\n"
    assert len(servers.ports(device_owner="compute:astara")) == 1

    err = servers.fails("create", "--network", "quiet", "--name", "late", "--wait", "1")
    assert err.startswith("astara: server 'late' got no DHCP lease within 1s")
    assert "was deleted again" in err
    assert [p["name"] for p in servers.ports(device_owner="compute:astara")] == ["taken"]
    assert namespaces() == {f"{PREFIX}vm-taken"}
    assert [p.name for p in servers.state_dir.iterdir()] == ["taken"]
    assert clients(servers.state_dir) == set()
