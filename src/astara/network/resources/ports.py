"""Ports: MAC, fixed IPs (IPAM), device, binding host, security groups, address pairs.

Fixed IPs: asked for by subnet and/or address, or chosen: one address from
the network's first IPv4 subnet with room, plus an address in every IPv6
subnet (EUI-64 from the MAC where the subnet is SLAAC or stateless, else the
next free one). Allocations are rows keyed by (subnet, address), so an
address is never given twice; a lost race on PostgreSQL surfaces as an
IntegrityError that the service retries.
"""

from __future__ import annotations

import ipaddress
import itertools
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
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
from astara.network.db.models import FloatingIP, IPAllocation, Network, Port, SecurityGroup, Subnet
from astara.network.errors import BadRequest, Conflict, ExhaustedError, NotFound
from astara.network.resources.security_groups import ensure_default_group
from astara.network.store import (
    apply_standard,
    bump,
    load_owned,
    new_id,
    owned_rows,
    owner,
    standard_view,
    visible_network,
)

ROUTER_OWNERS = ("network:router_interface", "network:router_gateway", "network:floatingip")
_AUTO_V6 = ("slaac", "dhcpv6-stateless")
_PROBES = 8  # addresses tried after the cursor before reading the whole subnet


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
        self._cursors: dict[str, int] = {}

    def create(self, session: Session, ctx: Context, body: dict[str, Any]) -> Port:
        network = visible_network(session, ctx, body["network_id"])
        if not ctx.owns(network.project_id) and not network.shared and not ctx.is_admin:
            raise NotFound.of("network", network.id)
        mac = body.get("mac_address") or self.unique_mac(session, network.id)
        if (
            body.get("mac_address")
            and session.scalars(
                select(Port.id).where(Port.network_id == network.id, Port.mac_address == mac)
            ).first()
        ):
            raise Conflict(
                f"Unable to complete operation for network {network.id}. The mac address {mac} is in use.",
                type="MacAddressInUse",
            )
        port = Port(
            id=new_id(),
            project_id=owner(ctx, body),
            network_id=network.id,
            mac_address=mac,
            admin_state_up=body.get("admin_state_up", True),
            device_id=body.get("device_id", ""),
            device_owner=body.get("device_owner", ""),
            host_id=body.get("binding:host_id", ""),
            security_groups=[],
            allowed_address_pairs=self._pairs(body.get("allowed_address_pairs", [])),
            port_security_enabled=body.get("port_security_enabled", network.port_security_enabled),
        )
        apply_standard(port, body)
        port.security_groups = self._groups(session, ctx, port, body.get("security_groups"))
        session.add(port)
        requested = body.get("fixed_ips")
        wanted = (
            self.requested(session, network, requested)
            if requested is not None
            else self.defaults(network)
        )
        self.allocate(session, network, port, wanted)
        return port

    @staticmethod
    def _groups(session: Session, ctx: Context, port: Port, asked: list[str] | None) -> list[str]:
        """The port's security groups: those asked for (each must exist and be visible),
        else the project's default group -- for ports with port security that the
        service does not own (Neutron's rule)."""
        if asked is None:
            if not port.port_security_enabled or port.device_owner.startswith("network:"):
                return []
            return [ensure_default_group(session, port.project_id)]
        for group_id in asked:
            group = session.get(SecurityGroup, group_id)
            if group is None or not (ctx.owns(group.project_id) or group.shared):
                raise NotFound.of("security_group", group_id)
        if asked and not port.port_security_enabled:
            raise Conflict(
                f"Port {port.id} has no port security: security groups cannot be applied.",
                type="PortSecurityAndIPRequiredForSecurityGroups",
            )
        return list(dict.fromkeys(asked))

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
        self, session: Session, network: Network, raw: Any
    ) -> list[tuple[Subnet, str | None]]:
        if not isinstance(raw, list):
            raise BadRequest("Invalid input for fixed_ips. Reason: not a list.")
        subnets = {s.id: s for s in network.subnets}
        wanted: list[tuple[Subnet, str | None]] = []
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
    def defaults(network: Network) -> list[tuple[Subnet, str | None]]:
        v4 = [s for s in network.subnets if s.ip_version == 4]
        v6 = [s for s in network.subnets if s.ip_version == 6]
        wanted: list[tuple[Subnet, str | None]] = [(s, None) for s in v4[:1]]
        stateful = [s for s in v6 if s.ipv6_address_mode not in _AUTO_V6]
        wanted += [(s, None) for s in v6 if s.ipv6_address_mode in _AUTO_V6]
        wanted += [(s, None) for s in stateful[:1]]
        return wanted

    def allocate(
        self,
        session: Session,
        network: Network,
        port: Port,
        wanted: list[tuple[Subnet, str | None]],
    ) -> None:
        # concurrent allocations on a subnet queue on its row (PostgreSQL; SQLite has
        # one writer anyway): otherwise they all pick the same lowest free address
        if session.get_bind().dialect.name != "sqlite":
            for subnet_id in sorted({s.id for s, _ in wanted}):
                session.execute(select(Subnet.id).where(Subnet.id == subnet_id).with_for_update())
        for position, (subnet, asked) in enumerate(wanted):
            address = asked
            cidr = ipaddress.ip_network(subnet.cidr)
            if address is None:
                if subnet.ip_version == 6 and subnet.ipv6_address_mode in _AUTO_V6:
                    address = str(ipam.eui64(cidr, port.mac_address))  # type: ignore[arg-type]
                else:
                    address = str(self.next_free(session, subnet))
            elif session.get(IPAllocation, (subnet.id, address)) is not None or (
                address == subnet.gateway_ip and port.device_owner != "network:router_interface"
            ):
                raise Conflict(
                    f"Unable to complete operation for network {network.id}. The IP address {address} is in use.",
                    type="IpAddressAlreadyAllocated",
                )
            allocation = IPAllocation(
                subnet_id=subnet.id, ip_address=address, network_id=network.id, position=position
            )
            port.fixed_ips.append(allocation)
        session.flush()  # the primary key refuses an address taken meanwhile

    def next_free(self, session: Session, subnet: Subnet) -> ipam.IPAddress:
        """A free address of the subnet's pools (the caller holds the subnet's row lock).

        Addresses go out in order: a probe of the few addresses after the last
        one handed out (primary-key lookups, cheap) finds one at once; without a
        cursor (a new process) or when the probe keeps hitting taken addresses,
        one read of the subnet's allocations finds the lowest free one.
        """
        pools = [
            ipam.Pool(ipaddress.ip_address(p["start"]), ipaddress.ip_address(p["end"]))
            for p in subnet.allocation_pools
        ]
        cursor = self._cursors.get(subnet.id)
        if cursor is not None:
            for candidate in itertools.islice(ipam.after(pools, cursor), _PROBES):
                address = ipaddress.ip_address(candidate)
                if session.get(IPAllocation, (subnet.id, str(address))) is None:
                    self._cursors[subnet.id] = candidate
                    return address
        taken = {
            ipam.address_int(a)
            for a in session.scalars(
                select(IPAllocation.ip_address).where(IPAllocation.subnet_id == subnet.id)
            )
        }
        try:
            found = ipam.next_free(pools, taken)
        except ExhaustedError:
            raise ExhaustedError(
                f"No more IP addresses available on network {subnet.network_id}."
            ) from None
        self._cursors[subnet.id] = int(found)
        return found

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
