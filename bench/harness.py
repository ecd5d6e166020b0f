"""What the benchmarks against a real ``astara up`` share (``bench.orchestrator``, ``bench.throughput``).

``testbed()`` gives a ``Lab`` with an ``outside`` namespace on 203.0.113.1/24 (TEST-NET)
at the far end of a veth whose host end is ``astara up``'s ``--uplink physnet1=…``, and
an ``astara up`` subprocess with its own state directory, API and admin ports,
management bridge and prefixes (namespaces ``astara-bench-<run>-u-…``, fabric links and
server namespaces ``ab<run>-…``, bridge ``ab<run>mgt``). Whatever happens, the servers
are deleted, ``astara up`` is stopped by its pid, ``astara down`` runs with the same
flags, and anything still named with the run's prefixes is removed (and said).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openstack
from keystoneauth1 import noauth
from keystoneauth1 import session as ksa_session

from astara.lab import Lab, end_process
from astara.providers.naming import name_candidates

ASTARA = [sys.executable, "-m", "astara.cli.main"]
OUTSIDE_ADDRESS = "203.0.113.1"


class TrialError(RuntimeError):
    """One trial did not converge (or converged wrongly); the message says what."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def namespaces(prefix: str) -> set[str]:
    try:
        return {n for n in os.listdir("/run/netns") if n.startswith(prefix)}
    except FileNotFoundError:
        return set()


def connect(url: str) -> openstack.connection.Connection:
    """An openstacksdk connection in no-auth mode as admin (as tests/component/conftest.py)."""
    headers = {"X-Project-Id": "admin", "X-Roles": "admin,member,reader"}
    session = ksa_session.Session(auth=noauth.NoAuth(endpoint=url), additional_headers=headers)
    return openstack.connection.Connection(session=session, network_endpoint_override=url + "/")


def fast_arp(lab: Lab, netns: str) -> None:
    """ARP retried every 10 ms (the prober's own back-off is not the figure)."""
    lab.sysctl(
        netns,
        "net.ipv4.neigh.eth0.retrans_time_ms=10",
        "net.ipv4.neigh.eth0.mcast_solicit=100",
        "net.ipv4.neigh.eth0.ucast_solicit=100",
    )


@dataclass
class Up:
    url: str
    flags: list[str]
    server_flags: list[str]
    log: Path
    proc: subprocess.Popen[bytes]
    netns_prefix: str
    servers: list[str] = field(default_factory=list)
    #: the command line it was started with (a restart runs it again: ``bench.scale``)
    argv: list[str] = field(default_factory=list)

    def tail(self, chars: int = 6000) -> str:
        """The end of astara up's log, then of its agent's (the state dir goes with down)."""
        text = ""
        for log in (self.log, Path(self.flags[1]) / "agent.log"):
            with contextlib.suppress(OSError):
                text += f"--- {log.name}\n" + log.read_text(errors="replace")[-chars:]
        return text

    def until(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.proc.poll() is not None:
                raise TrialError(f"{what}: astara up exited ({self.proc.returncode})")
            if time.monotonic() > deadline:
                raise TrialError(f"{what}: not within {timeout:.0f} s")
            time.sleep(0.05)

    def server(self, name: str, network_id: str, address: str) -> dict[str, Any]:
        argv = [*ASTARA, "server", "create", *self.server_flags, "--network", network_id]
        argv += ["--name", name, "--fixed-ip", address, "-f", "json"]
        self.servers.append(name)
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=90)
        if done.returncode != 0:
            raise RuntimeError(f"astara server create {name}: {done.stderr}\n{self.tail()}")
        made: dict[str, Any] = json.loads(done.stdout)
        return made

    def appliance(self, router_id: str) -> str | None:
        present = namespaces(self.netns_prefix)
        for name in name_candidates(self.netns_prefix, router_id):
            if name in present:
                return name
        return None


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    end_process(proc, timeout=30)


@contextlib.contextmanager
def astara_up(
    run: str, uplink: str, work: Path, extra: tuple[str, ...] = (), down_timeout: float = 120
) -> Iterator[Up]:
    """``astara up`` (with ``extra`` flags) for the block. ``Up.proc`` may be replaced meanwhile
    (a restart): the one running at the end is the one stopped."""
    netns_prefix = f"astara-bench-{run}-u-"
    fabric_prefix = f"ab{run}-"
    mgmt = ipaddress.IPv6Network(f"fd00:abbe:{secrets.randbelow(0xFFFF):x}::/64")
    flags = ["--state-dir", str(work / "up"), "--fabric-prefix", fabric_prefix]
    flags += ["--netns-prefix", netns_prefix, "--mgmt-bridge", f"ab{run}mgt"]
    flags += ["--mgmt-prefix", str(mgmt), "--uplink", uplink]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_flags = ["--url", url, "--fabric-prefix", fabric_prefix, "--uplink", uplink]
    server_flags += ["--state-dir", str(work / "servers")]
    log = work / "up.log"
    argv = [*ASTARA, "up", *flags, "--port", str(port), "--metadata-port", str(free_port())]
    argv += extra
    usage = subprocess.run([*ASTARA, "up", "--help"], capture_output=True, text=True, check=False)
    if "--admin-port" in usage.stdout:  # its own admin API port too, where there is one
        argv += ["--admin-port", str(free_port())]
    with log.open("wb") as output:
        proc = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
    made = Up(url, flags, server_flags, log, proc, netns_prefix, argv=argv)
    try:
        made.until("astara up ready", lambda: "ready;" in made.tail(100_000), 60)
        made.until("the network API answering", lambda: _answers(url), 30)
        yield made
    finally:
        try:
            for name in made.servers:
                subprocess.run(
                    [*ASTARA, "server", "delete", *server_flags, name],
                    capture_output=True,
                    check=False,
                    timeout=90,
                )
        finally:
            _stop(made.proc)
            down = subprocess.run(
                [*ASTARA, "down", *flags],
                capture_output=True,
                text=True,
                timeout=down_timeout,
                check=False,
            )
            if down.returncode != 0:
                print(f"bench: astara down failed: {down.stderr}", file=sys.stderr)


def sweep(run: str) -> list[str]:
    """Last resort: whatever this run's unique prefixes still name is removed, and said (and
    returned)."""
    removed: list[str] = []
    for ns in sorted(namespaces(f"astara-bench-{run}-") | namespaces(f"ab{run}")):
        print(f"bench: removing leftover namespace {ns}", file=sys.stderr)
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)
        removed.append(f"namespace {ns}")
    for link in sorted(os.listdir("/sys/class/net")):
        if link.startswith(f"ab{run}"):
            print(f"bench: removing leftover link {link}", file=sys.stderr)
            subprocess.run(["ip", "link", "del", link], check=False, timeout=30)
            removed.append(f"link {link}")
    return removed


@dataclass
class Testbed:
    """One run's lab, its ``outside`` namespace (203.0.113.1/24) and its ``astara up``."""

    run: str
    work: Path
    lab: Lab
    outside: str
    up: Up
    #: what the final sweep still found (and removed): filled once the block has ended
    leftovers: list[str] = field(default_factory=list)


@contextlib.contextmanager
def testbed(
    before_up: Callable[[Lab, str], None] | None = None,
    up_flags: tuple[str, ...] = (),
    down_timeout: float = 120,
) -> Iterator[Testbed]:
    """A fresh run: ``outside`` on the uplink veth, then ``astara up``; all removed after.

    ``before_up(lab, outside)`` runs once ``outside`` is addressed, before ``astara up``
    starts (a listener there, say). ``up_flags`` are added to ``astara up``'s; ``astara down``
    may take ``down_timeout`` s (many appliances take longer than the default).
    """
    run = secrets.token_hex(2)
    work = Path(tempfile.mkdtemp(prefix=f"astara-bench-{run}-"))
    work.chmod(0o755)  # dnsmasq reads its files under the state directory after dropping root
    bed: Testbed | None = None
    try:
        with Lab(f"astara-bench-{run}", link_tag=f"ab{run}h") as lab:
            outside = lab.namespace("out")
            nic = lab.host_name()
            lab.veth(None, nic, outside, "eth0")
            lab.address(outside, "eth0", f"{OUTSIDE_ADDRESS}/24")
            fast_arp(lab, outside)
            if before_up is not None:
                before_up(lab, outside)
            with astara_up(run, f"physnet1={nic}", work, up_flags, down_timeout) as up:
                bed = Testbed(run, work, lab, outside, up)
                yield bed
    finally:
        shutil.rmtree(work, ignore_errors=True)
        found = sweep(run)
        if bed is not None:
            bed.leftovers += found


def external_network(sdk: openstack.connection.Connection) -> Any:
    """The flat external network ``public`` on physnet1: 203.0.113.0/24, gateway ``outside``."""
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
        gateway_ip=OUTSIDE_ADDRESS,
        is_dhcp_enabled=False,
    )
    return public


def private_network(sdk: openstack.connection.Connection, name: str, octet: int) -> tuple[Any, Any]:
    """A VXLAN tenant network ``name`` with the subnet 10.<octet>.0.0/24 (gateway .1)."""
    network = sdk.network.create_network(
        name=name,
        provider_network_type="vxlan",
        provider_segmentation_id=100_000 + secrets.randbelow(16_000_000),
    )
    subnet = sdk.network.create_subnet(
        network_id=network.id,
        cidr=f"10.{octet}.0.0/24",
        ip_version=4,
        gateway_ip=f"10.{octet}.0.1",
    )
    return network, subnet
