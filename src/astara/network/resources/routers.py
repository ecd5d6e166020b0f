"""Routers: external gateway, interfaces on tenant subnets, extra routes.

A router's links are ports the service makes itself (Neutron does the same):
- the gateway, a port on an external network (``network:router_gateway``,
  no project), holding the router's external addresses;
- one interface per attached subnet (``network:router_interface``, the
  router's project), holding the subnet's gateway address, or an existing
  port the caller hands over.
Invariants: a router is attached to a subnet at most once; its gateway is on
an external network; it cannot be deleted while it has interfaces, nor lose
its gateway or an interface while a floating IP depends on them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.network.attributes import STANDARD, Attr, anything, boolean, invalid, one_of
from astara.network.context import Context
from astara.network.db.models import FloatingIP, IPAllocation, Network, Port, Router, Subnet
from astara.network.errors import BadRequest, Conflict, InUse, NotFound
from astara.network.resources.ports import Ports
from astara.network.store import (
    apply_standard,
    bump,
    load_owned,
    new_id,
    owned_rows,
    owner,
    standard_view,
)

GATEWAY = "network:router_gateway"
INTERFACE = "network:router_interface"


def _gateway_info(value: Any) -> dict[str, Any] | None:
    if value is None or value == {}:
        return None
    if not isinstance(value, dict) or "network_id" not in value:
        raise invalid("external_gateway_info", value, "network_id is required")
    extra = set(value) - {"network_id", "enable_snat", "external_fixed_ips"}
    if extra:
        raise invalid("external_gateway_info", value, f"Unrecognized keys {sorted(extra)}")
    return dict(value)


class Routers:
    name = "router"
    collection = "routers"
    attributes = (
        *STANDARD,
        Attr("admin_state_up", boolean("admin_state_up")),
        Attr("external_gateway_info", _gateway_info, nullable=True),
        Attr("routes", anything("routes"), post=False),
        Attr("distributed", boolean("distributed"), admin_only=True),
        Attr("ha", boolean("ha"), admin_only=True),
        # set by the orchestrator from the appliance's lifecycle (BUILD, ACTIVE, ERROR, DOWN)
        Attr(
            "status",
            one_of("status", "BUILD", "ACTIVE", "ERROR", "DOWN"),
            post=False,
            admin_only=True,
        ),
        Attr("availability_zone_hints", anything("availability_zone_hints"), put=False),
        Attr("flavor_id", anything("flavor_id"), put=False, nullable=True),
    )

    def __init__(self, ports: Ports) -> None:
        self.ports = ports

    def create(self, session: Session, ctx: Context, body: dict[str, Any]) -> Router:
        router = Router(
            id=new_id(),
            project_id=owner(ctx, body),
            admin_state_up=body.get("admin_state_up", True),
        )
        apply_standard(router, body)
        session.add(router)
        session.flush()
        if body.get("external_gateway_info"):
            self._set_gateway(session, ctx, router, body["external_gateway_info"])
        return router

    # -- gateway ----------------------------------------------------------------------
    def _gateway_port(self, session: Session, router: Router) -> Port | None:
        return None if router.gw_port_id is None else session.get(Port, router.gw_port_id)

    def _set_gateway(
        self, session: Session, ctx: Context, router: Router, info: dict[str, Any]
    ) -> None:
        network = session.get(Network, str(info["network_id"]))
        if network is None:
            raise NotFound.of("network", str(info["network_id"]))
        if not network.external:
            raise BadRequest(
                f"Bad router request: Network {network.id} is not an external network.",
                type="BadRequest",
            )
        current = self._gateway_port(session, router)
        if (
            current is not None
            and current.network_id == network.id
            and "external_fixed_ips" not in info
        ):
            router.enable_snat = bool(info.get("enable_snat", router.enable_snat))
            return
        self._clear_gateway(session, router)
        port = self.ports.service_port(
            session, network_id=network.id, device_id=router.id, device_owner=GATEWAY
        )
        fixed = info.get("external_fixed_ips")
        wanted = (
            self.ports.requested(session, network, fixed) if fixed else self.ports.defaults(network)
        )
        self.ports.allocate(session, network, port, wanted)
        router.gw_port_id = port.id
        router.enable_snat = bool(info.get("enable_snat", True))

    def _clear_gateway(self, session: Session, router: Router) -> None:
        port = self._gateway_port(session, router)
        if port is None:
            return
        used = session.scalars(
            select(FloatingIP.id).where(FloatingIP.router_id == router.id).limit(1)
        ).first()
        if used is not None:
            raise Conflict(
                f"Gateway cannot be updated for router {router.id}, since a gateway to external network "
                f"{port.network_id} is required by one or more floating IPs.",
                type="RouterExternalGatewayInUseByFloatingIp",
            )
        router.gw_port_id = None
        session.flush()
        session.delete(port)

    # -- interfaces -------------------------------------------------------------------
    def interfaces(self, session: Session, router_id: str) -> Sequence[Port]:
        return session.scalars(
            select(Port)
            .where(Port.device_id == router_id, Port.device_owner == INTERFACE)
            .order_by(Port.created_at)
        ).all()

    def add_interface(
        self, session: Session, ctx: Context, router: Router, body: dict[str, Any]
    ) -> dict[str, Any]:
        if not isinstance(body, dict) or len(set(body) & {"subnet_id", "port_id"}) != 1:
            raise BadRequest(
                "Bad router request: Either subnet_id or port_id must be specified.",
                type="BadRequest",
            )
        attached = {a.subnet_id for p in self.interfaces(session, router.id) for a in p.fixed_ips}
        if "port_id" in body:
            port = self.ports.load(session, ctx, str(body["port_id"]))
            if port.device_id or port.device_owner:
                raise Conflict(
                    f"Port {port.id} has owner {port.device_owner} and therefore cannot be deleted directly via the port API.",
                    type="PortInUse",
                )
            if not port.fixed_ips:
                raise BadRequest(
                    "Bad router request: Router port must have at least one fixed IP.",
                    type="BadRequest",
                )
            for allocation in port.fixed_ips:
                if allocation.subnet_id in attached:
                    raise BadRequest(
                        f"Bad router request: Router already has a port on subnet {allocation.subnet_id}.",
                        type="BadRequest",
                    )
            port.device_id, port.device_owner, port.port_security_enabled = (
                router.id,
                INTERFACE,
                False,
            )
        else:
            subnet = session.get(Subnet, str(body["subnet_id"]))
            if subnet is None or not (ctx.owns(subnet.project_id) or subnet.network.shared):
                raise NotFound.of("subnet", str(body["subnet_id"]))
            if subnet.gateway_ip is None:
                raise BadRequest(
                    "Bad router request: Subnet for router interface must have a gateway IP.",
                    type="BadRequest",
                )
            if subnet.id in attached:
                raise BadRequest(
                    f"Bad router request: Router already has a port on subnet {subnet.id}.",
                    type="BadRequest",
                )
            if subnet.network.external:
                raise BadRequest(
                    "Bad router request: Router interface cannot be on an external network.",
                    type="BadRequest",
                )
            port = self.ports.service_port(
                session,
                network_id=subnet.network_id,
                device_id=router.id,
                device_owner=INTERFACE,
                project_id=router.project_id,
            )
            self.ports.allocate(session, subnet.network, port, [(subnet, subnet.gateway_ip)])
        bump(router)
        session.flush()
        return self.interface_info(router, port)

    def remove_interface(
        self, session: Session, ctx: Context, router: Router, body: dict[str, Any]
    ) -> dict[str, Any]:
        if not isinstance(body, dict) or not set(body) & {"subnet_id", "port_id"}:
            raise BadRequest(
                "Bad router request: Either subnet_id or port_id must be specified.",
                type="BadRequest",
            )
        ports = self.interfaces(session, router.id)
        if "port_id" in body:
            port = next((p for p in ports if p.id == body["port_id"]), None)
            if port is None:
                raise NotFound(
                    f"Router {router.id} does not have an interface with id {body['port_id']}",
                    type="RouterInterfaceNotFound",
                )
        else:
            port = next(
                (p for p in ports if any(a.subnet_id == body["subnet_id"] for a in p.fixed_ips)),
                None,
            )
            if port is None:
                raise NotFound(
                    f"Router {router.id} has no interface on subnet {body['subnet_id']}",
                    type="RouterInterfaceNotFoundForSubnet",
                )
        subnets = {a.subnet_id for a in port.fixed_ips}
        for fip in session.scalars(select(FloatingIP).where(FloatingIP.router_id == router.id)):
            fixed = (
                session.get(IPAllocation, (next(iter(subnets)), fip.fixed_ip_address or ""))
                if subnets
                else None
            )
            if fixed is not None or any(
                self._in_subnet(session, s, fip.fixed_ip_address) for s in subnets
            ):
                raise Conflict(
                    f"Cannot remove the interface of router {router.id} on subnet {next(iter(subnets))}: "
                    "one or more floating IPs require it.",
                    type="RouterInterfaceInUseByFloatingIP",
                )
        info = self.interface_info(router, port)
        session.delete(port)
        bump(router)
        return info

    @staticmethod
    def _in_subnet(session: Session, subnet_id: str, address: str | None) -> bool:
        subnet = session.get(Subnet, subnet_id)
        return bool(
            address
            and subnet
            and ipaddress.ip_address(address) in ipaddress.ip_network(subnet.cidr)
        )

    @staticmethod
    def interface_info(router: Router, port: Port) -> dict[str, Any]:
        subnet_ids = [a.subnet_id for a in port.fixed_ips]
        return {
            "id": router.id,
            "project_id": router.project_id,
            "port_id": port.id,
            "network_id": port.network_id,
            "subnet_id": subnet_ids[0] if subnet_ids else None,
            "subnet_ids": subnet_ids,
        }

    # -- the rest of the protocol --------------------------------------------------------
    def load(self, session: Session, ctx: Context, resource_id: str) -> Router:
        return load_owned(session, ctx, Router, "router", resource_id)

    def rows(
        self, session: Session, ctx: Context, filters: dict[str, tuple[str, ...]]
    ) -> Sequence[Router]:
        return owned_rows(session, ctx, Router, filters, ("id",))

    def update(self, session: Session, ctx: Context, row: Router, body: dict[str, Any]) -> None:
        apply_standard(row, body)
        if "admin_state_up" in body:
            row.admin_state_up = body["admin_state_up"]
        if "status" in body:
            row.status = body["status"]
        if "external_gateway_info" in body:
            info = body["external_gateway_info"]
            if info:
                self._set_gateway(session, ctx, row, info)
            else:
                self._clear_gateway(session, row)
        if "routes" in body:
            row.routes = self._routes(session, row, body["routes"])
        bump(row)

    def _routes(self, session: Session, router: Router, raw: Any) -> list[dict[str, str]]:
        if not isinstance(raw, list):
            raise BadRequest("Invalid input for routes. Reason: not a list.")
        connected = [
            ipaddress.ip_network(s.cidr)
            for p in [
                *self.interfaces(session, router.id),
                *filter(None, [self._gateway_port(session, router)]),
            ]
            for a in p.fixed_ips
            if (s := session.get(Subnet, a.subnet_id)) is not None
        ]
        routes = []
        for item in raw:
            if not isinstance(item, dict) or set(item) != {"destination", "nexthop"}:
                raise BadRequest(
                    "Invalid input for routes. Reason: each route needs destination and nexthop."
                )
            try:
                destination = ipaddress.ip_network(str(item["destination"]))
                nexthop = ipaddress.ip_address(str(item["nexthop"]))
            except ValueError:
                raise BadRequest(
                    f"Invalid input for routes. Reason: '{item}' is not a valid route."
                ) from None
            if not any(nexthop in net for net in connected):
                raise BadRequest(
                    f"Invalid format for routes: {item}, the nexthop is not connected with router",
                    type="InvalidRoutes",
                )
            routes.append({"destination": str(destination), "nexthop": str(nexthop)})
        return routes

    def delete(self, session: Session, ctx: Context, row: Router) -> None:
        if self.interfaces(session, row.id):
            raise InUse(f"Router {row.id} still has ports", type="RouterInUse")
        self._clear_gateway(session, row)
        session.delete(row)

    def view(self, row: Router, ctx: Context) -> dict[str, Any]:
        view = standard_view(row)
        gateway = None
        if row.gw_port_id is not None:
            session = Session.object_session(row)
            port = session.get(Port, row.gw_port_id) if session is not None else None
            if port is not None:
                gateway = {
                    "network_id": port.network_id,
                    "external_fixed_ips": [
                        {"subnet_id": a.subnet_id, "ip_address": a.ip_address}
                        for a in port.fixed_ips
                    ],
                    "enable_snat": row.enable_snat,
                }
        view.update(
            {
                "admin_state_up": row.admin_state_up,
                "status": row.status,
                "external_gateway_info": gateway,
                "availability_zones": [],
                "availability_zone_hints": [],
                "routes": list(row.routes),
                "flavor_id": None,
            }
        )
        if ctx.is_admin:  # DVR and HA flags are the admin's [010 vs 097]
            view.update({"distributed": False, "ha": False})
        return view
