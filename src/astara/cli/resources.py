"""``astara network|subnet|port|router|floating-ip|security-group …`` and ``astara floating …``.

The network API from the command line, for people without the ``openstack``
CLI; everything goes over HTTP through ``netclient``. Each command is a
function from (client, arguments) to an output: one resource (shown field by
field), rows (a table with the resource's columns), several titled row
sets, or nothing. One code path prints outputs, as rich tables or, with
``-f json``, as JSON. A name is accepted wherever an id is (found with
``?name=``; an ambiguous name is refused). Commands that make several
resources undo what they made when a later step fails.

Two commands follow nova-manage: ``network create --fixed-range`` (N VLAN
networks, one block of the range each) and ``floating create|delete|list``
(floating pools as external networks, one subnet per range).
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import json
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from astara.cli.netclient import (
    DEFAULT_URL,
    ApiError,
    CommandError,
    NetworkClient,
    Resource,
    resolve_url,
)

#: (header, path) pairs; a path is dotted (``external_gateway_info.network_id``)
#: and maps over lists (``fixed_ips.ip_address``)
Columns = tuple[tuple[str, str], ...]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
VLAN_IDS = (1, 4094)


@dataclass(frozen=True)
class Kind:
    """A collection as the CLI shows it."""

    command: str  # the command group: ``floating-ip``
    collection: str  # in URLs: ``floatingips``
    label: str  # in messages: ``floating IP``
    columns: Columns  # of ``list``
    key: str = "name"  # what, besides an id, names one


NETWORK = Kind(
    "network",
    "networks",
    "network",
    (
        ("ID", "id"),
        ("Name", "name"),
        ("Type", "provider:network_type"),
        ("Segment", "provider:segmentation_id"),
        ("External", "router:external"),
        ("Shared", "shared"),
        ("Subnets", "subnets"),
    ),
)
SUBNET = Kind(
    "subnet",
    "subnets",
    "subnet",
    (
        ("ID", "id"),
        ("Name", "name"),
        ("Network", "network_id"),
        ("CIDR", "cidr"),
        ("Gateway", "gateway_ip"),
        ("DHCP", "enable_dhcp"),
    ),
)
PORT = Kind(
    "port",
    "ports",
    "port",
    (
        ("ID", "id"),
        ("Name", "name"),
        ("Network", "network_id"),
        ("MAC", "mac_address"),
        ("Fixed IPs", "fixed_ips.ip_address"),
        ("Device owner", "device_owner"),
        ("Status", "status"),
    ),
)
ROUTER = Kind(
    "router",
    "routers",
    "router",
    (
        ("ID", "id"),
        ("Name", "name"),
        ("Status", "status"),
        ("External network", "external_gateway_info.network_id"),
        ("SNAT", "external_gateway_info.enable_snat"),
        ("Project", "project_id"),
    ),
)
FLOATING_IP = Kind(
    "floating-ip",
    "floatingips",
    "floating IP",
    (
        ("ID", "id"),
        ("Floating IP", "floating_ip_address"),
        ("Fixed IP", "fixed_ip_address"),
        ("Port", "port_id"),
        ("Network", "floating_network_id"),
        ("Router", "router_id"),
        ("Status", "status"),
    ),
    key="floating_ip_address",
)
SECURITY_GROUP = Kind(
    "security-group",
    "security_groups",
    "security group",
    (("ID", "id"), ("Name", "name"), ("Description", "description"), ("Project", "project_id")),
)
SECURITY_GROUP_RULE = Kind(
    "security-group-rule",
    "security_group_rules",
    "security group rule",
    (
        ("ID", "id"),
        ("Group", "security_group_id"),
        ("Direction", "direction"),
        ("Ethertype", "ethertype"),
        ("Protocol", "protocol"),
        ("Min port", "port_range_min"),
        ("Max port", "port_range_max"),
        ("Remote IP", "remote_ip_prefix"),
        ("Remote group", "remote_group_id"),
    ),
    key="id",
)
VLAN_NETWORK_COLUMNS: Columns = (
    ("Name", "network.name"),
    ("VLAN", "network.provider:segmentation_id"),
    ("CIDR", "subnet.cidr"),
    ("Gateway", "subnet.gateway_ip"),
    ("Network ID", "network.id"),
    ("Project", "network.project_id"),
)
POOL_COLUMNS: Columns = (
    ("Pool", "pool"),
    ("Range", "range"),
    ("Allocated", "allocated"),
    ("Network ID", "network_id"),
    ("Subnet ID", "subnet_id"),
)


# -- outputs -----------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """One resource: a Field/Value table, or the JSON object."""

    item: Resource


@dataclass(frozen=True)
class Rows:
    """Resources under ``columns``: a table, or the JSON list (under ``title`` among several)."""

    columns: Columns
    items: list[Resource]
    title: str = ""


Output = Record | Rows | tuple[Rows, ...] | None
Action = Callable[[NetworkClient, argparse.Namespace], Output]
Options = Callable[[argparse.ArgumentParser], None]
Builder = Callable[[NetworkClient, argparse.Namespace], Resource]
#: a PUT body from the arguments and the resource as it is now
Changer = Callable[[NetworkClient, argparse.Namespace, Resource], Resource]


def _pluck(value: Any, path: str) -> Any:
    for key in path.split("."):
        if isinstance(value, list):
            value = [item.get(key) if isinstance(item, dict) else None for item in value]
        elif isinstance(value, dict):
            value = value.get(key)
        else:
            return None
    return value


def _cell(value: Any, *, nested: bool = False) -> str:
    """A list one item a line, a dict as ``k=v, …``; deeper structure as compact JSON."""
    if value is None:
        return ""
    if nested and isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, list):
        return "\n".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v, nested=True)}" for k, v in value.items())
    return str(value)


def _table(rows: Rows) -> Table:
    table = Table(*(header for header, _ in rows.columns), title=rows.title or None)
    for item in rows.items:
        table.add_row(*(Text(_cell(_pluck(item, path))) for _, path in rows.columns))
    return table


def _record(record: Record) -> Table:
    table = Table("Field", "Value")
    for key in sorted(record.item):
        table.add_row(Text(key), Text(_cell(record.item[key])))
    return table


def _as_json(output: Record | Rows | tuple[Rows, ...]) -> Any:
    if isinstance(output, Record):
        return output.item
    if isinstance(output, Rows):
        return output.items
    return {rows.title: rows.items for rows in output}


def render(output: Output, fmt: str) -> None:
    """Print ``output`` on stdout: rich tables, or JSON with ``fmt == "json"``."""
    if output is None:
        return
    if fmt == "json":
        print(json.dumps(_as_json(output), indent=2, sort_keys=True))
        return
    # a pipe gets whole lines (ids unbroken); a terminal gets its width
    console = Console(width=None if sys.stdout.isatty() else 10_000, highlight=False)
    if isinstance(output, Record):
        console.print(_record(output))
    else:
        for rows in output if isinstance(output, tuple) else (output,):
            console.print(_table(rows))


# -- shared steps --------------------------------------------------------------------
class Undo:
    """Creates resources; if the ``with`` block fails, deletes them again, newest first."""

    def __init__(self, client: NetworkClient) -> None:
        self.client = client
        self.made: list[tuple[str, str]] = []

    def create(self, collection: str, body: Resource) -> Resource:
        resource = self.client.create(collection, body)
        self.made.append((collection, resource["id"]))
        return resource

    def __enter__(self) -> Undo:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or not self.made:
            return
        kept = []
        for collection, resource_id in reversed(self.made):
            try:
                self.client.delete(collection, resource_id)
            except ApiError as gone:
                if gone.status != 404:  # a network takes its subnets along
                    kept.append(f"{collection} {resource_id}")
            except CommandError:
                kept.append(f"{collection} {resource_id}")
        exc.add_note(
            f"left behind, delete them by hand: {', '.join(kept)}"
            if kept
            else f"nothing was kept: the {len(self.made)} resources made before were deleted"
        )


def _pick(args: argparse.Namespace, fields: Mapping[str, str]) -> Resource:
    """Body fields (key -> argument name) whose argument was given."""
    return {
        key: getattr(args, dest) for key, dest in fields.items() if getattr(args, dest) is not None
    }


NAMED = {"name": "name", "description": "description"}


def parse_cidr(text: str, what: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text)
    except ValueError as exc:
        raise CommandError(f"{what} {text!r} is not a network address: {exc}") from None


def subnet_body(network_id: str, cidr: str, what: str = "CIDR", **fields: Any) -> Resource:
    """A subnet of ``network_id``: ``ip_version`` from the CIDR, then ``fields`` as given."""
    network = parse_cidr(cidr, what)
    return {"network_id": network_id, "cidr": str(network), "ip_version": network.version} | fields


def _pairs(text: str, flag: str, keys: tuple[str, ...]) -> dict[str, str]:
    """``start=A,end=B`` -> {"start": "A", "end": "B"}, only ``keys`` allowed."""
    out = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in keys:
            raise CommandError(f"{flag} {text!r}: expected {','.join(k + '=…' for k in keys)}")
        out[key] = value
    return out


def _find(client: NetworkClient, kind: Kind, ref: str) -> Resource:
    return client.find(kind.collection, ref, key=kind.key, label=kind.label)


# -- generic verbs ---------------------------------------------------------------------
def _list(
    kind: Kind, by: Mapping[str, tuple[Kind, str]], client: NetworkClient, args: argparse.Namespace
) -> Output:
    filters: dict[str, list[str]] = {}
    for text in args.filter:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise CommandError(f"--filter {text!r}: expected KEY=VALUE")
        filters.setdefault(key, []).append(value)
    for dest, (of, key) in by.items():
        if getattr(args, dest) is not None:
            filters[key] = [_find(client, of, getattr(args, dest))["id"]]
    return Rows(kind.columns, client.list_resources(kind.collection, filters))


def _show(kind: Kind, client: NetworkClient, args: argparse.Namespace) -> Output:
    return Record(_find(client, kind, args.ref))


def _create(kind: Kind, build: Builder, client: NetworkClient, args: argparse.Namespace) -> Output:
    return Record(client.create(kind.collection, build(client, args)))


def _update(kind: Kind, change: Changer, client: NetworkClient, args: argparse.Namespace) -> Output:
    current = _find(client, kind, args.ref)
    body = change(client, args, current)
    if not body:
        raise CommandError(f"nothing to change: give an option (astara {kind.command} --help)")
    return Record(client.update(kind.collection, current["id"], body))


def _delete(kind: Kind, client: NetworkClient, args: argparse.Namespace) -> Output:
    found = [_find(client, kind, ref) for ref in args.refs]  # all resolve, or none goes
    for resource in found:
        client.delete(kind.collection, resource["id"])
    return None


class Group:
    """One command group (``astara port …``): its verbs, each with the common options."""

    def __init__(self, parts: Any, common: argparse.ArgumentParser, kind: Kind, help: str) -> None:
        self.kind = kind
        self.common = common
        self.commands: dict[str, argparse.ArgumentParser] = {}  # verb -> its parser
        self.verbs = parts.add_parser(kind.command, help=help).add_subparsers(
            dest="verb", required=True, metavar="VERB"
        )

    def verb(self, name: str, help: str, run: Action) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = self.verbs.add_parser(
            name, help=help, description=help, parents=[self.common]
        )
        cmd.set_defaults(handler=_invoke, run=run)
        self.commands[name] = cmd
        return cmd

    def crud(
        self,
        *,
        create: tuple[Options, Action] | None,
        update: tuple[Options, Changer] | None,
        list_by: Mapping[str, tuple[Kind, str]] | None = None,
    ) -> None:
        """list, show, create, set and delete, as the kind has them."""
        kind, label = self.kind, self.kind.label
        by = dict(list_by or {})
        cmd = self.verb("list", f"list {label}s", partial(_list, kind, by))
        cmd.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="only those whose KEY is VALUE (repeatable; Neutron's list filters)",
        )
        for dest, (of, _key) in by.items():
            cmd.add_argument(
                f"--{dest.replace('_', '-')}",
                metavar=of.label.upper().replace(" ", "_"),
                help=f"only those of this {of.label}",
            )
        self.verb("show", f"one {label}, every field", partial(_show, kind)).add_argument(
            "ref", metavar=kind.command.upper(), help=_ref_help(kind)
        )
        if create is not None:
            options, run = create
            options(self.verb("create", f"make a {label}", run))
        if update is not None:
            options, change = update
            self.changer("set", f"change a {label}", options, change)
        self.verb("delete", f"delete {label}s", partial(_delete, kind)).add_argument(
            "refs", nargs="+", metavar=kind.command.upper()
        )

    def changer(self, name: str, help: str, options: Options, change: Changer) -> None:
        cmd = self.verb(name, help, partial(_update, self.kind, change))
        cmd.add_argument("ref", metavar=self.kind.command.upper(), help=_ref_help(self.kind))
        options(cmd)


def _ref_help(kind: Kind) -> str:
    return "id" if kind.key == "id" else f"id or {kind.key.replace('_', ' ')}"


# -- options and bodies, per kind ------------------------------------------------------------
def _named_options(cmd: argparse.ArgumentParser, *, create: bool) -> None:
    if create:
        cmd.add_argument("name", nargs="?", metavar="NAME")
    else:
        cmd.add_argument("--name")
    cmd.add_argument("--description")


def _named(
    _client: NetworkClient, args: argparse.Namespace, _current: Resource | None = None
) -> Resource:
    return _pick(args, NAMED)


NETWORK_FIELDS = {
    **NAMED,
    "router:external": "external",
    "shared": "shared",
    "mtu": "mtu",
}
PROVIDER_FIELDS = {
    "provider:network_type": "provider_network_type",
    "provider:segmentation_id": "segment",
    "provider:physical_network": "physical_network",
}
#: nova-manage's options: they go with --fixed-range only
SEED_OPTIONS = {
    "--num-networks": "num_networks",
    "--network-size": "network_size",
    "--vlan-start": "vlan_start",
    "--label": "label",
}


def _network_options(cmd: argparse.ArgumentParser, *, create: bool) -> None:
    _named_options(cmd, create=create)
    switch: Any = "store_true" if create else argparse.BooleanOptionalAction
    cmd.add_argument("--external", action=switch, default=None, help="router:external")
    cmd.add_argument("--shared", action=switch, default=None, help="usable by every project")
    cmd.add_argument("--mtu", type=int)
    if not create:
        return
    cmd.add_argument("--provider-network-type", choices=("flat", "vlan", "vxlan", "local"))
    cmd.add_argument("--segment", type=int, metavar="ID", help="VLAN id or VXLAN VNI")
    cmd.add_argument("--physical-network", metavar="NAME")
    cmd.add_argument("--subnet", metavar="CIDR", help="also make a subnet of this range")
    seed = cmd.add_argument_group(
        "nova-manage style", "N VLAN networks, each with a block of one range"
    )
    seed.add_argument(
        "--fixed-range",
        metavar="CIDR",
        help="the range the networks' subnets are carved from, in order",
    )
    seed.add_argument("--num-networks", type=int, metavar="N", help="how many networks (default 1)")
    seed.add_argument(
        "--network-size",
        type=int,
        metavar="S",
        help="addresses per network, a power of two (default 256)",
    )
    seed.add_argument(
        "--vlan-start",
        type=int,
        metavar="V",
        help="VLAN id of the first network; the next get V+1, … (default 100)",
    )
    seed.add_argument(
        "--label", help="networks are named LABEL-0, LABEL-1, … (default: NAME, else net)"
    )


def plan_vlan_networks(
    fixed_range: str, count: int, size: int, vlan_start: int
) -> list[tuple[int, IPNetwork]]:
    """nova-manage's carving: (VLAN id, block) for each network, refused when it cannot be."""
    whole = parse_cidr(fixed_range, "--fixed-range")
    if count < 1:
        raise CommandError(f"--num-networks {count}: make at least one network")
    if size < 4 or size & (size - 1):
        raise CommandError(
            f"--network-size {size} is not a power of two of at least 4 "
            "(each network is a CIDR block: 4, 8, …, 64, 128, 256, …)"
        )
    if count * size > whole.num_addresses:
        raise CommandError(
            f"{count} networks of {size} addresses need {count * size}; "
            f"--fixed-range {whole} has {whole.num_addresses}"
        )
    last = vlan_start + count - 1
    if vlan_start < VLAN_IDS[0] or last > VLAN_IDS[1]:
        raise CommandError(
            f"VLAN ids {vlan_start}..{last} are not all within {VLAN_IDS[0]}..{VLAN_IDS[1]}"
        )
    prefix = whole.max_prefixlen - (size.bit_length() - 1)
    blocks: list[IPNetwork] = list(itertools.islice(whole.subnets(new_prefix=prefix), count))
    return [(vlan_start + i, block) for i, block in enumerate(blocks)]


def _network_create(client: NetworkClient, args: argparse.Namespace) -> Output:
    if args.fixed_range is not None:
        return _vlan_networks(client, args)
    stray = [flag for flag, dest in SEED_OPTIONS.items() if getattr(args, dest) is not None]
    if stray:
        raise CommandError(f"{', '.join(stray)}: only with --fixed-range")
    if not args.name:
        raise CommandError("give the network a NAME (or --fixed-range for nova-manage's networks)")
    with Undo(client) as undo:
        network = undo.create("networks", _pick(args, NETWORK_FIELDS | PROVIDER_FIELDS))
        if args.subnet is None:
            return Record(network)
        undo.create("subnets", subnet_body(network["id"], args.subnet, "--subnet", name=args.name))
    return Record(client.get("networks", network["id"]))


def _vlan_networks(client: NetworkClient, args: argparse.Namespace) -> Output:
    clash = [
        flag
        for flag, dest in (
            ("--provider-network-type", "provider_network_type"),
            ("--segment", "segment"),
            ("--subnet", "subnet"),
        )
        if getattr(args, dest) is not None
    ]
    if clash:
        raise CommandError(
            f"--fixed-range makes VLAN networks numbered from --vlan-start: drop {', '.join(clash)}"
        )
    plan = plan_vlan_networks(
        args.fixed_range,
        1 if args.num_networks is None else args.num_networks,
        256 if args.network_size is None else args.network_size,
        100 if args.vlan_start is None else args.vlan_start,
    )
    label = args.label or args.name or "net"
    common = _pick(args, {**NETWORK_FIELDS, "provider:physical_network": "physical_network"})
    made = []
    with Undo(client) as undo:
        for i, (vlan, block) in enumerate(plan):
            body = common | {
                "name": f"{label}-{i}",
                "provider:network_type": "vlan",
                "provider:segmentation_id": vlan,
            }
            network = undo.create("networks", body)
            subnet = undo.create(
                "subnets", subnet_body(network["id"], str(block), name=body["name"])
            )
            made.append({"network": client.get("networks", network["id"]), "subnet": subnet})
    return Rows(VLAN_NETWORK_COLUMNS, made)


def _subnet_options(cmd: argparse.ArgumentParser, *, create: bool) -> None:
    _named_options(cmd, create=create)
    if create:
        cmd.add_argument("--network", required=True, metavar="NETWORK", help="id or name")
        cmd.add_argument("--subnet-range", required=True, metavar="CIDR")
    cmd.add_argument("--gateway", metavar="IP", help="the gateway address, or none")
    cmd.add_argument("--dhcp", action=argparse.BooleanOptionalAction, default=None)
    cmd.add_argument(
        "--dns-nameserver",
        action="append",
        metavar="IP",
        help="repeatable; on set, replaces the list",
    )
    cmd.add_argument(
        "--allocation-pool",
        action="append",
        metavar="start=IP,end=IP",
        help="repeatable; on set, replaces the list",
    )


def _subnet_fields(
    _client: NetworkClient, args: argparse.Namespace, _current: Resource | None = None
) -> Resource:
    body = _pick(args, {**NAMED, "enable_dhcp": "dhcp", "dns_nameservers": "dns_nameserver"})
    if args.gateway is not None:
        body["gateway_ip"] = None if args.gateway.lower() == "none" else args.gateway
    if args.allocation_pool:
        body["allocation_pools"] = [
            _pairs(pool, "--allocation-pool", ("start", "end")) for pool in args.allocation_pool
        ]
    return body


def _subnet_create(client: NetworkClient, args: argparse.Namespace) -> Resource:
    network = _find(client, NETWORK, args.network)
    return subnet_body(
        network["id"], args.subnet_range, "--subnet-range", **_subnet_fields(client, args)
    )


def _port_options(cmd: argparse.ArgumentParser, *, create: bool) -> None:
    _named_options(cmd, create=create)
    if create:
        cmd.add_argument("--network", required=True, metavar="NETWORK", help="id or name")
        cmd.add_argument("--mac-address", metavar="MAC")
    cmd.add_argument(
        "--fixed-ip",
        action="append",
        metavar="subnet=SUBNET,ip-address=IP",
        help="repeatable; either part may be left out; on set, replaces the list",
    )
    cmd.add_argument("--device-id")
    cmd.add_argument("--device-owner")


def _port_fields(
    client: NetworkClient, args: argparse.Namespace, _current: Resource | None = None
) -> Resource:
    body = _pick(args, {**NAMED, "device_id": "device_id", "device_owner": "device_owner"})
    if args.fixed_ip:
        body["fixed_ips"] = []
        for text in args.fixed_ip:
            asked = _pairs(text, "--fixed-ip", ("subnet", "ip-address"))
            fixed = {"ip_address": asked["ip-address"]} if "ip-address" in asked else {}
            if "subnet" in asked:
                fixed["subnet_id"] = _find(client, SUBNET, asked["subnet"])["id"]
            body["fixed_ips"].append(fixed)
    return body


def _port_create(client: NetworkClient, args: argparse.Namespace) -> Resource:
    body = _port_fields(client, args) | _pick(args, {"mac_address": "mac_address"})
    return body | {"network_id": _find(client, NETWORK, args.network)["id"]}


def _router_options(cmd: argparse.ArgumentParser, *, create: bool) -> None:
    _named_options(cmd, create=create)
    gateway = cmd.add_mutually_exclusive_group()
    gateway.add_argument(
        "--external-gateway", metavar="NETWORK", help="the external network, id or name"
    )
    if not create:
        gateway.add_argument("--no-external-gateway", action="store_true", help="drop the gateway")
    snat = cmd.add_mutually_exclusive_group()
    snat.add_argument("--disable-snat", dest="snat", action="store_const", const=False)
    snat.add_argument("--enable-snat", dest="snat", action="store_const", const=True)


def _router_fields(
    client: NetworkClient, args: argparse.Namespace, current: Resource | None = None
) -> Resource:
    body = _pick(args, NAMED)
    if getattr(args, "no_external_gateway", False):
        body["external_gateway_info"] = {}
    elif args.external_gateway is not None or args.snat is not None:
        now = (current or {}).get("external_gateway_info") or {}
        network_id = (
            _find(client, NETWORK, args.external_gateway)["id"]
            if args.external_gateway is not None
            else now.get("network_id")
        )
        if network_id is None:
            raise CommandError("SNAT is a property of the gateway: give --external-gateway NETWORK")
        body["external_gateway_info"] = {"network_id": network_id} | _pick(
            args, {"enable_snat": "snat"}
        )
    return body


def _router_interface(action: str, client: NetworkClient, args: argparse.Namespace) -> Output:
    router = _find(client, ROUTER, args.ref)
    body = (
        {"subnet_id": _find(client, SUBNET, args.subnet)["id"]}
        if args.subnet is not None
        else {"port_id": _find(client, PORT, args.port)["id"]}
    )
    return Record(client.action(ROUTER.collection, router["id"], action, body))


def _floating_ip_options(cmd: argparse.ArgumentParser, *, create: bool) -> None:
    if create:
        cmd.add_argument("network", metavar="NETWORK", help="the external network, id or name")
        cmd.add_argument("--floating-ip-address", metavar="IP")
    cmd.add_argument("--port", metavar="PORT", help="associate with this port (id or name)")
    cmd.add_argument("--fixed-ip-address", metavar="IP", help="which address of the port")
    cmd.add_argument("--description")


def _floating_ip_fields(
    client: NetworkClient, args: argparse.Namespace, _current: Resource | None = None
) -> Resource:
    body = _pick(args, {"fixed_ip_address": "fixed_ip_address", "description": "description"})
    if args.port is not None:
        body["port_id"] = _find(client, PORT, args.port)["id"]
    return body


def _floating_ip_create(client: NetworkClient, args: argparse.Namespace) -> Resource:
    body = _floating_ip_fields(client, args) | _pick(
        args, {"floating_ip_address": "floating_ip_address"}
    )
    return body | {"floating_network_id": _find(client, NETWORK, args.network)["id"]}


def _security_group_rule_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("group", metavar="SECURITY_GROUP", help="id or name")
    direction = cmd.add_mutually_exclusive_group()
    direction.add_argument("--ingress", dest="direction", action="store_const", const="ingress")
    direction.add_argument("--egress", dest="direction", action="store_const", const="egress")
    cmd.add_argument("--ethertype", choices=("IPv4", "IPv6"))
    cmd.add_argument("--protocol", help="tcp, udp, icmp, a number, or any")
    cmd.add_argument("--dst-port", metavar="PORT[:PORT]")
    remote = cmd.add_mutually_exclusive_group()
    remote.add_argument("--remote-ip", metavar="CIDR")
    remote.add_argument("--remote-group", metavar="SECURITY_GROUP")
    cmd.add_argument("--description")


def _security_group_rule_create(client: NetworkClient, args: argparse.Namespace) -> Resource:
    group = _find(client, SECURITY_GROUP, args.group)
    body = _pick(
        args,
        {"ethertype": "ethertype", "remote_ip_prefix": "remote_ip", "description": "description"},
    )
    body |= {"security_group_id": group["id"], "direction": args.direction or "ingress"}
    if args.protocol is not None and args.protocol != "any":
        body["protocol"] = args.protocol
    if args.dst_port is not None:
        first, _, last = args.dst_port.partition(":")
        try:
            body["port_range_min"], body["port_range_max"] = int(first), int(last or first)
        except ValueError:
            raise CommandError(
                f"--dst-port {args.dst_port!r}: expected PORT or PORT:PORT"
            ) from None
    if args.remote_group is not None:
        body["remote_group_id"] = _find(client, SECURITY_GROUP, args.remote_group)["id"]
    return body


# -- floating pools, nova-manage style --------------------------------------------------
def _pool(client: NetworkClient, name: str) -> Resource | None:
    """The external network named ``name``; None if no network has the name."""
    named = client.list_resources("networks", {"name": name})
    external = [n for n in named if n.get("router:external")]
    if len(external) > 1:
        ids = ", ".join(n["id"] for n in external)
        raise CommandError(f"{len(external)} external networks are named {name!r} ({ids})")
    if named and not external:
        raise CommandError(
            f"network {name!r} exists and is not external (router:external): choose another --pool"
        )
    return external[0] if external else None


def floating_report(client: NetworkClient, pool_id: str | None = None) -> tuple[Rows, ...]:
    """The pools (one row per range; only ``pool_id`` if given) and, where the API serves
    them, the floating IPs."""
    pools = client.list_resources(
        "networks", {"router:external": "true"} | ({"id": pool_id} if pool_id else {})
    )
    ranges = (
        client.list_resources("subnets", {"network_id": [p["id"] for p in pools]}) if pools else []
    )
    try:
        floating: list[Resource] | None = client.list_resources("floatingips")
    except ApiError as exc:
        if exc.status != 404:
            raise
        floating = None  # an API without the floating IPs of L3 yet
    rows = []
    for pool in pools:
        mine: list[Resource | None] = [s for s in ranges if s["network_id"] == pool["id"]]
        for subnet in mine or [None]:
            block = None if subnet is None else ipaddress.ip_network(subnet["cidr"])
            used = (
                None
                if floating is None or block is None
                else sum(
                    f["floating_network_id"] == pool["id"]
                    and ipaddress.ip_address(f["floating_ip_address"]) in block
                    for f in floating
                )
            )
            rows.append(
                {
                    "pool": pool["name"],
                    "range": None if block is None else str(block),
                    "allocated": used,
                    "network_id": pool["id"],
                    "subnet_id": None if subnet is None else subnet["id"],
                }
            )
    report = Rows(POOL_COLUMNS, rows, "pools")
    if floating is None:
        return (report,)
    return report, Rows(FLOATING_IP.columns, floating, "floatingips")


def _floating_create(client: NetworkClient, args: argparse.Namespace) -> Output:
    block = parse_cidr(args.ip_range, "--ip-range")
    for taken in client.list_resources("subnets", {"router:external": "true"}):
        if ipaddress.ip_network(taken["cidr"]).overlaps(block):
            raise CommandError(
                f"--ip-range {block} overlaps the floating range {taken['cidr']} "
                f"(subnet {taken['id']})"
            )
    with Undo(client) as undo:
        pool = _pool(client, args.pool) or undo.create(
            "networks",
            {"name": args.pool, "router:external": True, "provider:network_type": "flat"},
        )
        undo.create(
            "subnets", subnet_body(pool["id"], str(block), name=args.pool, enable_dhcp=False)
        )
    return floating_report(client, pool["id"])[0]


#: the service's own ports that hold a floating range's addresses
ADDRESS_HOLDERS = ("network:floatingip", "network:router_gateway")


def _floating_delete(client: NetworkClient, args: argparse.Namespace) -> Output:
    block = parse_cidr(args.ip_range, "range")
    ranges = client.list_resources("subnets", {"cidr": str(block), "router:external": "true"})
    if args.pool is not None:
        pool = _pool(client, args.pool)
        ranges = [r for r in ranges if pool is not None and r["network_id"] == pool["id"]]
    if not ranges:
        where = f" in pool {args.pool!r}" if args.pool else ""
        raise CommandError(f"no floating range {block}{where}")
    if len(ranges) > 1:
        raise CommandError(f"{block} is a range of {len(ranges)} pools: name one with --pool")
    subnet_id = ranges[0]["id"]
    # Neutron refuses to delete a subnet these hold an address of; the API answers 409 for
    # other ports itself, and this keeps the same promise where it does not for these
    held = [
        ip["ip_address"]
        for port in client.list_resources("ports", {"fixed_ips": f"subnet_id={subnet_id}"})
        if port["device_owner"] in ADDRESS_HOLDERS
        for ip in port["fixed_ips"]
        if ip["subnet_id"] == subnet_id
    ]
    if held:
        raise CommandError(
            f"{block} is in use by floating IPs or router gateways ({', '.join(sorted(held))}): "
            "delete those floating IPs and clear those gateways first"
        )
    client.delete("subnets", subnet_id)
    return None


def _floating_list(client: NetworkClient, _args: argparse.Namespace) -> Output:
    return floating_report(client)


# -- wiring ---------------------------------------------------------------------------------
def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    api = common.add_argument_group("network API")
    api.add_argument("--url", help=f"its base URL (default: $ASTARA_URL, else {DEFAULT_URL})")
    api.add_argument("--project", help="act as this project (sent as X-Project-Id)")
    api.add_argument(
        "-f", "--format", choices=("table", "json"), default="table", help="output (default table)"
    )
    return common


def register(parts: Any) -> dict[str, Group]:
    """The command groups, by command: ``astara router …`` is joined by ``ctl``."""
    common = _common()

    network = Group(parts, common, NETWORK, "networks (and nova-manage's network create)")
    network.crud(
        create=(partial(_network_options, create=True), _network_create),
        update=(partial(_network_options, create=False), _changes(NETWORK_FIELDS)),
    )

    subnet = Group(parts, common, SUBNET, "subnets of networks")
    subnet.crud(
        create=(partial(_subnet_options, create=True), partial(_create, SUBNET, _subnet_create)),
        update=(partial(_subnet_options, create=False), _subnet_fields),
        list_by={"network": (NETWORK, "network_id")},
    )

    port = Group(parts, common, PORT, "ports on networks")
    port.crud(
        create=(partial(_port_options, create=True), partial(_create, PORT, _port_create)),
        update=(partial(_port_options, create=False), _port_fields),
        list_by={"network": (NETWORK, "network_id")},
    )

    router = Group(parts, common, ROUTER, "routers, their interfaces and gateways")
    router.crud(
        create=(
            partial(_router_options, create=True),
            partial(_create, ROUTER, _router_fields),
        ),
        update=(partial(_router_options, create=False), _router_fields),
    )
    for verb, action, help in (
        ("add-interface", "add_router_interface", "attach a subnet or a port to a router"),
        ("remove-interface", "remove_router_interface", "detach a subnet or a port"),
    ):
        cmd = router.verb(verb, help, partial(_router_interface, action))
        cmd.add_argument("ref", metavar="ROUTER", help="id or name")
        which = cmd.add_mutually_exclusive_group(required=True)
        which.add_argument("--subnet", metavar="SUBNET", help="id or name")
        which.add_argument("--port", metavar="PORT", help="id or name")

    floating_ip = Group(parts, common, FLOATING_IP, "floating IPs, one by one")
    floating_ip.crud(
        create=(
            partial(_floating_ip_options, create=True),
            partial(_create, FLOATING_IP, _floating_ip_create),
        ),
        update=(partial(_floating_ip_options, create=False), _floating_ip_fields),
        list_by={"network": (NETWORK, "floating_network_id")},
    )
    floating_ip.changer(
        "unset",
        "dissociate a floating IP from its port",
        _unset_options,
        _changes({}, port_id=None),
    )

    group = Group(parts, common, SECURITY_GROUP, "security groups")
    group.crud(
        create=(partial(_named_options, create=True), partial(_create, SECURITY_GROUP, _named)),
        update=(partial(_named_options, create=False), _named),
    )
    rule = Group(parts, common, SECURITY_GROUP_RULE, "rules of security groups")
    rule.crud(
        create=(
            _security_group_rule_options,
            partial(_create, SECURITY_GROUP_RULE, _security_group_rule_create),
        ),
        update=None,
        list_by={"security_group": (SECURITY_GROUP, "security_group_id")},
    )

    _register_floating(parts, common)
    return {g.kind.command: g for g in (network, subnet, port, router, floating_ip, group, rule)}


def _changes(fields: Mapping[str, str], **fixed: Any) -> Changer:
    """The PUT body of the given arguments (key -> argument name), plus ``fixed`` values."""
    return lambda _client, args, _current: _pick(args, fields) | fixed


def _unset_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--port", action="store_true", required=True, help="drop the association")


def _register_floating(parts: Any, common: argparse.ArgumentParser) -> None:
    pools = Group(
        parts,
        common,
        Kind("floating", "networks", "floating pool", POOL_COLUMNS),
        "floating IP pools by range (nova-manage floating)",
    )
    create = pools.verb(
        "create", "add a range to a pool, making the pool if needed", _floating_create
    )
    create.add_argument("--ip-range", required=True, metavar="CIDR")
    create.add_argument(
        "--pool",
        default="public",
        help="the external network (default public; made flat if missing)",
    )
    delete = pools.verb(
        "delete", "remove a range (refused while addresses are in use)", _floating_delete
    )
    delete.add_argument("ip_range", metavar="CIDR")
    delete.add_argument("--pool", help="the pool, when several have this range")
    pools.verb("list", "pools, their ranges and allocated floating IPs", _floating_list)


def _invoke(args: argparse.Namespace) -> int:
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        with NetworkClient(resolve_url(args.url), project=args.project) as client:
            output = args.run(client, args)
    except CommandError as exc:
        for line in (str(exc), *getattr(exc, "__notes__", ())):
            print(f"astara: {line}", file=sys.stderr)
        return 1
    render(output, args.format)
    return 0
