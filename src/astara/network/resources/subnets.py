"""Subnets: CIDR, gateway, allocation pools, DHCP, DNS servers, host routes, IPv6 modes.

Checks on create and update: the CIDR is a proper network of the stated IP
version and overlaps no other subnet of the same network; pools lie in it,
do not overlap, and leave the gateway out. A subnet with addresses still
allocated to ports other than the service's own cannot be deleted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from astara.network import ipam
from astara.network.attributes import (
    STANDARD,
    Attr,
    anything,
    boolean,
    identifier,
    integer,
    list_of,
    one_of,
    string,
)
from astara.network.context import Context
from astara.network.db.models import IPAllocation, Network, Port, Subnet
from astara.network.errors import BadRequest, InUse, NotFound
from astara.network.resources.networks import SERVICE_OWNERS
from astara.network.store import apply_standard, bump, new_id, owner, standard_view, visible_network

IPV6_MODES = (None, "slaac", "dhcpv6-stateful", "dhcpv6-stateless")


class Subnets:
    name = "subnet"
    collection = "subnets"
    attributes = (
        *STANDARD,
        Attr("network_id", identifier("network_id"), put=False, required=True),
        Attr("ip_version", integer("ip_version", 4, 6), put=False, required=True),
        Attr("cidr", string("cidr", 64), put=False, required=True),
        Attr("gateway_ip", string("gateway_ip", 64), nullable=True),
        Attr("allocation_pools", anything("allocation_pools")),
        Attr("enable_dhcp", boolean("enable_dhcp")),
        Attr("dns_nameservers", list_of("dns_nameservers", string("dns_nameservers", 64))),
        Attr("host_routes", anything("host_routes")),
        Attr("ipv6_ra_mode", one_of("ipv6_ra_mode", *IPV6_MODES), put=False, nullable=True),
        Attr(
            "ipv6_address_mode", one_of("ipv6_address_mode", *IPV6_MODES), put=False, nullable=True
        ),
        Attr("subnetpool_id", one_of("subnetpool_id", None), put=False, nullable=True),
        Attr("service_types", list_of("service_types", string("service_types")), put=False),
    )

    def create(self, session: Session, ctx: Context, body: dict[str, Any]) -> Subnet:
        network = visible_network(session, ctx, body["network_id"])
        if not ctx.owns(network.project_id):
            raise NotFound.of("network", network.id)
        cidr = ipam.parse_cidr(body["cidr"])
        if cidr.version != body["ip_version"]:
            raise BadRequest(
                f"Invalid input for operation: cidr {cidr} is not IPv{body['ip_version']}.",
                type="InvalidInput",
            )
        if cidr.version == 4 and (body.get("ipv6_ra_mode") or body.get("ipv6_address_mode")):
            raise BadRequest(
                "Invalid input for operation: ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False or ip_version is 4.",
                type="InvalidInput",
            )
        for other in network.subnets:
            theirs = ipaddress.ip_network(other.cidr)
            if theirs.version == cidr.version and theirs.overlaps(cidr):
                raise BadRequest(
                    f"Invalid input for operation: Requested subnet with cidr: {cidr} for network: "
                    f"{network.id} overlaps with another subnet.",
                    type="InvalidInput",
                )
        gateway = self._gateway(body, cidr, default=True)
        raw_pools = body.get("allocation_pools")
        pools = (
            ipam.default_pools(cidr, gateway)
            if raw_pools is None
            else ipam.parse_pools(raw_pools, cidr, gateway)
        )
        subnet = Subnet(
            id=new_id(),
            project_id=owner(ctx, body),
            network_id=network.id,
            ip_version=cidr.version,
            cidr=str(cidr),
            gateway_ip=None if gateway is None else str(gateway),
            enable_dhcp=body.get("enable_dhcp", True),
            ipv6_ra_mode=body.get("ipv6_ra_mode"),
            ipv6_address_mode=body.get("ipv6_address_mode"),
            allocation_pools=[p.as_dict() for p in pools],
            dns_nameservers=self._nameservers(body.get("dns_nameservers", [])),
            host_routes=self._routes(body.get("host_routes", []), cidr.version),
        )
        apply_standard(subnet, body)
        session.add(subnet)
        network.subnets.append(subnet)
        bump(network)
        return subnet

    @staticmethod
    def _gateway(
        body: dict[str, Any], cidr: ipam.IPNetwork, *, default: bool
    ) -> ipam.IPAddress | None:
        if "gateway_ip" not in body:
            return ipam.default_gateway(cidr) if default else None
        if body["gateway_ip"] is None:
            return None
        gateway = ipam.parse_address(body["gateway_ip"], field="gateway_ip")
        if gateway.version != cidr.version or gateway == cidr.network_address:
            raise BadRequest(
                f"Invalid input for operation: Gateway IP {gateway} is not valid for subnet {cidr}.",
                type="InvalidInput",
            )
        return gateway

    @staticmethod
    def _nameservers(values: list[str]) -> list[str]:
        for value in values:
            ipam.parse_address(value, field="dns_nameservers")
        if len(set(values)) != len(values):
            raise BadRequest("Invalid input for dns_nameservers. Reason: Duplicate nameserver.")
        return values

    @staticmethod
    def _routes(values: Any, version: int) -> list[dict[str, str]]:
        if not isinstance(values, list):
            raise BadRequest("Invalid input for host_routes. Reason: not a list.")
        routes = []
        for item in values:
            if not isinstance(item, dict) or set(item) != {"destination", "nexthop"}:
                raise BadRequest(
                    "Invalid input for host_routes. Reason: each route needs destination and nexthop."
                )
            destination = ipam.parse_cidr(item["destination"], field="host_routes")
            nexthop = ipam.parse_address(item["nexthop"], field="host_routes")
            if destination.version != version or nexthop.version != version:
                raise BadRequest(
                    f"Invalid input for host_routes. Reason: route {item} is not IPv{version}."
                )
            routes.append({"destination": str(destination), "nexthop": str(nexthop)})
        return routes

    def load(self, session: Session, ctx: Context, resource_id: str) -> Subnet:
        subnet = session.get(Subnet, resource_id)
        if subnet is None or not (
            ctx.owns(subnet.project_id) or subnet.network.shared or subnet.network.external
        ):
            raise NotFound.of("subnet", resource_id)
        return subnet

    def rows(
        self, session: Session, ctx: Context, filters: dict[str, tuple[str, ...]]
    ) -> Sequence[Subnet]:
        query = select(Subnet).join(Network).order_by(Subnet.created_at, Subnet.id)
        if not ctx.is_admin:
            query = query.where(
                or_(Subnet.project_id == ctx.project_id, Network.shared, Network.external)
            )
        for key, column in (("id", Subnet.id), ("network_id", Subnet.network_id)):
            if key in filters:
                query = query.where(column.in_(filters[key]))
        return session.scalars(query).all()

    def update(self, session: Session, ctx: Context, row: Subnet, body: dict[str, Any]) -> None:
        if not ctx.owns(row.project_id):
            raise NotFound.of("subnet", row.id)
        cidr = ipaddress.ip_network(row.cidr)
        apply_standard(row, body)
        gateway = (
            self._gateway(body, cidr, default=False)
            if "gateway_ip" in body
            else (None if row.gateway_ip is None else ipaddress.ip_address(row.gateway_ip))
        )
        if "allocation_pools" in body:
            pools = ipam.parse_pools(body["allocation_pools"], cidr, gateway)
            row.allocation_pools = [p.as_dict() for p in pools]
        elif "gateway_ip" in body:
            ipam.parse_pools(
                row.allocation_pools, cidr, gateway
            )  # the gateway may not enter a pool
        if "gateway_ip" in body:
            row.gateway_ip = None if gateway is None else str(gateway)
        if "dns_nameservers" in body:
            row.dns_nameservers = self._nameservers(body["dns_nameservers"])
        if "host_routes" in body:
            row.host_routes = self._routes(body["host_routes"], cidr.version)
        if "enable_dhcp" in body:
            row.enable_dhcp = body["enable_dhcp"]
        bump(row)

    def delete(self, session: Session, ctx: Context, row: Subnet) -> None:
        if not ctx.owns(row.project_id):
            raise NotFound.of("subnet", row.id)
        used = session.scalars(
            select(IPAllocation.port_id)
            .join(Port)
            .where(IPAllocation.subnet_id == row.id, Port.device_owner.not_in(SERVICE_OWNERS))
            .limit(1)
        ).first()
        if used is not None:
            raise InUse(
                f"Unable to complete operation on subnet {row.id}: One or more ports have an IP "
                "allocation from this subnet.",
                type="SubnetInUse",
            )
        session.execute(delete(IPAllocation).where(IPAllocation.subnet_id == row.id))
        network = row.network
        network.subnets.remove(row)
        session.delete(row)
        bump(network)

    def view(self, row: Subnet, ctx: Context) -> dict[str, Any]:
        view = standard_view(row)
        view.update(
            {
                "network_id": row.network_id,
                "ip_version": row.ip_version,
                "subnetpool_id": None,
                "enable_dhcp": row.enable_dhcp,
                "ipv6_ra_mode": row.ipv6_ra_mode,
                "ipv6_address_mode": row.ipv6_address_mode,
                "gateway_ip": row.gateway_ip,
                "cidr": row.cidr,
                "allocation_pools": list(row.allocation_pools),
                "host_routes": list(row.host_routes),
                "dns_nameservers": list(row.dns_nameservers),
                "router:external": row.network.external,
                "service_types": [],
            }
        )
        return view
