"""The one-router scenario: an appliance between two tenant networks and a pretend internet.

Used by ``astara demo`` and by the dataplane tests, so that what the demo shows
is exactly what the tests prove. Built on a Lab, so everything is removed
with it::

    host ── mgmt veth (ULA /64) ── ge0 ┐
                                       │ router (appliance namespace)
    outside (203.0.113.1, 2001:db8:ffff::1, BGP AS 64512) ── ge1 ┤
    vm1 (10.0.1.10, SLAAC in 2001:db8:1::/64) ── ge2 ┤
    vm2 (10.0.2.10, floating IP 203.0.113.22) ── ge3 ┘

The outside namespace stands for the internet on TEST-NET addresses; nothing
leaves the namespaces and veths the lab made.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from astara.lab import Lab

ROUTER_ASN = 64513
OUTSIDE_ASN = 64512
MACS = {
    "ge0": "fa:16:3e:a0:00:00",
    "ge1": "fa:16:3e:a0:00:01",
    "ge2": "fa:16:3e:a0:00:02",
    "ge3": "fa:16:3e:a0:00:03",
    "vm1": "fa:16:3e:00:01:10",
    "vm2": "fa:16:3e:00:02:10",
}
EXTERNAL_V4 = "203.0.113.2/24"
GATEWAY_V4 = "203.0.113.1"
EXTERNAL_V6 = "2001:db8:ffff::2/64"
GATEWAY_V6 = "2001:db8:ffff::1"
FLOATING_IP = "203.0.113.22"
TENANT_V6 = "2001:db8:1::/64"

# A TCP server that tells each client the address it sees the client at.
ECHO_PEER = textwrap.dedent(
    """
    import socket, sys
    family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    s = socket.socket(family)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2])))
    s.listen(16)
    while True:
        c, peer = s.accept()
        c.sendall(peer[0].encode())
        c.close()
    """
)

# A TCP client that prints what the server said, or "error: ..." (exit 0 either way).
ASK_PEER = textwrap.dedent(
    """
    import socket, sys
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
        print(c.recv(200).decode())
    except OSError as exc:
        print(f"error: {exc}")
    """
)


class FakeMetadata(http.server.ThreadingHTTPServer):
    """The orchestrator's metadata service, faked on the host's end of the management veth.

    Answers every GET with ``answer`` and records each request's path and headers.
    """

    address_family = socket.AF_INET6
    answer = b"i-from-fake-nova"

    def __init__(self, address: str) -> None:
        self.requests: list[dict[str, str]] = []
        super().__init__((address, 0), _MetadataHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _MetadataHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        assert isinstance(self.server, FakeMetadata)
        self.server.requests.append({"path": self.path, **dict(self.headers.items())})
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.answer)))
        self.end_headers()
        self.wfile.write(self.server.answer)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class RouterScenario:
    lab: Lab
    router: str
    outside: str
    vm1: str
    vm2: str
    mgmt_host: ipaddress.IPv6Address  # the host's end of the management veth
    mgmt_router: ipaddress.IPv6Address  # the appliance's API address
    workdir: Path

    # -- the configuration pushed to the appliance ----------------------------------
    def config(
        self,
        *,
        floating_ip: bool = True,
        vm1_address: str = "10.0.1.10",
        metadata_port: int = 9697,
    ) -> dict[str, Any]:
        """The PUT body for this scenario (seed 002's shape with the router extensions)."""
        return {
            "configuration": {
                "tenant_id": "demo-project",
                "hostname": "router-demo",
                "asn": ROUTER_ASN,
                "neighbor_asn": OUTSIDE_ASN,
                "orchestrator": {"address": str(self.mgmt_host), "metadata_port": metadata_port},
                "floating_ips": (
                    [{"floating_ip": FLOATING_IP, "fixed_ip": "10.0.2.10"}] if floating_ip else []
                ),
                "networks": [
                    _network("mgmt", "management", "ge0", [f"{self.mgmt_router}/64"], []),
                    _network(
                        "ext",
                        "external",
                        "ge1",
                        [EXTERNAL_V4, EXTERNAL_V6],
                        [
                            {"cidr": "203.0.113.0/24", "gateway_ip": GATEWAY_V4},
                            {"cidr": "2001:db8:ffff::/64", "gateway_ip": GATEWAY_V6},
                        ],
                    ),
                    _network(
                        "net1",
                        "internal",
                        "ge2",
                        ["10.0.1.1/24", "2001:db8:1::1/64"],
                        [
                            {"cidr": "10.0.1.0/24", "gateway_ip": "10.0.1.1"},
                            {
                                "cidr": TENANT_V6,
                                "gateway_ip": "2001:db8:1::1",
                                "ipv6_ra_mode": "slaac",
                                "ipv6_address_mode": "slaac",
                            },
                        ],
                        allocations=[_allocation("dev-vm1", "vm1", MACS["vm1"], vm1_address)],
                    ),
                    _network(
                        "net2",
                        "internal",
                        "ge3",
                        ["10.0.2.1/24"],
                        [{"cidr": "10.0.2.0/24", "gateway_ip": "10.0.2.1"}],
                        allocations=[_allocation("dev-vm2", "vm2", MACS["vm2"], "10.0.2.10")],
                    ),
                ],
            }
        }

    # -- probes -----------------------------------------------------------------------
    def start_echo_peer(self, ns: str, address: str, port: int) -> None:
        """A server in ``ns`` that answers every TCP client with the client's address."""
        self.lab.spawn(ns, [sys.executable, "-c", ECHO_PEER, address, str(port)])

    def ask_peer(self, ns: str, address: str, port: int, timeout: float = 2.0) -> str:
        """From ``ns``, connect to an echo peer; return the address it saw, or 'error: ...'."""
        out = self.lab.run(
            ns,
            [sys.executable, "-c", ASK_PEER, address, str(port), str(timeout)],
            timeout=timeout + 10,
        )
        return out.strip()

    def drop_appliance(self, *, check: bool = False) -> subprocess.CompletedProcess[bytes]:
        """Have the agent drop the router namespace (its dnsmasq and bird stop with it)."""
        return subprocess.run(
            [
                astara_executable(),
                "appliance",
                "remove",
                self.router,
                "--control-socket",
                str(self.workdir / "control.sock"),
            ],
            capture_output=True,
            check=check,
            timeout=30,
        )

    def start_bgp_peer(self) -> Path:
        """bird2 in the outside namespace, peering with the router; returns its control socket."""
        conf = self.workdir / "outside-bird.conf"
        sock = self.workdir / "outside-bird.ctl"
        conf.write_text(
            textwrap.dedent(
                f"""
                router id 203.0.113.1;
                protocol device {{ scan time 10; }}
                protocol bgp tenant {{
                    local {GATEWAY_V6} as {OUTSIDE_ASN};
                    neighbor {EXTERNAL_V6.split("/", maxsplit=1)[0]} as {ROUTER_ASN};
                    connect delay time 1;
                    connect retry time 1;
                    error wait time 1, 5;
                    ipv6 {{ import all; export none; }};
                }}
                """
            )
        )
        self.lab.spawn(
            self.outside,
            [
                "bird",
                "-f",
                "-c",
                str(conf),
                "-s",
                str(sock),
                "-P",
                str(self.workdir / "outside-bird.pid"),
            ],
        )
        return sock

    def bgp_routes(self, sock: Path) -> str:
        return self.lab.run(self.outside, ["birdc", "-s", str(sock), "show", "route"], check=False)


def _network(
    name: str,
    kind: str,
    nic: str,
    addresses: list[str],
    subnets: list[dict[str, Any]],
    *,
    allocations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "network_id": f"net-{name}",
        "name": name,
        "network_type": kind,
        "interface": {"ifname": nic, "lladdr": MACS[nic], "addresses": addresses, "mtu": 1500},
        "subnets": subnets,
        "address_allocations": allocations or [],
    }


def _allocation(device: str, host: str, mac: str, address: str) -> dict[str, Any]:
    return {
        "device_id": device,
        "hostname": f"{host}.demo.internal",
        "mac_address": mac,
        "ip_addresses": {address: True},
    }


def build(lab: Lab, workdir: Path) -> RouterScenario:
    """Create the namespaces and veths of the scenario (no appliance configuration yet)."""
    ula = ipaddress.IPv6Network(f"fd00:a57a:{secrets.randbelow(0xFFFF):x}::/64")
    mgmt_host, mgmt_router = ula[0xFFFE], ula[1]
    router = lab.namespace("rtr")
    outside = lab.namespace("outside")
    vm1, vm2 = lab.vm("vm1"), lab.vm("vm2")
    host_nic = lab.host_name()
    lab.veth(None, host_nic, router, "ge0", mac_b=MACS["ge0"])
    lab.address(None, host_nic, f"{mgmt_host}/64")
    # the provider's part: the management address the agent will listen on
    lab.address(router, "ge0", f"{mgmt_router}/64")
    lab.veth(router, "ge1", outside, "eth0", mac_a=MACS["ge1"])
    lab.address(outside, "eth0", f"{GATEWAY_V4}/24")
    lab.address(outside, "eth0", f"{GATEWAY_V6}/64")
    # the internet knows the tenant's private prefix lies behind the router: isolation
    # is then the router's policy at work, not a missing route
    lab.route(outside, "10.0.0.0/8", "via", EXTERNAL_V4.split("/", maxsplit=1)[0])
    lab.veth(router, "ge2", vm1, "eth0", mac_a=MACS["ge2"], mac_b=MACS["vm1"])
    lab.veth(router, "ge3", vm2, "eth0", mac_a=MACS["ge3"], mac_b=MACS["vm2"])
    workdir.mkdir(parents=True, exist_ok=True)
    return RouterScenario(lab, router, outside, vm1, vm2, mgmt_host, mgmt_router, workdir)


def wait_for_api(
    client: httpx.Client, agent: subprocess.Popen[bytes] | None = None, timeout: float = 20.0
) -> None:
    """Wait until the appliance API answers ``client``; RuntimeError if the agent dies or it times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent is not None and agent.poll() is not None:
            raise RuntimeError(f"the agent exited with status {agent.returncode}")
        with contextlib.suppress(httpx.TransportError):
            client.get("/v1/status/")
            return
        time.sleep(0.1)
    raise RuntimeError(f"the agent's API did not come up within {timeout:g} s")


def astara_executable() -> str:
    """The ``astara`` of this installation (beside the running interpreter), else from PATH."""
    beside = Path(sys.executable).with_name("astara")
    return str(beside) if beside.exists() else (shutil.which("astara") or "astara")


def agent_command(scenario: RouterScenario, *, token_file: Path, port: int = 5000) -> list[str]:
    """The command line that serves the scenario's appliance."""
    return [
        astara_executable(),
        "appliance",
        "serve",
        "--netns",
        scenario.router,
        "--port",
        str(port),
        "--token-file",
        str(token_file),
        "--state-dir",
        str(scenario.workdir / "state"),
        "--control-socket",
        str(scenario.workdir / "control.sock"),
    ]
