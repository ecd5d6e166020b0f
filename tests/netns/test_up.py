"""``astara up`` end to end: a router made through the API becomes an appliance that serves DHCP.

``astara up`` runs as a subprocess (ended by its pid), isolated by its flags:
appliance namespaces ``test-<run>-u-…``, fabric links ``t<run>u-…``, the
management bridge ``t<run>umgt`` on a random ULA /64, its own API port and a
state directory in a ``test-<run>-…`` scratch directory (so the session leak
check sees a leaked agent or dnsmasq by its command line). Servers
(``astara server``) use the same fabric prefix, so their namespaces are
``t<run>u-vm-…``; this test checks those itself.

What it proves: a network, a subnet and a router with an interface made
through openstacksdk reach the orchestrator over the embedded bus; it boots
the appliance namespace, pushes its configuration (the router's address on
``ge1``) and publishes ACTIVE; a server on the network gets its port's
address by DHCP from the appliance's dnsmasq and pings the router; deleting
the router destroys the appliance; ``astara down`` removes the rest.

And the external path: ``astara up --uplink physnet1=<NIC>`` binds a flat
external network to a veth whose other end is an ``outside`` namespace on
203.0.113.1/24 (the internet, on TEST-NET). A router with a gateway on it and
an interface on a VXLAN network serves a server that reaches ``outside``
behind the router's external address (SNAT, seen by a TCP listener there); a
floating IP associated with the server's port lets ``outside`` reach the
server (which sees 203.0.113.1 as the peer), and no longer once it is
disassociated.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from astara.lab import Lab
from astara.providers.naming import name_candidates
from tests.component.conftest import connect
from tests.conftest import RUN, chosen_database, run_prefix

pytestmark = [pytest.mark.netns, pytest.mark.database]

NETNS_PREFIX = f"{run_prefix()}-u-"
FABRIC_PREFIX = f"t{RUN}u-"
BRIDGE = f"t{RUN}umgt"
ASTARA = [sys.executable, "-m", "astara.cli.main"]
#: the servers the tests make, deleted after each test whatever happened
SERVERS = ("s1", "s2")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _namespaces(prefix: str) -> set[str]:
    try:
        return {n for n in os.listdir("/run/netns") if n.startswith(prefix)}
    except FileNotFoundError:
        return set()


def _links() -> set[str]:
    return {n for n in os.listdir("/sys/class/net") if n.startswith(f"t{RUN}u")}


def _until(what: str, check: Callable[[], bool], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: not within {timeout:.0f}s; astara up said:\n" + log.read_text()[-4000:]
            )
        time.sleep(0.2)


@dataclass
class Up:
    """A running ``astara up`` and the flags that name what it makes."""

    url: str
    flags: list[str]
    server_flags: list[str]
    log: Path
    proc: subprocess.Popen[bytes]
    #: the command line it was started with, for ``restart``
    argv: list[str] = field(default_factory=list)

    def restart(self) -> None:
        """Stop it by its pid and start it again, same flags, same state directory."""
        assert _stop(self.proc) == 0, self.log.read_text()[-4000:]
        readies = self.log.read_text().count("ready;")
        with self.log.open("ab") as output:
            self.proc = subprocess.Popen(self.argv, stdout=output, stderr=subprocess.STDOUT)
        _until(
            "astara up ready again",
            lambda: self.log.read_text().count("ready;") > readies,
            60,
            self.log,
        )

    def server(self, verb: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*ASTARA, "server", verb, *self.server_flags, *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=90,
        )


def external_network(sdk: Any, name: str = "public", physnet: str = "physnet1") -> Any:
    """A flat external network on ``physnet`` with the TEST-NET subnet 203.0.113.0/24, whose
    gateway (203.0.113.1) is the ``outside`` namespace of the tests."""
    public = sdk.network.create_network(
        name=name,
        is_router_external=True,
        provider_network_type="flat",
        provider_physical_network=physnet,
    )
    sdk.network.create_subnet(
        network_id=public.id,
        cidr="203.0.113.0/24",
        ip_version=4,
        gateway_ip="203.0.113.1",
        is_dhcp_enabled=False,
    )
    return public


def _stop(proc: subprocess.Popen[bytes]) -> int:
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise


@contextlib.contextmanager
def _astara_up(uplinks: Sequence[str] = (), extra: Sequence[str] = ()) -> Iterator[Up]:
    """``astara up`` with this run's names (and ``--uplink`` each of ``uplinks``, then the
    flags ``extra`` of ``up`` only); stopped by pid, then ``astara down``, when the block ends."""
    work = Path(tempfile.mkdtemp(prefix=f"{run_prefix()}-"))
    work.chmod(0o755)  # dnsmasq reads its files under the state directory after dropping root
    port = _free_port()
    mgmt = ipaddress.IPv6Network(f"fd00:a57c:{secrets.randbelow(0xFFFF):x}::/64")
    flags = [
        "--state-dir",
        str(work / "up"),
        "--fabric-prefix",
        FABRIC_PREFIX,
        "--netns-prefix",
        NETNS_PREFIX,
        "--mgmt-bridge",
        BRIDGE,
        "--mgmt-prefix",
        str(mgmt),
    ]
    for uplink in uplinks:
        flags += ["--uplink", uplink]
    url = f"http://127.0.0.1:{port}"
    server_flags = ["--url", url, "--fabric-prefix", FABRIC_PREFIX]
    server_flags += [flag for uplink in uplinks for flag in ("--uplink", uplink)]
    server_flags += ["--state-dir", str(work / "servers")]
    log = work / "up.log"
    databases = contextlib.ExitStack()
    argv = [*ASTARA, "up", *flags, "--port", str(port), "--metadata-port", str(_free_port())]
    argv += ["--network-db", databases.enter_context(chosen_database(work, "network"))]
    argv += ["--orchestrator-db", databases.enter_context(chosen_database(work, "orchestrator"))]
    if "--admin-port" not in extra:  # never the default 44250: another astara up may hold it
        argv += ["--admin-port", str(_free_port())]
    argv += extra
    with log.open("wb") as output:
        proc = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
    made = Up(url, flags, server_flags, log, proc, argv)
    try:
        _until(
            "astara up ready",
            lambda: "ready;" in log.read_text() or proc.poll() is not None,
            60,
            log,
        )
        assert proc.poll() is None, "astara up exited:\n" + log.read_text()[-4000:]
        yield made
    finally:
        try:
            for name in SERVERS:
                made.server("delete", name)
            assert _stop(made.proc) == 0, log.read_text()[-4000:]
            down = subprocess.run(
                [*ASTARA, "down", *flags], capture_output=True, text=True, timeout=120, check=False
            )
            assert down.returncode == 0, down.stderr
            assert not (work / "up").exists()
        finally:
            databases.close()
            shutil.rmtree(work, ignore_errors=True)
    assert not _namespaces(NETNS_PREFIX)
    assert not _namespaces(FABRIC_PREFIX)
    assert not _links()


@pytest.fixture
def up() -> Iterator[Up]:
    """``astara up`` with this run's names, for one test."""
    with _astara_up() as made:
        yield made


def _addresses(netns: str) -> set[str]:
    out = subprocess.run(
        ["ip", "-j", "-n", netns, "addr", "show"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        return set()
    return {a["local"] for link in json.loads(out.stdout or "[]") for a in link["addr_info"]}


def test_router_to_dhcp_and_back(up: Up) -> None:
    sdk = connect(up.url)
    network = sdk.network.create_network(
        name="net",
        provider_network_type="vxlan",
        provider_segmentation_id=100_000 + secrets.randbelow(16_000_000),
    )
    subnet = sdk.network.create_subnet(
        network_id=network.id, cidr="10.77.0.0/24", ip_version=4, gateway_ip="10.77.0.1"
    )
    router = sdk.network.create_router(name="r1")
    sdk.network.add_interface_to_router(router, subnet=subnet.id)
    netns = name_candidates(NETNS_PREFIX, router.id)[0]

    # the appliance: booted, configured (the router's address on its NIC), ACTIVE
    _until("the appliance namespace", lambda: netns in _namespaces(NETNS_PREFIX), 60, up.log)
    _until(
        "the router's address in the appliance",
        lambda: "10.77.0.1" in _addresses(netns),
        60,
        up.log,
    )
    _until(
        "router ACTIVE", lambda: sdk.network.get_router(router.id).status == "ACTIVE", 60, up.log
    )

    # a server on the network: DHCP from the appliance's dnsmasq, then a ping to the router
    created = up.server(
        "create", "--network", network.id, "--name", "s1", "--wait", "30", "-f", "json"
    )
    assert created.returncode == 0, created.stderr + up.log.read_text()[-4000:]
    server = json.loads(created.stdout)
    port = sdk.network.get_port(server["port_id"])
    fixed = port.fixed_ips[0]["ip_address"]
    assert server["addresses"] == [f"{fixed}/24"]
    assert server["gateways"] == ["10.77.0.1"]
    ping = up.server("exec", "s1", "--", "ping", "-c1", "-W2", "10.77.0.1")
    assert ping.returncode == 0, ping.stdout + ping.stderr

    # and back: the server, the interface, the router; the appliance goes with the router
    deleted = up.server("delete", "s1")
    assert deleted.returncode == 0, deleted.stderr
    sdk.network.remove_interface_from_router(router, subnet=subnet.id)
    sdk.network.delete_router(router)
    _until("the appliance destroyed", lambda: netns not in _namespaces(NETNS_PREFIX), 60, up.log)
    assert not _namespaces(FABRIC_PREFIX)


LISTENER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
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


@contextlib.contextmanager
def _listening(netns: str, host: str, port: int) -> Iterator[None]:
    """A TCP listener in ``netns`` answering "<peer> <local>:<port>"; ended by its pid."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-c", LISTENER, host, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not subprocess.run(
            ["ip", "netns", "exec", netns, "ss", "-Hltn", "sport", "=", f":{port}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip():
            assert proc.poll() is None and time.monotonic() < deadline, f"listener in {netns}"
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _connect(netns: str, host: str, port: int, timeout: float = 3.0) -> tuple[str, str] | None:
    """From ``netns``: (the peer the listener saw, where it was reached); None if unreachable."""
    argv = ["ip", "netns", "exec", netns, sys.executable, "-c", CLIENT, host, str(port)]
    done = subprocess.run(
        [*argv, str(timeout)], capture_output=True, text=True, check=False, timeout=timeout + 10
    )
    if done.returncode != 0:
        return None
    peer, local = done.stdout.split()
    return peer, local


def _ping(netns: str, address: str) -> bool:
    argv = ["ip", "netns", "exec", netns, "ping", "-c1", "-W1", address]
    return subprocess.run(argv, capture_output=True, check=False, timeout=10).returncode == 0


def test_external_network_snat_and_floating_ip(lab: Lab) -> None:
    # the internet: ``outside`` on 203.0.113.1/24, behind a veth whose host end is physnet1's NIC
    outside = lab.namespace("out")
    nic = lab.host_name()
    lab.veth(None, nic, outside, "eth0")
    lab.address(outside, "eth0", "203.0.113.1/24")
    with _astara_up([f"physnet1={nic}"]) as up:
        assert f"uplinks        physnet1={nic}" in up.log.read_text()
        sdk = connect(up.url)
        public = external_network(sdk)
        private = sdk.network.create_network(
            name="private",
            provider_network_type="vxlan",
            provider_segmentation_id=100_000 + secrets.randbelow(16_000_000),
        )
        subnet = sdk.network.create_subnet(
            network_id=private.id, cidr="10.78.0.0/24", ip_version=4, gateway_ip="10.78.0.1"
        )
        router = sdk.network.create_router(
            name="r2", external_gateway_info={"network_id": public.id}
        )
        sdk.network.add_interface_to_router(router, subnet=subnet.id)
        external = router.external_gateway_info["external_fixed_ips"][0]["ip_address"]
        netns = name_candidates(NETNS_PREFIX, router.id)[0]
        _until(
            "the router's external address in the appliance",
            lambda: external in _addresses(netns),
            60,
            up.log,
        )
        _until(
            "router ACTIVE",
            lambda: sdk.network.get_router(router.id).status == "ACTIVE",
            60,
            up.log,
        )

        created = up.server(
            "create", "--network", private.id, "--name", "s2", "--wait", "30", "-f", "json"
        )
        assert created.returncode == 0, created.stderr + up.log.read_text()[-4000:]
        server = json.loads(created.stdout)
        vm = server["namespace"]
        fixed = sdk.network.get_port(server["port_id"]).fixed_ips[0]["ip_address"]

        # SNAT: the server reaches the internet, which sees the router's external address
        ping = up.server("exec", "s2", "--", "ping", "-c1", "-W2", "203.0.113.1")
        assert ping.returncode == 0, ping.stdout + ping.stderr + up.log.read_text()[-4000:]
        with _listening(outside, "203.0.113.1", 8080):
            assert _connect(vm, "203.0.113.1", 8080) == (external, "203.0.113.1:8080")

        # a floating IP: the internet reaches the server, which sees the real source
        fip = sdk.network.create_ip(floating_network_id=public.id)
        floating = fip.floating_ip_address
        sdk.network.update_ip(fip, port_id=server["port_id"])
        with _listening(vm, "0.0.0.0", 8081):
            _until("outside pings the floating IP", lambda: _ping(outside, floating), 30, up.log)
            assert _connect(outside, floating, 8081) == ("203.0.113.1", f"{fixed}:8081")

            # disassociated: the internet no longer reaches it
            sdk.network.update_ip(fip, port_id=None)
            _until(
                "the floating IP unreachable",
                lambda: _connect(outside, floating, 8081, timeout=1.0) is None,
                30,
                up.log,
            )
            assert not _ping(outside, floating)

        # and back
        sdk.network.delete_ip(fip)
        deleted = up.server("delete", "s2")
        assert deleted.returncode == 0, deleted.stderr
        sdk.network.remove_interface_from_router(router, subnet=subnet.id)
        sdk.network.remove_gateway_from_router(router)
        sdk.network.delete_router(router)
        _until(
            "the appliance destroyed", lambda: netns not in _namespaces(NETNS_PREFIX), 60, up.log
        )
