"""The demo's tenants, built through the public API only, and their servers.

Two projects (no-auth: ``X-Project-Id``), each with a router and two VXLAN
networks (the first dual-stack: IPv4 and IPv6 SLAAC), two servers per network
taking their addresses by DHCP, and a floating IP on one server. With an
external network (when the demo runs its own ``astara up``) the routers have
a gateway on it (SNAT) and the floating IPs come from its pool, made with the
seed command ``astara floating create``. One VLAN network on physnet2 made with
``astara network create --fixed-range`` belongs to project A; it is attached
to A's router, with a server, only where the kernel has 802.1Q.

Servers are what ``astara server create`` makes (a port owned by
``compute:astara`` and a namespace from ``astara.network.workloads``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from astara.demo.api import Api, DemoError, Resource
from astara.demo.host import EXTERNAL_V4, EXTERNAL_V6, OUTSIDE_V6, Options, astara_argv
from astara.fabric import Fabric, NetworkSpec, NetworkType, VxlanUnderlay
from astara.network.workloads import DEFAULT_STATE_DIR, ServerSpec, Workloads

T = TypeVar("T")
DEVICE_OWNER = "compute:astara"
PROJECTS = {"a": "demo-project-a", "b": "demo-project-b"}
VLAN_RANGE = "10.1.100.0/24"
VLAN_START = 200


@dataclass
class Server:
    name: str
    project: str
    network: str  # the demo's key of its network: a1, a2, b1, b2, vlan
    server_id: str
    port: Resource
    address: str = ""  # its IPv4 fixed IP

    @property
    def hostname(self) -> str:
        """Its name in the router's DNS (no dns_name: ``host-<address>``, as Neutron's)."""
        return "host-" + self.address.replace(".", "-")


@dataclass
class Topology:
    """What the demo made, by the demo's own keys."""

    url: str
    external: Resource | None = None
    networks: dict[str, Resource] = field(default_factory=dict)
    routers: dict[str, Resource] = field(default_factory=dict)
    servers: dict[str, Server] = field(default_factory=dict)
    floating: dict[str, str] = field(default_factory=dict)  # project -> address
    floating_server: dict[str, str] = field(default_factory=dict)  # project -> server name
    vlan_id: int | None = None
    vlan_attached: bool = False
    #: undo steps for the API's objects, run last first (when the demo did not start astara up)
    undo: list[Callable[[], object]] = field(default_factory=list)

    def api(self, project: str | None = None) -> Api:
        return Api(self.url, PROJECTS[project] if project else None)


def _with_workloads(
    opts: Options, uplinks: dict[str, str], work: Callable[[Workloads], Awaitable[T]]
) -> T:
    """``work`` against the embedded fabric, as ``astara server`` builds it."""

    async def run() -> T:
        fabric = Fabric(
            prefix=opts.fabric_prefix,
            uplinks=uplinks,
            vxlan=VxlanUnderlay(local=ipaddress.ip_address("127.0.0.1")),
        )
        async with fabric:
            workloads = Workloads(
                fabric=fabric,
                prefix=opts.fabric_prefix,
                state_dir=opts.server_state_dir or DEFAULT_STATE_DIR,
            )
            return await work(workloads)

    return asyncio.run(run())


def build(topo: Topology, opts: Options, *, external: bool, vlan: bool) -> None:
    """Every network, subnet, router, interface and floating IP pool, through the API."""
    admin = topo.api()
    try:
        if external:
            _external(topo, admin, opts)
        for key in PROJECTS:
            _project(topo, key)
        _vlan_network(topo, attach=vlan and external)
    finally:
        admin.close()


def _external(topo: Topology, admin: Api, opts: Options) -> None:
    name = f"{opts.netns_prefix}demo-public"
    net = admin.create(
        "networks",
        name=name,
        **{
            "router:external": True,
            "provider:network_type": "flat",
            "provider:physical_network": "physnet1",
        },
    )
    topo.external = net
    topo.undo.append(lambda: admin_delete("networks", net["id"], topo.url))
    # the pool, nova-manage style: the IPv4 range becomes a subnet of the external network
    _astara(topo.url, "floating", "create", "--ip-range", EXTERNAL_V4, "--pool", name, "-f", "json")
    admin.create(
        "subnets",
        network_id=net["id"],
        name=f"{name}-v6",
        cidr=EXTERNAL_V6,
        ip_version=6,
        gateway_ip=OUTSIDE_V6,
        enable_dhcp=False,
    )


def admin_delete(collection: str, resource_id: str, url: str) -> None:
    api = Api(url)
    try:
        api.delete(collection, resource_id)
    finally:
        api.close()


def _project(topo: Topology, key: str) -> None:
    api = topo.api(key)
    octet = {"a": 1, "b": 2}[key]
    try:
        gateway = {"network_id": topo.external["id"]} if topo.external else None
        router = api.create("routers", name=f"demo-router-{key}", external_gateway_info=gateway)
        topo.routers[key] = router
        topo.undo.append(lambda: _delete_router(topo.url, PROJECTS[key], router["id"]))
        for index in (1, 2):
            net_key = f"{key}{index}"
            net = api.create(
                "networks",
                name=f"demo-net-{net_key}",
                **{"provider:network_type": "vxlan"},
            )
            topo.networks[net_key] = net
            topo.undo.append(partial(admin_delete, "networks", net["id"], topo.url))
            v4 = api.create(
                "subnets",
                network_id=net["id"],
                name=f"demo-{net_key}-v4",
                cidr=f"10.{octet}.{index}.0/24",
                ip_version=4,
                gateway_ip=f"10.{octet}.{index}.1",
            )
            subnets = [v4]
            if index == 1:  # dual-stack: IPv6 by SLAAC, the router advertises it
                subnets.append(
                    api.create(
                        "subnets",
                        network_id=net["id"],
                        name=f"demo-{net_key}-v6",
                        cidr=f"2001:db8:{key}{index}::/64",
                        ip_version=6,
                        gateway_ip=f"2001:db8:{key}{index}::1",
                        ipv6_ra_mode="slaac",
                        ipv6_address_mode="slaac",
                    )
                )
            for subnet in subnets:
                api.call(
                    "PUT",
                    f"routers/{router['id']}/add_router_interface",
                    {"subnet_id": subnet["id"]},
                )
    finally:
        api.close()


def _delete_router(url: str, project: str, router_id: str) -> None:
    api = Api(url, project)
    try:
        for fip in api.list("floatingips", router_id=router_id):
            api.delete("floatingips", fip["id"])
        for port in api.list("ports", device_id=router_id):
            if port["device_owner"] == "network:router_interface":
                api.call(
                    "PUT", f"routers/{router_id}/remove_router_interface", {"port_id": port["id"]}
                )
        api.delete("routers", router_id)
    finally:
        api.close()


def _vlan_network(topo: Topology, *, attach: bool) -> None:
    """nova-manage's ``network create --fixed-range`` for project A, on physnet2."""
    label = "demo-vlan"
    _astara(
        topo.url,
        "network",
        "create",
        "--project",
        PROJECTS["a"],
        "--fixed-range",
        VLAN_RANGE,
        "--num-networks",
        "1",
        "--network-size",
        "256",
        "--vlan-start",
        str(VLAN_START),
        "--physical-network",
        "physnet2",
        "--label",
        label,
        "-f",
        "json",
    )
    api = topo.api("a")
    try:
        net = api.list("networks", name=f"{label}-0")[0]
        topo.networks["vlan"] = net
        topo.vlan_id = net.get("provider:segmentation_id")
        topo.undo.append(lambda: admin_delete("networks", net["id"], topo.url))
        if attach:
            subnet = api.list("subnets", network_id=net["id"])[0]
            api.call(
                "PUT",
                f"routers/{topo.routers['a']['id']}/add_router_interface",
                {"subnet_id": subnet["id"]},
            )
            topo.vlan_attached = True
    finally:
        api.close()


def _astara(url: str, *argv: str) -> Any:
    """One ``astara`` resource command against ``url``; its JSON output."""
    done = subprocess.run(
        [*astara_argv(), *argv, "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        raise DemoError(f"astara {' '.join(argv[:2])}: {said[-1] if said else done.returncode}")
    return json.loads(done.stdout or "null")


# -- servers -------------------------------------------------------------------------------
def server_plan(topo: Topology) -> list[tuple[str, str, str]]:
    """(server name, project key, network key) of every server the demo makes."""
    plan = [
        (f"demo-{key}{n}", key, f"{key}{(n + 1) // 2}") for key in PROJECTS for n in (1, 2, 3, 4)
    ]
    if topo.vlan_attached:
        plan.append(("demo-av", "a", "vlan"))
    return plan


def create_servers(topo: Topology, opts: Options, uplinks: dict[str, str]) -> None:
    """Each server's port through the API, then its namespace (DHCP client started)."""
    specs = []
    for name, key, net_key in server_plan(topo):
        net = topo.networks[net_key]
        api = topo.api(key)
        server_id = str(uuid.uuid4())
        try:
            port = api.create(
                "ports",
                network_id=net["id"],
                name=name,
                device_owner=DEVICE_OWNER,
                device_id=server_id,
                **{"binding:host_id": socket.gethostname()},
            )
        finally:
            api.close()
        v4 = [f["ip_address"] for f in port["fixed_ips"] if ":" not in f["ip_address"]]
        server = Server(name, key, net_key, server_id, port, v4[0] if v4 else "")
        topo.servers[name] = server
        specs.append(
            ServerSpec(
                name=name,
                port_id=port["id"],
                mac=port["mac_address"],
                mtu=net.get("mtu") or 1500,
                network=NetworkSpec(
                    network_id=net["id"],
                    network_type=NetworkType(net.get("provider:network_type") or "local"),
                    segmentation_id=net.get("provider:segmentation_id"),
                    physical_network=net.get("provider:physical_network"),
                    mtu=net.get("mtu") or 1500,
                ),
                server_id=server_id,
            )
        )

    async def create(workloads: Workloads) -> None:
        for spec in specs:
            await workloads.create(spec)

    _with_workloads(opts, uplinks, create)


def leased(topo: Topology, opts: Options, uplinks: dict[str, str]) -> set[str]:
    """The servers whose NIC has their port's IPv4 address (the DHCP lease applied)."""

    async def look(workloads: Workloads) -> set[str]:
        done = set()
        for name, server in topo.servers.items():
            state = await workloads.get(name)
            if any(a.split("/")[0] == server.address for a in state.addresses):
                done.add(name)
        return done

    return _with_workloads(opts, uplinks, look)


def delete_servers(topo: Topology, opts: Options, uplinks: dict[str, str]) -> list[str]:
    """Delete every server the demo made (namespace, then port); the problems met."""
    problems: list[str] = []

    async def delete(workloads: Workloads) -> None:
        for name in list(topo.servers):
            try:
                await workloads.delete(name)
            except Exception as exc:  # noqa: BLE001 - reported, the others still go
                problems.append(f"server {name}: {exc}")

    _with_workloads(opts, uplinks, delete)
    for server in topo.servers.values():
        api = topo.api(server.project)
        try:
            api.delete("ports", server.port["id"])
        except DemoError as exc:
            if " 404 " not in str(exc):
                problems.append(f"port of {server.name}: {exc}")
        finally:
            api.close()
    return problems


def netns_of(opts: Options, name: str) -> str:
    return f"{opts.fabric_prefix}vm-{name}"


def state_dir(opts: Options) -> Path:
    return opts.server_state_dir or DEFAULT_STATE_DIR
