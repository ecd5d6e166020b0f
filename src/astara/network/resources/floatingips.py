"""Floating IPs: an address of an external network, optionally mapped to a port's fixed IP.

The address is held by a port the service makes on the external network
(``network:floatingip``, no project). Associating finds the router that
joins the two: the one whose gateway is on the floating IP's network and
which has an interface on the fixed IP's subnet (``router_id`` is derived,
never set). A fixed IP has at most one floating IP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from astara.network.attributes import STANDARD, Attr, identifier, string
from astara.network.context import Context
from astara.network.db.models import FloatingIP, IPAllocation, Network, Port, Router, Subnet
from astara.network.errors import BadRequest, Conflict, NotFound
from astara.network.resources.ports import Ports
from astara.network.resources.routers import INTERFACE
from astara.network.store import (
    apply_standard,
    bump,
    load_owned,
    new_id,
    owned_rows,
    owner,
    standard_view,
)

FLOATING = "network:floatingip"


class FloatingIPs:
    name = "floatingip"
    collection = "floatingips"
    attributes = (
        *(a for a in STANDARD if a.name != "name"),
        Attr("floating_network_id", identifier("floating_network_id"), put=False, required=True),
        Attr("floating_ip_address", string("floating_ip_address", 64), put=False),
        Attr("subnet_id", identifier("subnet_id"), put=False),
        Attr("port_id", identifier("port_id"), nullable=True),
        Attr("fixed_ip_address", string("fixed_ip_address", 64), nullable=True),
    )

    def __init__(self, ports: Ports) -> None:
        self.ports = ports

    def create(self, session: Session, ctx: Context, body: dict[str, Any]) -> FloatingIP:
        network = session.get(Network, body["floating_network_id"])
        if network is None:
            raise NotFound.of("network", body["floating_network_id"])
        if not network.external:
            raise BadRequest(
                f"Bad floatingip request: Network {network.id} is not a valid external network.",
                type="BadRequest",
            )
        fip = FloatingIP(id=new_id(), project_id=owner(ctx, body), floating_network_id=network.id)
        apply_standard(fip, body)
        port = self.ports.service_port(
            session, network_id=network.id, device_id=fip.id, device_owner=FLOATING
        )
        v4 = [
            s
            for s in network.subnets
            if s.ip_version == 4 and ("subnet_id" not in body or s.id == body["subnet_id"])
        ]
        if not v4:
            raise BadRequest(
                f"Bad floatingip request: Network {network.id} has no IPv4 subnet to allocate from.",
                type="BadRequest",
            )
        if "floating_ip_address" in body:
            wanted = self.ports.requested(
                session, network, [{"ip_address": body["floating_ip_address"]}]
            )
        else:
            wanted = (
                [(v4[0], None)] if len(v4) == 1 else [(self._subnet_with_room(session, v4), None)]
            )
        self.ports.allocate(session, network, port, wanted[:1])
        fip.floating_port_id = port.id
        fip.floating_ip_address = port.fixed_ips[0].ip_address
        session.add(fip)
        session.flush()
        if body.get("port_id"):
            self._associate(session, ctx, fip, body["port_id"], body.get("fixed_ip_address"))
        return fip

    def _subnet_with_room(self, session: Session, subnets: list[Subnet]) -> Subnet:
        for subnet in subnets:
            try:
                self.ports.next_free(session, subnet)
                return subnet
            except Conflict:
                continue
        return subnets[0]  # let the allocation report the exhaustion

    def _associate(
        self, session: Session, ctx: Context, fip: FloatingIP, port_id: str, fixed: str | None
    ) -> None:
        port = self.ports.load(session, ctx, port_id)
        v4 = [a for a in port.fixed_ips if ipaddress.ip_address(a.ip_address).version == 4]
        if fixed is not None:
            allocation = next((a for a in v4 if a.ip_address == fixed), None)
            if allocation is None:
                raise BadRequest(
                    f"Bad floatingip request: Port {port.id} does not have fixed ip {fixed}.",
                    type="BadRequest",
                )
        elif not v4:
            raise BadRequest(
                f"Bad floatingip request: Port {port.id} does not have any IPv4 address.",
                type="BadRequest",
            )
        else:
            allocation = v4[0]
        other = session.scalars(
            select(FloatingIP.id).where(
                FloatingIP.port_id == port.id,
                FloatingIP.fixed_ip_address == allocation.ip_address,
                FloatingIP.id != fip.id,
            )
        ).first()
        if other is not None:
            raise Conflict(
                f"Cannot associate floating IP {fip.floating_ip_address} ({fip.id}) with port {port.id} using fixed IP "
                f"{allocation.ip_address}, as that fixed IP already has a floating IP on external network {fip.floating_network_id}.",
                type="FloatingIPPortAlreadyAssociated",
            )
        fip.router_id = self._router_between(session, fip, allocation, port)
        fip.port_id, fip.fixed_ip_address = port.id, allocation.ip_address

    @staticmethod
    def _router_between(
        session: Session, fip: FloatingIP, allocation: IPAllocation, port: Port
    ) -> str:
        interfaces = session.scalars(
            select(Port.device_id)
            .join(IPAllocation)
            .where(Port.device_owner == INTERFACE, IPAllocation.subnet_id == allocation.subnet_id)
        ).all()
        for router_id in interfaces:
            router = session.get(Router, router_id)
            gateway = session.get(Port, router.gw_port_id) if router and router.gw_port_id else None
            if gateway is not None and gateway.network_id == fip.floating_network_id:
                return router_id
        raise NotFound(
            f"External network {fip.floating_network_id} is not reachable from subnet {allocation.subnet_id}. "
            f"Therefore, cannot associate Port {port.id} with a Floating IP.",
            type="ExternalGatewayForFloatingIPNotFound",
        )

    def load(self, session: Session, ctx: Context, resource_id: str) -> FloatingIP:
        return load_owned(session, ctx, FloatingIP, "floatingip", resource_id)

    def rows(
        self, session: Session, ctx: Context, filters: dict[str, tuple[str, ...]]
    ) -> Sequence[FloatingIP]:
        return owned_rows(session, ctx, FloatingIP, filters, ("id", "router_id", "port_id"))

    def update(self, session: Session, ctx: Context, row: FloatingIP, body: dict[str, Any]) -> None:
        apply_standard(row, body)
        if "port_id" in body:
            if body["port_id"] is None:
                row.port_id = row.fixed_ip_address = row.router_id = None
            else:
                self._associate(session, ctx, row, body["port_id"], body.get("fixed_ip_address"))
        bump(row)

    def delete(self, session: Session, ctx: Context, row: FloatingIP) -> None:
        port = session.get(Port, row.floating_port_id)
        session.delete(row)
        session.flush()
        if port is not None:
            session.delete(port)

    def view(self, row: FloatingIP, ctx: Context) -> dict[str, Any]:
        view = standard_view(row)
        del view["name"]
        details = None
        if row.port_id is not None:
            session = Session.object_session(row)
            port = session.get(Port, row.port_id) if session is not None else None
            if port is not None:
                details = {
                    "name": port.name,
                    "network_id": port.network_id,
                    "mac_address": port.mac_address,
                    "admin_state_up": port.admin_state_up,
                    "status": port.status,
                    "device_id": port.device_id,
                    "device_owner": port.device_owner,
                }
        view.update(
            {
                "floating_ip_address": row.floating_ip_address,
                "floating_network_id": row.floating_network_id,
                "router_id": row.router_id,
                "port_id": row.port_id,
                "fixed_ip_address": row.fixed_ip_address,
                "status": row.status,
                "port_details": details,
            }
        )
        return view
