"""Networks: segmentation (flat, VLAN, VXLAN), external and shared flags, MTU.

A network's segment is chosen on create: an admin may name it
(``provider:*``); otherwise it gets the configured tenant type and the next
free id of that type's ranges. Allocations live in ``segment_allocations``,
whose primary key keeps an id from being handed out twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from astara.network import segments
from astara.network.attributes import STANDARD, Attr, boolean, integer, list_of, one_of, string
from astara.network.context import Context
from astara.network.db.models import Network, Port, SegmentAllocation
from astara.network.errors import InUse, NotFound
from astara.network.store import apply_standard, bump, new_id, owner, standard_view
from astara.settings import NetworkSettings

VXLAN_OVERHEAD = 50
#: ports removed with their network or subnet (Neutron's auto-delete owners); any other
#: port -- a VM's, a router's interface or gateway, a floating IP's -- keeps it in use
SERVICE_OWNERS = ("network:dhcp",)


class Networks:
    name = "network"
    collection = "networks"
    attributes = (
        *STANDARD,
        Attr("admin_state_up", boolean("admin_state_up")),
        Attr("shared", boolean("shared"), admin_only=True),
        Attr("router:external", boolean("router:external"), admin_only=True),
        Attr("mtu", integer("mtu", 68, 65535)),
        Attr("port_security_enabled", boolean("port_security_enabled")),
        Attr(
            "availability_zone_hints", list_of("availability_zone_hints", string("az")), put=False
        ),
        Attr(
            "provider:network_type",
            one_of("provider:network_type", *segments.NETWORK_TYPES),
            put=False,
            admin_only=True,
        ),
        Attr(
            "provider:physical_network",
            string("provider:physical_network", 64),
            put=False,
            admin_only=True,
            nullable=True,
        ),
        Attr(
            "provider:segmentation_id",
            integer("provider:segmentation_id", 0),
            put=False,
            admin_only=True,
            nullable=True,
        ),
    )

    def __init__(self, settings: NetworkSettings) -> None:
        self.settings = settings

    def create(self, session: Session, ctx: Context, body: dict[str, Any]) -> Network:
        network_type = body.get("provider:network_type") or self.settings.tenant_network_type
        physical = body.get("provider:physical_network")
        segment_id = body.get("provider:segmentation_id")
        segments.check_segment(network_type, segment_id, physical)
        if network_type in ("flat", "vlan") and physical is None:
            physical = self.settings.default_physical_network
        network = Network(
            id=new_id(),
            project_id=owner(ctx, body),
            admin_state_up=body.get("admin_state_up", True),
            shared=body.get("shared", False),
            external=body.get("router:external", False),
            port_security_enabled=body.get("port_security_enabled", True),
            network_type=network_type,
            physical_network=physical,
        )
        apply_standard(network, body)
        session.add(network)
        network.segmentation_id = self._allocate(session, network, segment_id)
        largest = self.settings.physical_mtu - (VXLAN_OVERHEAD if network_type == "vxlan" else 0)
        network.mtu = min(body.get("mtu", largest), largest)
        return network

    def _allocate(self, session: Session, network: Network, wanted: int | None) -> int | None:
        kind = network.network_type
        if kind not in ("vlan", "vxlan"):
            return None
        physical = (network.physical_network or "") if kind == "vlan" else ""
        if wanted is None:
            taken = set(
                session.scalars(
                    select(SegmentAllocation.segmentation_id).where(
                        SegmentAllocation.network_type == kind,
                        SegmentAllocation.physical_network == physical,
                    )
                )
            )
            ranges = self.settings.vlan_ranges if kind == "vlan" else self.settings.vxlan_ranges
            wanted = segments.first_free(ranges, taken, kind)
        elif session.get(SegmentAllocation, (kind, physical, wanted)) is not None:
            raise InUse(
                f"Unable to create the network. The {kind} {wanted} on physical network "
                f"{physical or '-'} is in use.",
                type="SegmentationIdInUse" if kind == "vxlan" else "VlanIdInUse",
            )
        session.add(
            SegmentAllocation(
                network_type=kind,
                physical_network=physical,
                segmentation_id=wanted,
                network_id=network.id,
            )
        )
        session.flush()  # the primary key refuses a concurrent twin here
        return wanted

    def load(self, session: Session, ctx: Context, resource_id: str) -> Network:
        network = session.get(Network, resource_id)
        if network is None or not self._visible(network, ctx):
            raise NotFound.of("network", resource_id)
        return network

    @staticmethod
    def _visible(network: Network, ctx: Context) -> bool:
        return ctx.owns(network.project_id) or network.shared or network.external

    def rows(
        self, session: Session, ctx: Context, filters: dict[str, tuple[str, ...]]
    ) -> Sequence[Network]:
        query = select(Network).order_by(Network.created_at, Network.id)
        if not ctx.is_admin:
            query = query.where(
                or_(Network.project_id == ctx.project_id, Network.shared, Network.external)
            )
        if "id" in filters:
            query = query.where(Network.id.in_(filters["id"]))
        return session.scalars(query).all()

    def update(self, session: Session, ctx: Context, row: Network, body: dict[str, Any]) -> None:
        if not ctx.owns(row.project_id):
            raise NotFound.of("network", row.id)
        apply_standard(row, body)
        for key, column in (
            ("admin_state_up", "admin_state_up"),
            ("shared", "shared"),
            ("router:external", "external"),
            ("mtu", "mtu"),
            ("port_security_enabled", "port_security_enabled"),
        ):
            if key in body:
                setattr(row, column, body[key])
        bump(row)

    def delete(self, session: Session, ctx: Context, row: Network) -> None:
        if not ctx.owns(row.project_id):
            raise NotFound.of("network", row.id)
        used = session.scalars(
            select(Port.id)
            .where(Port.network_id == row.id, Port.device_owner.not_in(SERVICE_OWNERS))
            .limit(1)
        ).first()
        if used is not None:
            raise InUse(
                f"Unable to complete operation on network {row.id}. There are one or more ports still in use on the network.",
                type="NetworkInUse",
            )
        session.execute(delete(Port).where(Port.network_id == row.id))
        for subnet in list(row.subnets):
            session.delete(subnet)
        session.execute(delete(SegmentAllocation).where(SegmentAllocation.network_id == row.id))
        session.delete(row)

    def view(self, row: Network, ctx: Context) -> dict[str, Any]:
        view = standard_view(row)
        view.update(
            {
                "admin_state_up": row.admin_state_up,
                "mtu": row.mtu,
                "status": row.status,
                "subnets": [s.id for s in row.subnets],
                "shared": row.shared,
                "availability_zone_hints": [],
                "availability_zones": [],
                "ipv4_address_scope": None,
                "ipv6_address_scope": None,
                "router:external": row.external,
                "qinq": False,
                "vlan_transparent": False,
                "port_security_enabled": row.port_security_enabled,
            }
        )
        view["is_default"] = False  # no default external network (auto-allocation) [002, 093]
        if ctx.is_admin:
            view["provider:network_type"] = row.network_type
            view["provider:physical_network"] = row.physical_network
            view["provider:segmentation_id"] = row.segmentation_id
        return view
