"""``astara server create|list|show|delete|exec``: namespaces that play VMs, for demos and tests.

A server is a port in the network API (``device_owner`` ``compute:astara``,
``device_id`` the server's id, ``name`` the server's name) and, on this host,
what ``astara.network.workloads`` makes of it: a namespace plugged into the
network's bridge, taking its address by DHCP, or configuring the port's
fixed address itself (``--fixed-ip``). This module owns the wiring only: it
reads the network, subnets and port over HTTP (``netclient``), builds the
fabric for the embedded default, and turns outcomes into output and exit
codes. The network API may be ``astara network-api`` or a real Neutron (no-auth):
Neutron binds no port to this host (no L2 agent), so the port stays DOWN, which
does not matter: the namespace is plugged by the fabric, not by Neutron.

The embedded default fabric: links and namespaces prefixed ``astara-``
(``--fabric-prefix``), VXLAN networks on a loopback underlay (``--vxlan-local``,
127.0.0.1: every port of a network is on this host), flat and VLAN networks
only on the NICs ``--uplink PHYSNET=NIC`` names; a network the fabric cannot
build is refused with the fabric's own message.

Invariants: ``create`` leaves either a whole server (port and namespace) or
nothing — a failure after the port was made deletes it again and says so;
every expected failure is one ``astara: …`` line on stderr and exit code 1,
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import socket
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from astara.cli.fabric_options import FabricOptionError, add_fabric_options, fabric_from_args
from astara.cli.netclient import (
    DEFAULT_URL,
    ApiError,
    CommandError,
    NetworkClient,
    Resource,
    resolve_url,
)
from astara.cli.resources import Output, Record, Rows, render
from astara.fabric import (
    FabricError,
    FabricInvalidError,
    NetworkSpec,
    NetworkType,
)
from astara.network.workloads import (
    DEFAULT_STATE_DIR,
    FixedConfig,
    IPAddress,
    IPInterface,
    ServerSpec,
    ServerState,
    WorkloadError,
    Workloads,
    check_name,
)

T = TypeVar("T")
DEVICE_OWNER = "compute:astara"
COLUMNS = (
    ("Name", "name"),
    ("ID", "id"),
    ("Network", "network_id"),
    ("Mode", "mode"),
    ("Addresses", "addresses"),
    ("Status", "status"),
)


# -- wiring --------------------------------------------------------------------------
def _with_workloads(args: argparse.Namespace, work: Callable[[Workloads], Awaitable[T]]) -> T:
    """Run ``work`` against the embedded default fabric, in one event loop."""

    async def run() -> T:
        try:
            made = fabric_from_args(args)
        except FabricOptionError as exc:
            raise CommandError(str(exc)) from None
        async with made as fabric:
            workloads = Workloads(
                fabric=fabric, prefix=args.fabric_prefix, state_dir=args.state_dir
            )
            return await work(workloads)

    return asyncio.run(run())


def _client(args: argparse.Namespace) -> NetworkClient:
    return NetworkClient(resolve_url(args.url), project=args.project)


def _view(state: ServerState) -> Resource:
    server = state.server
    return {
        "name": server.name,
        "id": server.server_id,
        "namespace": server.netns,
        "network_id": server.network_id,
        "port_id": server.port_id,
        "mac_address": server.mac,
        "mtu": server.mtu,
        "mode": server.mode.value,
        "status": state.status,
        "problems": list(state.problems),
        "addresses": list(state.addresses),
        "gateways": list(state.gateways),
        "dns_nameservers": list(state.dns),
        "dhcp_client_pid": state.client_pid,
        "lease": dict(state.lease) if state.lease is not None else None,
        "created_at": server.created_at,
    }


# -- create --------------------------------------------------------------------------
def network_spec(network: Resource) -> NetworkSpec:
    """The fabric's view of a network resource (``provider:*`` and ``mtu``).

    Neutron (and the network API) show ``provider:*`` to admins only: a
    network seen without them cannot be plugged, and is refused rather than
    taken for a ``local`` one (which would leave the server cut off).
    """
    if "provider:network_type" not in network:
        raise CommandError(
            f"network {network['id']} is shown without its segmentation (provider:network_type,"
            " visible to admins only): run astara server without --project, or as an admin"
        )
    kind = network.get("provider:network_type") or "local"
    try:
        NetworkType(kind)
    except ValueError:
        raise CommandError(
            f"network {network['id']} is of type {kind!r}, which this host cannot carry"
        ) from None
    return NetworkSpec(
        network_id=network["id"],
        network_type=NetworkType(kind),
        segmentation_id=network.get("provider:segmentation_id"),
        physical_network=network.get("provider:physical_network"),
        mtu=network.get("mtu") or 1500,
    )


def fixed_config(client: NetworkClient, port: Resource) -> FixedConfig:
    """The port's fixed IPs with their subnets' prefix lengths, gateways and DNS servers."""
    addresses: list[IPInterface] = []
    gateways: list[IPAddress] = []
    dns: list[IPAddress] = []
    for fixed_ip in port["fixed_ips"]:
        subnet = client.get("subnets", fixed_ip["subnet_id"])
        network = ipaddress.ip_network(subnet["cidr"])
        addresses.append(ipaddress.ip_interface(f"{fixed_ip['ip_address']}/{network.prefixlen}"))
        gateway = subnet.get("gateway_ip")
        if gateway and all(g.version != network.version for g in gateways):
            gateways.append(ipaddress.ip_address(gateway))
        for server in subnet.get("dns_nameservers") or ():
            address = ipaddress.ip_address(server)
            if address not in dns:
                dns.append(address)
    return FixedConfig(tuple(addresses), tuple(gateways), tuple(dns))


def _create(args: argparse.Namespace) -> Output:
    server_id = str(uuid.uuid4())
    name = check_name(args.name or f"server-{server_id[:8]}")
    fixed_ips = []
    for text in args.fixed_ip:
        try:
            fixed_ips.append(str(ipaddress.ip_address(text)))
        except ValueError as exc:
            raise CommandError(f"--fixed-ip {text!r}: {exc}") from None
    if args.wait is not None and args.wait < 0:
        raise CommandError("--wait takes a number of seconds, 0 or more")

    async def taken(workloads: Workloads) -> bool:
        return workloads.record(name) is not None

    if _with_workloads(args, taken):
        raise CommandError(f"a server named {name!r} exists")
    with _client(args) as client:
        network = client.find("networks", args.network, label="network")
        spec = network_spec(network)
        body: Resource = {
            "network_id": network["id"],
            "name": name,
            "device_owner": DEVICE_OWNER,
            "device_id": server_id,
            "binding:host_id": socket.gethostname(),
        }
        if fixed_ips:
            body["fixed_ips"] = [{"ip_address": address} for address in fixed_ips]
        port = client.create("ports", body)
        try:
            server = ServerSpec(
                name=name,
                port_id=port["id"],
                mac=port["mac_address"],
                mtu=spec.mtu,
                network=spec,
                server_id=server_id,
                fixed=fixed_config(client, port) if fixed_ips else None,
            )

            async def create(workloads: Workloads) -> ServerState:
                await workloads.create(server, wait_for_address=args.wait)
                return await workloads.get(name)

            state = _with_workloads(args, create)
        except BaseException as exc:
            _delete_port(client, port["id"], exc)
            raise
    return Record(_view(state))


def _delete_port(client: NetworkClient, port_id: str, exc: BaseException) -> None:
    """Undo the port of a failed ``create``, and say so on ``exc``."""
    try:
        client.delete("ports", port_id)
    except ApiError as failed:
        if failed.status != 404:
            exc.add_note(f"port {port_id} is left behind, delete it by hand: {failed}")
            return
    except CommandError as failed:
        exc.add_note(f"port {port_id} is left behind, delete it by hand: {failed}")
        return
    exc.add_note(f"nothing was kept: port {port_id} was deleted again")


# -- the other verbs ------------------------------------------------------------------
def _list(args: argparse.Namespace) -> Output:
    async def states(workloads: Workloads) -> list[ServerState]:
        return await workloads.list()

    return Rows(COLUMNS, [_view(state) for state in _with_workloads(args, states)])


def _show(args: argparse.Namespace) -> Output:
    async def state(workloads: Workloads) -> ServerState:
        return await workloads.get(args.name)

    return Record(_view(_with_workloads(args, state)))


def _delete(args: argparse.Namespace) -> Output:
    async def delete(workloads: Workloads) -> Any:
        return await workloads.delete(args.name)

    check_name(args.name)
    server = _with_workloads(args, delete)
    with _client(args) as client:
        if server is not None:
            port_ids = [server.port_id]
        else:  # no record (a reboot empties /run): the port is found by name and owner
            ports = client.list_resources(
                "ports", {"name": args.name, "device_owner": DEVICE_OWNER}
            )
            if not ports:
                raise CommandError(f"no server named {args.name!r}")
            port_ids = [port["id"] for port in ports]
        for port_id in port_ids:
            try:
                client.delete("ports", port_id)
            except ApiError as exc:
                if exc.status != 404:
                    raise CommandError(
                        f"server {args.name!r} is gone from this host, but its port {port_id}"
                        f" could not be deleted: {exc}"
                    ) from None
    return None


def _exec(args: argparse.Namespace) -> int:
    async def argv(workloads: Workloads) -> list[str]:
        await workloads.get(args.name)  # WorkloadNotFoundError
        return workloads.exec_argv(args.name, args.command)

    command = _with_workloads(args, argv)
    sys.stdout.flush()
    code = subprocess.run(command, check=False).returncode
    return code if code >= 0 else 128 - code


# -- registration -----------------------------------------------------------------------
def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    api = common.add_argument_group("network API")
    api.add_argument("--url", help=f"its base URL (default: $ASTARA_URL, else {DEFAULT_URL})")
    api.add_argument("--project", help="act as this project (sent as X-Project-Id)")
    host = common.add_argument_group("this host")
    host.add_argument(
        "--fabric-prefix",
        default="astara-",
        help="prefix of the links and namespaces made (default astara-; at most 8 characters)",
    )
    host.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"where servers are recorded (default {DEFAULT_STATE_DIR})",
    )
    add_fabric_options(host)
    common.add_argument(
        "-f", "--format", choices=("table", "json"), default="table", help="output (default table)"
    )
    return common


def register(parts: Any) -> None:
    common = _common()
    verbs = parts.add_parser(
        "server", help="namespaces that play VMs on tenant networks (demos and tests)"
    ).add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help: str, run: Callable[[argparse.Namespace], Any]) -> Any:
        cmd = verbs.add_parser(name, help=help, description=help, parents=[common])
        cmd.set_defaults(handler=_invoke, run=run)
        return cmd

    create = verb("create", "make a server: a port, and a namespace plugged with it", _create)
    create.add_argument("--network", required=True, help="id or name")
    create.add_argument("--name", help="[a-z0-9-], at most 32 characters (default server-<id>)")
    create.add_argument(
        "--fixed-ip",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="configure this address of the network itself, no DHCP (repeatable)",
    )
    create.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="wait this long for the DHCP lease (no lease: the server is removed, exit 1)",
    )
    verb("list", "the servers of this host", _list)
    verb("show", "one server, with its addresses, routes, DNS and lease", _show).add_argument(
        "name", metavar="NAME"
    )
    verb("delete", "delete a server and its port", _delete).add_argument("name", metavar="NAME")
    run = verb("exec", "run a command in a server; its exit code", _exec)
    run.add_argument("name", metavar="NAME")
    run.add_argument(
        "command", nargs="+", metavar="CMD", help="after --: the command and its arguments"
    )


def _invoke(args: argparse.Namespace) -> int:
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        output = args.run(args)
    except (CommandError, FabricError, WorkloadError, OSError) as exc:
        hint = (
            ["name the host NIC with --uplink PHYSNET=NIC"]
            if isinstance(exc, FabricInvalidError) and "uplinks" in str(exc)
            else []
        )
        for line in (str(exc), *hint, *getattr(exc, "__notes__", ())):
            print(f"astara: {line}", file=sys.stderr)
        return 1
    if isinstance(output, int):
        return output
    render(output, args.format)
    return 0
