"""The metadata proxy on the real kernel: a VM behind a router reads metadata from the host.

Topology (all made by the lab, removed after the test):

    host: <veth> fd00:a5a5:N::2/64, fake metadata server on port 9697
      |
    router: ge0 fd00:a5a5:N::1/64 (management)    ge2 10.0.1.1/24 (internal)
                                                     |
    switch: br0 -------------------------------------+------------------+
      |                                                                 |
    vm1: eth0 10.0.1.10/24 (allocated to dev-1)        vm2: eth0 10.0.1.99/24 (not allocated)

N is random per run: the host end lives in the host's namespace, which other
test runs on the machine share, so the brief's fixed fd00:a5a5:1:: would make
concurrent runs collide. The proxy runs in this test's event loop; its sockets
live in the router namespace, which the fake server can tell by the source
address it sees.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from astara.appliance.plan import (
    NetworkKind,
    PlannedHost,
    PlannedNetwork,
    RouterPlan,
)
from astara.appliance.services.metadata import MetadataProxy
from astara.appliance.system.netns import Netns
from astara.lab import Lab

MGMT_PREFIX = f"fd00:a5a5:{secrets.randbelow(0xFFFF) + 1:x}"
HOST_MGMT = f"{MGMT_PREFIX}::2"
ROUTER_MGMT = f"{MGMT_PREFIX}::1"
ORCHESTRATOR_PORT = 9697
NET_ID = "31a242a0-95aa-49cd-b2db-cc00f33dfe88"
URL = "http://10.0.1.1:9602/latest/meta-data/instance-id"

# Run inside a VM: print "<status> <body>", or "error <reason>" when nothing answers.
CLIENT = """
import sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(sys.argv[1], timeout=5) as answer:
        print(answer.status, answer.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read().decode().strip())
except urllib.error.URLError as exc:
    print("error", exc.reason)
"""


@dataclass(frozen=True)
class Seen:
    path: str
    client: str
    headers: dict[str, str]


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True


@contextmanager
def fake_metadata_server() -> Iterator[list[Seen]]:
    """Serve ``i-0000abcd`` on [HOST_MGMT]:9697 from a thread; yield the requests it saw."""
    seen: list[Seen] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(Seen(self.path, self.client_address[0], dict(self.headers.items())))
            body = b"i-0000abcd"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = _V6Server((HOST_MGMT, ORCHESTRATOR_PORT), Handler)
    thread = threading.Thread(target=server.serve_forever, name="fake-metadata", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def build_topology(lab: Lab) -> tuple[str, str, str]:
    """Router, switch and two VMs as drawn in the module docstring; return (router, vm1, vm2)."""
    router = lab.namespace("r")
    switch = lab.namespace("sw")
    vm1 = lab.vm("vm1")
    vm2 = lab.vm("vm2")
    host_if = lab.host_name()
    lab.veth(router, "ge0", None, host_if)
    lab.address(router, "ge0", f"{ROUTER_MGMT}/64")
    lab.address(None, host_if, f"{HOST_MGMT}/64")
    lab.run(switch, ["ip", "link", "add", "br0", "type", "bridge"])
    lab.run(switch, ["ip", "link", "set", "br0", "up"])
    for ns, ifname, port in ((router, "ge2", "p0"), (vm1, "eth0", "p1"), (vm2, "eth0", "p2")):
        lab.veth(ns, ifname, switch, port)
        lab.run(switch, ["ip", "link", "set", port, "master", "br0"])
    lab.address(router, "ge2", "10.0.1.1/24")
    lab.address(vm1, "eth0", "10.0.1.10/24")
    lab.address(vm2, "eth0", "10.0.1.99/24")
    return router, vm1, vm2


def router_plan() -> RouterPlan:
    def network(network_id: str, kind: NetworkKind, ifname: str, address: str) -> PlannedNetwork:
        hosts: tuple[PlannedHost, ...] = ()
        if kind is NetworkKind.INTERNAL:
            allocated = ((ipaddress.ip_address("10.0.1.10"), True),)
            hosts = (PlannedHost("fa:16:3e:00:00:0a", "vm1.local", "dev-1", allocated),)
        return PlannedNetwork(
            network_id=network_id,
            name="",
            kind=kind,
            ifname=ifname,
            mac="fa:16:3e:00:00:01",
            addresses=(ipaddress.ip_interface(address),),
            mtu=None,
            up=True,
            subnets=(),
            hosts=hosts,
        )

    return RouterPlan(
        networks=(
            network("mgmt", NetworkKind.MANAGEMENT, "ge0", f"{ROUTER_MGMT}/64"),
            network(NET_ID, NetworkKind.INTERNAL, "ge2", "10.0.1.1/24"),
        ),
        routes=(),
        default_v4_gateway=None,
        default_v6_gateway=None,
        floating_ips=(),
        bgp=None,
        tenant_id="proj-a",
        hostname="router",
        orchestrator=(ipaddress.ip_address(HOST_MGMT), ORCHESTRATOR_PORT),
    )


async def fetch(lab: Lab, vm: str) -> str:
    """What the VM's metadata client prints; run off the loop so the proxy can answer."""
    out = await asyncio.to_thread(lab.run, vm, ["python3", "-c", CLIENT, URL], timeout=20)
    return out.strip()


async def test_vm_reads_metadata_through_the_router(lab: Lab) -> None:
    router, vm1, vm2 = build_topology(lab)
    proxy = MetadataProxy(netns=Netns(router))
    with fake_metadata_server() as seen:
        try:
            assert await proxy.apply(router_plan())
            assert not await proxy.apply(router_plan())
            listening = lab.run(router, ["ss", "-Htln", "sport = :9602"])
            assert "10.0.1.1:9602" in listening

            assert await fetch(lab, vm1) == "200 i-0000abcd"
            [request] = seen
            assert request.path == "/latest/meta-data/instance-id"
            assert request.client == ROUTER_MGMT  # the upstream socket lives in the router
            assert request.headers["X-Forwarded-For"] == "10.0.1.10"
            assert request.headers["X-Instance-ID"] == "dev-1"
            assert request.headers["X-Tenant-ID"] == "proj-a"
            assert request.headers["X-Neutron-Network-ID"] == NET_ID

            answer = await fetch(lab, vm2)
            assert answer.startswith("404 ")
            assert len(seen) == 1

            await proxy.stop()
            assert lab.run(router, ["ss", "-Htln", "sport = :9602"]).strip() == ""
            assert (await fetch(lab, vm1)).startswith("error ")
            assert len(seen) == 1
        finally:
            await proxy.stop()
