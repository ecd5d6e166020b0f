"""Ports: MAC, fixed IPs (IPAM), device, binding host, security groups, address pairs.

Fixed IPs: asked for by subnet and/or address, or chosen: one address from
the network's first IPv4 subnet with room, plus an address in every IPv6
subnet (EUI-64 from the MAC where the subnet is SLAAC or stateless, else the
next free one). Allocations are rows keyed by (subnet, address), so an
address is never given twice: each is inserted with ``ON CONFLICT DO
NOTHING`` and an address found taken (by another process, or a request that
named it) is skipped for the next one; no lock is held on the subnet. A
process's threads take addresses in order from the subnet's ``ipam.Cursor``,
so they do not try the same one.

Creating a port (``create_view``, the API's hottest write) is SQLAlchemy Core:
one read of the network, its subnets and the project's default security group,
one insert of the port, one per address; the answer is built from what was
inserted, not read back (decision 14). The rest of the module is ORM.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol

from sqlalchemy import Connection, String, Table, bindparam, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from astara.network import ipam
from astara.network.attributes import (
    STANDARD,
    Attr,
    anything,
    boolean,
    identifier,
    list_of,
    mac_address,
    string,
)
from astara.network.context import Context
from astara.network.db.models import (
    FloatingIP,
    IPAllocation,
    Network,
    Port,
    SecurityGroup,
    Subnet,
    now,
)
from astara.network.errors import BadRequest, Conflict, ExhaustedError, NotFound
from astara.network.resources.security_groups import default_group_id, ensure_default_group
from astara.network.store import (
    apply_standard,
    bump,
    load_owned,
    new_id,
    owned_rows,
    owner,
    standard_view,
)

ROUTER_OWNERS = ("network:router_interface", "network:router_gateway", "network:floatingip")
_AUTO_V6 = ("slaac", "dhcpv6-stateless")
_PROBES = 8  # addresses tried after the cursor before reading the whole subnet
_JUMP = (16, 64)  # after two taken in a row, the cursor skips ahead 16 + [0, 64) addresses

_PORTS: Table = Port.__table__  # type: ignore[assignment]
_ALLOCATIONS: Table = IPAllocation.__table__  # type: ignore[assignment]
_NETWORKS: Table = Network.__table__  # type: ignore[assignment]
_SUBNETS: Table = Subnet.__table__  # type: ignore[assignment]
_GROUPS: Table = SecurityGroup.__table__  # type: ignore[assignment]

# What a port create reads, in one statement: the network, the project's default
# security group (whether it exists) and the network's subnets (one row each, in
# the order of ``Network.subnets``; one row of NULLs when it has none).
_NETWORK_FOR_PORT = (
    select(
        _NETWORKS.c.id,
        _NETWORKS.c.project_id,
        _NETWORKS.c.shared,
        _NETWORKS.c.external,
        _NETWORKS.c.port_security_enabled,
        select(_GROUPS.c.id)
        .where(_GROUPS.c.id == bindparam("group_id"))
        .scalar_subquery()
        .label("default_group"),
        _SUBNETS.c.id.label("subnet_id"),
        _SUBNETS.c.ip_version,
        _SUBNETS.c.cidr,
        _SUBNETS.c.gateway_ip,
        _SUBNETS.c.ipv6_address_mode,
        _SUBNETS.c.allocation_pools,
    )
    .select_from(_NETWORKS.outerjoin(_SUBNETS, _SUBNETS.c.network_id == _NETWORKS.c.id))
    .where(_NETWORKS.c.id == bindparam("network_id"))
    .order_by(_SUBNETS.c.created_at)
)
_PORT_INSERT = insert(_PORTS)
_MAC_IN_USE = select(_PORTS.c.id).where(
    _PORTS.c.network_id == bindparam("network_id"), _PORTS.c.mac_address == bindparam("mac")
)
_GROUPS_NAMED = select(_GROUPS.c.id, _GROUPS.c.project_id, _GROUPS.c.shared).where(
    _GROUPS.c.id.in_(bindparam("ids", expanding=True))
)
_TAKEN = select(_ALLOCATIONS.c.ip_address).where(_ALLOCATIONS.c.subnet_id == bindparam("subnet_id"))
# An allocation that refuses a taken address without failing the transaction: it
# returns a row only if it inserted one (psycopg's rowcount says -1 either way). On
# PostgreSQL it waits for a transaction that inserted the same address and has not
# ended yet, then answers for good: what an address asked for by name needs.
_ALLOCATION_INSERT = {
    "postgresql": postgresql.insert(_ALLOCATIONS)
    .on_conflict_do_nothing(index_elements=["subnet_id", "ip_address"])
    .returning(_ALLOCATIONS.c.position),
    "sqlite": sqlite.insert(_ALLOCATIONS)
    .on_conflict_do_nothing(index_elements=["subnet_id", "ip_address"])
    .returning(_ALLOCATIONS.c.position),
}
# An address the service picks need not wait: on PostgreSQL the insert first takes a
# transaction-scoped advisory lock named after the address (a hash: a clash only
# skips an address), without waiting, and inserts nothing when another transaction
# holds it (another process is giving that address out now), so the picker moves on
# at once. SQLite has one writer: nothing is ever in flight.
_ADVISORY_CLASS = 0x49504131  # "IPA1": the first of the lock's two keys, this use's own
_ALLOCATION_COLUMNS = ("subnet_id", "ip_address", "port_id", "network_id", "position")
_PICKED_INSERT = {
    "postgresql": postgresql.insert(_ALLOCATIONS)
    .from_select(
        list(_ALLOCATION_COLUMNS),
        select(
            *(bindparam(name, type_=_ALLOCATIONS.c[name].type) for name in _ALLOCATION_COLUMNS)
        ).where(
            func.pg_try_advisory_xact_lock(
                _ADVISORY_CLASS,
                func.hashtext(
                    bindparam("subnet_id", type_=String)
                    + " "
                    + bindparam("ip_address", type_=String)
                ),
            )
        ),
    )
    .on_conflict_do_nothing(index_elements=["subnet_id", "ip_address"])
    .returning(_ALLOCATIONS.c.position),
    "sqlite": _ALLOCATION_INSERT["sqlite"],
}
_PLAIN_ALLOCATION_INSERT = insert(_ALLOCATIONS)


def _inserter(conn: Connection, statement: Any, values: dict[str, Any]) -> Callable[[str], bool]:
    """Insert the allocation ``values`` at an address with ``statement``: True if inserted."""

    def insert(address: str) -> bool:
        return conn.execute(statement, {**values, "ip_address": address}).first() is not None

    return insert


class SubnetLike(Protocol):
    """What allocating needs of a subnet: its ORM row, or a ``SubnetInfo``."""

    @property
    def id(self) -> str: ...
    @property
    def network_id(self) -> str: ...
    @property
    def ip_version(self) -> int: ...
    @property
    def cidr(self) -> str: ...
    @property
    def gateway_ip(self) -> str | None: ...
    @property
    def ipv6_address_mode(self) -> str | None: ...
    @property
    def allocation_pools(self) -> list[Any]: ...


class NetworkLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def subnets(self) -> Sequence[SubnetLike]: ...


@dataclass(frozen=True)
class SubnetInfo:
    id: str
    network_id: str
    ip_version: int
    cidr: str
    gateway_ip: str | None
    ipv6_address_mode: str | None
    allocation_pools: list[Any]


@dataclass(frozen=True)
class NetworkInfo:
    """The network as a port create reads it (``_NETWORK_FOR_PORT``)."""

    id: str
    project_id: str
    shared: bool
    external: bool
    port_security_enabled: bool
    default_group: str | None
    subnets: list[SubnetInfo]


def new_mac() -> str:
    return "fa:16:3e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def _fixed_ips_clauses(wanted: Sequence[str]) -> list[Any]:
    """``fixed_ips=subnet_id=…``/``ip_address=…`` filters as SQL (one clause: a port with an
    allocation matching any of them), so a lookup of the router ports on one subnet reads
    those ports, not every router port (the orchestrator asks it for most port events: the
    whole table per event made 1,000 routers O(N^2)). Nothing when a value is anything
    else (``ip_address_substr``, or malformed: the view filter says so); the views are
    still filtered as before, this only narrows."""
    subnets: list[str] = []
    addresses: list[str] = []
    for value in wanted:
        field, _, text = value.partition("=")
        if field == "subnet_id" and text:
            subnets.append(text)
        elif field == "ip_address" and text:
            addresses.append(text)
        else:
            return []
    if not subnets and not addresses:
        return []
    match = select(IPAllocation.port_id).where(
        IPAllocation.subnet_id.in_(subnets) | IPAllocation.ip_address.in_(addresses)
    )
    return [Port.id.in_(match)]


class Ports:
    """See the module docstring. ``_cursors``: per subnet, the last address handed out (a hint)."""

    name = "port"
    collection = "ports"
    attributes = (
        *STANDARD,
        Attr("network_id", identifier("network_id"), put=False, required=True),
        Attr("admin_state_up", boolean("admin_state_up")),
        Attr("mac_address", mac_address("mac_address")),
        Attr("fixed_ips", anything("fixed_ips")),
        Attr("device_id", string("device_id")),
        Attr("device_owner", string("device_owner")),
        Attr("binding:host_id", string("binding:host_id")),
        Attr("binding:vnic_type", string("binding:vnic_type")),
        Attr("binding:profile", anything("binding:profile")),
        Attr("security_groups", list_of("security_groups", identifier("security_groups"))),
        Attr("allowed_address_pairs", anything("allowed_address_pairs")),
        Attr("port_security_enabled", boolean("port_security_enabled")),
        Attr("extra_dhcp_opts", list_of("extra_dhcp_opts", anything("extra_dhcp_opts"))),
    )

    def __init__(self) -> None:
        self._cursors: dict[str, ipam.Cursor] = {}

    def create_view(self, session: Session, ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
        """Insert the port described by ``body`` (SQLAlchemy Core); return its view.

        The same rules, checks (in the same order) and rows as the ORM would
        make, without its unit of work: see the module docstring.
        """
        conn = session.connection()
        refused: BadRequest | None = None
        try:
            project_id = owner(ctx, body)
        except BadRequest as exc:  # reported after the network's and MAC's errors, as before
            project_id, refused = ctx.project_id, exc
        asked_groups = body.get("security_groups")
        network = self._network(conn, ctx, body["network_id"], default_group_id(project_id))
        mac = body.get("mac_address") or self.unique_mac(session, network.id)
        if (
            body.get("mac_address")
            and conn.execute(_MAC_IN_USE, {"network_id": network.id, "mac": mac}).first()
        ):
            raise Conflict(
                f"Unable to complete operation for network {network.id}. The mac address {mac} is in use.",
                type="MacAddressInUse",
            )
        if refused is not None:
            raise refused
        stamp = now()
        port = SimpleNamespace(
            id=new_id(),
            project_id=project_id,
            name=body.get("name", ""),
            description=body.get("description", ""),
            tags=body.get("tags", []),
            created_at=stamp,
            updated_at=stamp,
            revision_number=0,
            network_id=network.id,
            mac_address=mac,
            admin_state_up=body.get("admin_state_up", True),
            status="DOWN",
            device_id=body.get("device_id", ""),
            device_owner=body.get("device_owner", ""),
            host_id=body.get("binding:host_id", ""),
            allowed_address_pairs=self._pairs(body.get("allowed_address_pairs", [])),
            port_security_enabled=body.get("port_security_enabled", network.port_security_enabled),
        )
        if asked_groups is not None:
            port.security_groups = self._asked_groups(conn, ctx, port, asked_groups)
        elif not port.port_security_enabled or port.device_owner.startswith("network:"):
            port.security_groups = []
        elif network.default_group is not None:
            port.security_groups = [network.default_group]
        else:
            port.security_groups = [ensure_default_group(session, project_id)]
        conn.execute(_PORT_INSERT, vars(port))
        requested = body.get("fixed_ips")
        wanted = (
            self.requested(session, network, requested)
            if requested is not None
            else self.defaults(network)
        )
        port.fixed_ips = [
            SimpleNamespace(subnet_id=subnet_id, ip_address=address)
            for subnet_id, address in self._allocate_rows(
                conn,
                network_id=network.id,
                port_id=port.id,
                mac=mac,
                device_owner=port.device_owner,
                wanted=wanted,
            )
        ]
        return self.view(port, ctx)  # type: ignore[arg-type]

    def create(self, session: Session, ctx: Context, body: dict[str, Any]) -> Port:
        """The ORM face of ``create_view`` (the service calls that one)."""
        made = session.get(Port, self.create_view(session, ctx, body)["id"])
        assert made is not None
        return made

    @staticmethod
    def _network(conn: Connection, ctx: Context, network_id: str, group_id: str) -> NetworkInfo:
        """The network a port is made on (NotFound unless the caller owns it, it is shared,
        or the caller is an admin), its subnets and whether ``group_id`` exists."""
        rows = conn.execute(_NETWORK_FOR_PORT, {"network_id": network_id, "group_id": group_id})
        found = rows.all()
        if not found or not (ctx.owns(found[0].project_id) or found[0].shared):
            raise NotFound.of("network", network_id)
        first = found[0]
        return NetworkInfo(
            id=first.id,
            project_id=first.project_id,
            shared=first.shared,
            external=first.external,
            port_security_enabled=first.port_security_enabled,
            default_group=first.default_group,
            subnets=[
                SubnetInfo(
                    id=r.subnet_id,
                    network_id=first.id,
                    ip_version=r.ip_version,
                    cidr=r.cidr,
                    gateway_ip=r.gateway_ip,
                    ipv6_address_mode=r.ipv6_address_mode,
                    allocation_pools=r.allocation_pools,
                )
                for r in found
                if r.subnet_id is not None
            ],
        )

    @staticmethod
    def _asked_groups(conn: Connection, ctx: Context, port: Any, asked: list[str]) -> list[str]:
        """The security groups a create names: each must exist and be visible."""
        groups = {g.id: g for g in conn.execute(_GROUPS_NAMED, {"ids": list(asked)})}
        return Ports._checked_groups(ctx, port, asked, groups.get)

    @staticmethod
    def _checked_groups(
        ctx: Context, port: Any, asked: list[str], find: Callable[[str], Any]
    ) -> list[str]:
        """``asked``, without repeats, once each group ``find`` gives is visible to ``ctx`` and
        the port has port security (Neutron's rules)."""
        for group_id in asked:
            group = find(group_id)
            if group is None or not (ctx.owns(group.project_id) or group.shared):
                raise NotFound.of("security_group", group_id)
        if asked and not port.port_security_enabled:
            raise Conflict(
                f"Port {port.id} has no port security: security groups cannot be applied.",
                type="PortSecurityAndIPRequiredForSecurityGroups",
            )
        return list(dict.fromkeys(asked))

    @staticmethod
    def _groups(session: Session, ctx: Context, port: Port, asked: list[str] | None) -> list[str]:
        """The port's security groups: those asked for (each must exist and be visible),
        else the project's default group -- for ports with port security that the
        service does not own (Neutron's rule)."""
        if asked is None:
            if not port.port_security_enabled or port.device_owner.startswith("network:"):
                return []
            return [ensure_default_group(session, port.project_id)]
        return Ports._checked_groups(
            ctx, port, asked, lambda group_id: session.get(SecurityGroup, group_id)
        )

    def service_port(
        self,
        session: Session,
        *,
        network_id: str,
        device_id: str,
        device_owner: str,
        project_id: str = "",
    ) -> Port:
        """A port the service makes for itself (a router's gateway or interface, a floating
        IP's): no port security, no project unless given, added to the session."""
        port = Port(
            id=new_id(),
            project_id=project_id,
            network_id=network_id,
            mac_address=self.unique_mac(session, network_id),
            device_id=device_id,
            device_owner=device_owner,
            port_security_enabled=False,
        )
        session.add(port)
        return port

    @staticmethod
    def unique_mac(session: Session, network_id: str) -> str:
        """A fresh ``fa:16:3e:…`` MAC; not looked up: a clash (one in 16 million per pair)
        fails the (network, MAC) unique constraint and the service retries the request."""
        return new_mac()

    # -- fixed IPs ------------------------------------------------------------------
    def requested(
        self, session: Session, network: NetworkLike, raw: Any
    ) -> list[tuple[SubnetLike, str | None]]:
        if not isinstance(raw, list):
            raise BadRequest("Invalid input for fixed_ips. Reason: not a list.")
        subnets = {s.id: s for s in network.subnets}
        wanted: list[tuple[SubnetLike, str | None]] = []
        for item in raw:
            if (
                not isinstance(item, dict)
                or not set(item) <= {"subnet_id", "ip_address"}
                or not item
            ):
                raise BadRequest(
                    f"Invalid input for fixed_ips. Reason: '{item}' is not a valid fixed IP."
                )
            address = item.get("ip_address")
            if address is not None:
                address = str(ipam.parse_address(address, field="fixed_ips"))
            subnet_id = item.get("subnet_id")
            if subnet_id is not None:
                subnet = subnets.get(str(subnet_id))
                if subnet is None:
                    if session.get(Subnet, str(subnet_id)) is None:
                        raise NotFound.of("subnet", str(subnet_id))
                    raise BadRequest(
                        f"Invalid input for operation: Failed to create port on network {network.id}, because fixed_ips included invalid subnet {subnet_id}.",
                        type="InvalidInput",
                    )
                if address is not None and ipaddress.ip_address(
                    address
                ) not in ipaddress.ip_network(subnet.cidr):
                    raise BadRequest(
                        f"IP address {address} is not a valid IP for the specified subnet.",
                        type="InvalidIpForSubnet",
                    )
            else:
                subnet = next(
                    (
                        s
                        for s in network.subnets
                        if address is not None
                        and ipaddress.ip_address(address) in ipaddress.ip_network(s.cidr)
                    ),
                    None,
                )
                if subnet is None:
                    raise BadRequest(
                        f"IP address {address} is not a valid IP for any of the subnets on the specified network.",
                        type="InvalidIpForNetwork",
                    )
            wanted.append((subnet, address))
        return wanted

    @staticmethod
    def defaults(network: NetworkLike) -> list[tuple[SubnetLike, str | None]]:
        v4 = [s for s in network.subnets if s.ip_version == 4]
        v6 = [s for s in network.subnets if s.ip_version == 6]
        wanted: list[tuple[SubnetLike, str | None]] = [(s, None) for s in v4[:1]]
        stateful = [s for s in v6 if s.ipv6_address_mode not in _AUTO_V6]
        wanted += [(s, None) for s in v6 if s.ipv6_address_mode in _AUTO_V6]
        wanted += [(s, None) for s in stateful[:1]]
        return wanted

    def allocate(
        self,
        session: Session,
        network: NetworkLike,
        port: Port,
        wanted: Sequence[tuple[SubnetLike, str | None]],
    ) -> None:
        """Give the ORM ``port`` the addresses ``wanted`` (see ``_allocate_rows``);
        ``port.fixed_ips`` is read again from the database when next used."""
        session.flush()  # the port's row first: allocations refer to it
        self._allocate_rows(
            session.connection(),
            network_id=network.id,
            port_id=port.id,
            mac=port.mac_address,
            device_owner=port.device_owner,
            wanted=wanted,
        )
        session.expire(port, ["fixed_ips"])

    def _allocate_rows(
        self,
        conn: Connection,
        *,
        network_id: str,
        port_id: str,
        mac: str,
        device_owner: str,
        wanted: Sequence[tuple[SubnetLike, str | None]],
    ) -> list[tuple[str, str]]:
        """Insert the allocations of ``wanted`` ((subnet, address or None), in the port's
        order); return (subnet id, address) in that order.

        An address asked for and taken is a Conflict (nothing is half-written: the
        service rolls the transaction back). Two transactions asking for each
        other's addresses in opposite orders can deadlock on PostgreSQL: it
        breaks the tie and the service retries the loser.
        """
        asked_insert = _ALLOCATION_INSERT[conn.dialect.name]
        picked_insert = _PICKED_INSERT[conn.dialect.name]
        chosen: list[tuple[str, str]] = []
        for position, (subnet, asked) in enumerate(wanted):
            address = asked
            values = {
                "subnet_id": subnet.id,
                "network_id": network_id,
                "port_id": port_id,
                "position": position,
            }
            if address is None:
                if subnet.ip_version == 6 and subnet.ipv6_address_mode in _AUTO_V6:
                    address = str(ipam.eui64(ipaddress.IPv6Network(subnet.cidr), mac))
                    # taken only by an address asked for: IntegrityError, and the service's
                    # retry makes the port again with a new MAC, as before
                    conn.execute(_PLAIN_ALLOCATION_INSERT, {**values, "ip_address": address})
                else:
                    address = self._pick(
                        conn,
                        subnet,
                        _inserter(conn, picked_insert, values),
                        _inserter(conn, asked_insert, values),
                    )
            elif (
                address == subnet.gateway_ip and device_owner != "network:router_interface"
            ) or not _inserter(conn, asked_insert, values)(address):
                raise Conflict(
                    f"Unable to complete operation for network {network_id}. The IP address {address} is in use.",
                    type="IpAddressAlreadyAllocated",
                )
            chosen.append((subnet.id, address))
        return chosen

    def _cursor(self, subnet_id: str) -> ipam.Cursor:
        cursor = self._cursors.get(subnet_id)
        if cursor is None:
            cursor = self._cursors.setdefault(subnet_id, ipam.Cursor())
        return cursor

    def _pick(
        self,
        conn: Connection,
        subnet: SubnetLike,
        insert: Callable[[str], bool],
        insert_or_wait: Callable[[str], bool],
    ) -> str:
        """Allocate the next free address of ``subnet``'s pools; return it.

        ``insert`` inserts an address, False if it is taken or being given out
        by another transaction (it does not wait); ``insert_or_wait`` waits for
        that transaction and answers for good.

        Addresses go out in order: the subnet's cursor gives this thread the next
        address after the last one handed out; a taken one is skipped, and after
        two in a row (another process allocates here too) the cursor jumps ahead,
        so that processes allocate apart. Without a cursor (a new process), past
        the end of the pools, or when they keep being taken, one read of the
        subnet's allocations gives the free addresses, lowest first; those found
        being given out are tried last, waiting, before the subnet is called
        exhausted. No lock is held on the subnet.
        """
        pools = ipam.int_pools(subnet.allocation_pools)
        cursor = self._cursor(subnet.id)
        missed = 0
        for _ in range(_PROBES):
            candidate = cursor.claim(pools)
            if candidate is None:
                break
            text = ipam.address_text(candidate, subnet.ip_version)
            if insert(text):
                return text
            missed += 1
            if missed == 2:
                cursor.skip(_JUMP[0] + secrets.randbelow(_JUMP[1]))
                missed = 0
        taken = {
            ipam.address_int(a) for a in conn.execute(_TAKEN, {"subnet_id": subnet.id}).scalars()
        }
        busy = []
        for candidate in ipam.free(pools, taken):
            cursor.restart(candidate)
            text = ipam.address_text(candidate, subnet.ip_version)
            if insert(text):
                return text
            busy.append(text)
        for text in busy:
            if insert_or_wait(text):
                return text
        raise ExhaustedError(f"No more IP addresses available on network {subnet.network_id}.")

    def next_free(self, session: Session, subnet: SubnetLike) -> ipam.IPAddress:
        """The lowest free address of the subnet's pools, as committed now (nothing is
        allocated); ExhaustedError if there is none."""
        taken = {
            ipam.address_int(a)
            for a in session.connection().execute(_TAKEN, {"subnet_id": subnet.id}).scalars()
        }
        for candidate in ipam.free(ipam.int_pools(subnet.allocation_pools), taken):
            return ipaddress.ip_address(candidate)
        raise ExhaustedError(f"No more IP addresses available on network {subnet.network_id}.")

    @staticmethod
    def _pairs(raw: Any) -> list[dict[str, str]]:
        if not isinstance(raw, list):
            raise BadRequest("Invalid input for allowed_address_pairs. Reason: not a list.")
        pairs = []
        for item in raw:
            if (
                not isinstance(item, dict)
                or "ip_address" not in item
                or not set(item) <= {"ip_address", "mac_address"}
            ):
                raise BadRequest(
                    f"Invalid input for allowed_address_pairs. Reason: '{item}' is not a valid address pair."
                )
            text = str(item["ip_address"])
            try:
                ipaddress.ip_interface(text)
            except ValueError:
                raise BadRequest(
                    f"Invalid input for allowed_address_pairs. Reason: '{text}' is not a valid IP address."
                ) from None
            pair = {"ip_address": text}
            if "mac_address" in item:
                pair["mac_address"] = mac_address("allowed_address_pairs")(item["mac_address"])
            pairs.append(pair)
        return pairs

    # -- the rest of the protocol --------------------------------------------------------
    def load(self, session: Session, ctx: Context, resource_id: str) -> Port:
        return load_owned(session, ctx, Port, "port", resource_id)

    def rows(
        self, session: Session, ctx: Context, filters: dict[str, tuple[str, ...]]
    ) -> Sequence[Port]:
        return owned_rows(
            session,
            ctx,
            Port,
            filters,
            ("id", "network_id", "device_id", "device_owner", "mac_address"),
            where=_fixed_ips_clauses(filters.get("fixed_ips", ())),
        )

    def update(self, session: Session, ctx: Context, row: Port, body: dict[str, Any]) -> None:
        apply_standard(row, body)
        if "security_groups" in body:
            row.security_groups = self._groups(session, ctx, row, body["security_groups"])
            body = {k: v for k, v in body.items() if k != "security_groups"}
        simple = {
            "admin_state_up": "admin_state_up",
            "device_id": "device_id",
            "device_owner": "device_owner",
            "binding:host_id": "host_id",
            "port_security_enabled": "port_security_enabled",
        }
        for key, column in simple.items():
            if key in body:
                setattr(row, column, body[key])
        if "allowed_address_pairs" in body:
            row.allowed_address_pairs = self._pairs(body["allowed_address_pairs"])
        if "mac_address" in body and body["mac_address"] != row.mac_address:
            if not ctx.is_admin:
                raise NotFound.of("port", row.id)
            row.mac_address = body["mac_address"]
        if "fixed_ips" in body:
            network = session.get(Network, row.network_id)
            assert network is not None
            wanted = self.requested(session, network, body["fixed_ips"])
            keep = {(a.subnet_id, a.ip_address) for a in row.fixed_ips}
            for allocation in list(row.fixed_ips):
                if (allocation.subnet_id, allocation.ip_address) not in {
                    (s.id, a) for s, a in wanted if a
                }:
                    row.fixed_ips.remove(allocation)
            session.flush()
            fresh = [(s, a) for s, a in wanted if (s.id, a) not in keep]
            self.allocate(session, network, row, fresh)
        bump(row)

    def delete(self, session: Session, ctx: Context, row: Port) -> None:
        if row.device_owner in ROUTER_OWNERS:
            raise Conflict(
                f"Port {row.id} cannot be deleted directly via the port API: has device owner {row.device_owner}.",
                type="ServicePortInUse",
            )
        for fip in session.scalars(select(FloatingIP).where(FloatingIP.port_id == row.id)):
            fip.port_id = fip.fixed_ip_address = fip.router_id = None  # as Neutron: disassociated
        session.delete(row)

    def view(self, row: Port, ctx: Context) -> dict[str, Any]:
        view = standard_view(row)
        view.update(
            {
                "network_id": row.network_id,
                "mac_address": row.mac_address,
                "admin_state_up": row.admin_state_up,
                "status": row.status,
                "device_id": row.device_id,
                "device_owner": row.device_owner,
                "fixed_ips": [
                    {"subnet_id": a.subnet_id, "ip_address": a.ip_address} for a in row.fixed_ips
                ],
                "allowed_address_pairs": [
                    {
                        "ip_address": p["ip_address"],
                        "mac_address": p.get("mac_address", row.mac_address),
                    }
                    for p in row.allowed_address_pairs
                ],
                "extra_dhcp_opts": [],
                "security_groups": list(row.security_groups),
                "port_security_enabled": row.port_security_enabled,
                "binding:vnic_type": "normal",
            }
        )
        if ctx.is_admin:
            view.update(
                {
                    "binding:profile": {},
                    "binding:host_id": row.host_id,
                    "binding:vif_type": "unbound" if not row.host_id else "ovs",
                    "binding:vif_details": {},
                }
            )
        return view
