"""The network service's tables (SQLAlchemy 2 ORM), created by the Alembic migrations.

Owns the schema only; the services in ``astara.network`` read and write it.
Invariants kept by the database itself, so that they hold under concurrent
requests too:
- a fixed IP is allocated once: ``ip_allocations`` is keyed by (subnet, address);
- a segmentation id is allocated once: ``segment_allocations`` is keyed by
  (type, physical network, id);
- a MAC is unique per network;
- a floating IP address is unique per external network.
Lists that are only read and written whole (pools, DNS servers, routes, tags,
address pairs) are JSON columns.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ID = String(36)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Standard:
    """Neutron's standard attributes: every resource has them."""

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now, onupdate=now)
    revision_number: Mapped[int] = mapped_column(Integer, default=0)
    tags: Mapped[list[Any]] = mapped_column(default=list)


class Network(Standard, Base):
    __tablename__ = "networks"

    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    mtu: Mapped[int] = mapped_column(Integer, default=1500)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    external: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    network_type: Mapped[str] = mapped_column(String(16))
    physical_network: Mapped[str | None] = mapped_column(String(64), nullable=True)
    segmentation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    subnets: Mapped[list[Subnet]] = relationship(
        back_populates="network", order_by="Subnet.created_at", lazy="selectin"
    )


class SegmentAllocation(Base):
    __tablename__ = "segment_allocations"

    network_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    physical_network: Mapped[str] = mapped_column(String(64), primary_key=True)
    segmentation_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    network_id: Mapped[str] = mapped_column(ID, ForeignKey("networks.id", ondelete="CASCADE"))


class Subnet(Standard, Base):
    __tablename__ = "subnets"

    network_id: Mapped[str] = mapped_column(ID, ForeignKey("networks.id"), index=True)
    ip_version: Mapped[int] = mapped_column(Integer)
    cidr: Mapped[str] = mapped_column(String(64))
    gateway_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    enable_dhcp: Mapped[bool] = mapped_column(Boolean, default=True)
    ipv6_ra_mode: Mapped[str | None] = mapped_column(String(32), nullable=True)
    ipv6_address_mode: Mapped[str | None] = mapped_column(String(32), nullable=True)
    allocation_pools: Mapped[list[Any]] = mapped_column(default=list)
    dns_nameservers: Mapped[list[Any]] = mapped_column(default=list)
    host_routes: Mapped[list[Any]] = mapped_column(default=list)
    network: Mapped[Network] = relationship(back_populates="subnets", lazy="joined")


class Port(Standard, Base):
    __tablename__ = "ports"
    __table_args__ = (UniqueConstraint("network_id", "mac_address"),)

    network_id: Mapped[str] = mapped_column(ID, ForeignKey("networks.id"), index=True)
    mac_address: Mapped[str] = mapped_column(String(32))
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="DOWN")
    device_id: Mapped[str] = mapped_column(String(255), default="", index=True)
    device_owner: Mapped[str] = mapped_column(String(255), default="", index=True)
    host_id: Mapped[str] = mapped_column(String(255), default="")
    security_groups: Mapped[list[Any]] = mapped_column(default=list)
    allowed_address_pairs: Mapped[list[Any]] = mapped_column(default=list)
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    fixed_ips: Mapped[list[IPAllocation]] = relationship(
        back_populates="port",
        cascade="all, delete-orphan",
        order_by="IPAllocation.position",
        lazy="selectin",
    )


class IPAllocation(Base):
    __tablename__ = "ip_allocations"

    subnet_id: Mapped[str] = mapped_column(ID, ForeignKey("subnets.id"), primary_key=True)
    ip_address: Mapped[str] = mapped_column(String(64), primary_key=True)
    port_id: Mapped[str] = mapped_column(ID, ForeignKey("ports.id", ondelete="CASCADE"), index=True)
    network_id: Mapped[str] = mapped_column(ID, index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    port: Mapped[Port] = relationship(back_populates="fixed_ips")


class Router(Standard, Base):
    __tablename__ = "routers"

    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    gw_port_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("ports.id", ondelete="SET NULL"), nullable=True
    )
    enable_snat: Mapped[bool] = mapped_column(Boolean, default=True)
    routes: Mapped[list[Any]] = mapped_column(default=list)


class FloatingIP(Standard, Base):
    __tablename__ = "floatingips"
    __table_args__ = (UniqueConstraint("floating_network_id", "floating_ip_address"),)

    floating_network_id: Mapped[str] = mapped_column(ID, ForeignKey("networks.id"), index=True)
    floating_ip_address: Mapped[str] = mapped_column(String(64))
    floating_port_id: Mapped[str] = mapped_column(ID, ForeignKey("ports.id"))
    port_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("ports.id", ondelete="SET NULL"), nullable=True, index=True
    )
    fixed_ip_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    router_id: Mapped[str | None] = mapped_column(ID, nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), default="DOWN")


class SecurityGroup(Standard, Base):
    __tablename__ = "security_groups"

    stateful: Mapped[bool] = mapped_column(Boolean, default=True)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    rules: Mapped[list[SecurityGroupRule]] = relationship(
        back_populates="group",
        cascade="all, delete-orphan",
        order_by="SecurityGroupRule.created_at",
        lazy="selectin",
    )


class SecurityGroupRule(Base):
    __tablename__ = "security_group_rules"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    security_group_id: Mapped[str] = mapped_column(
        ID, ForeignKey("security_groups.id", ondelete="CASCADE"), index=True
    )
    direction: Mapped[str] = mapped_column(String(8))
    ethertype: Mapped[str] = mapped_column(String(8), default="IPv4")
    protocol: Mapped[str | None] = mapped_column(String(40), nullable=True)
    port_range_min: Mapped[int | None] = mapped_column(Integer, nullable=True)
    port_range_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    remote_ip_prefix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    remote_group_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now, onupdate=now)
    revision_number: Mapped[int] = mapped_column(Integer, default=0)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    group: Mapped[SecurityGroup] = relationship(back_populates="rules")
