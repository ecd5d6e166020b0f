"""Routers (gateway, interfaces, routes) and floating IPs through openstacksdk."""

from __future__ import annotations

from typing import Any

import pytest
from openstack import exceptions
from openstack.connection import Connection


def _topology(sdk: Connection) -> dict[str, Any]:
    public = sdk.network.create_network(
        name="public", is_router_external=True, provider_network_type="flat"
    )
    pub_sub = sdk.network.create_subnet(
        network_id=public.id, ip_version=4, cidr="203.0.113.0/24", is_dhcp_enabled=False
    )
    private = sdk.network.create_network(name="private")
    priv_sub = sdk.network.create_subnet(network_id=private.id, ip_version=4, cidr="10.0.0.0/24")
    router = sdk.network.create_router(name="r1", external_gateway_info={"network_id": public.id})
    return {
        "public": public,
        "pub_sub": pub_sub,
        "private": private,
        "priv_sub": priv_sub,
        "router": router,
    }


def test_router_gateway_and_interfaces(sdk: Connection) -> None:
    t = _topology(sdk)
    router = t["router"]
    gateway = router.external_gateway_info
    assert gateway["network_id"] == t["public"].id and gateway["enable_snat"] is True
    assert gateway["external_fixed_ips"][0]["ip_address"] == "203.0.113.2"
    info = sdk.network.add_interface_to_router(router, subnet_id=t["priv_sub"].id)
    assert set(info) >= {"id", "port_id", "network_id", "subnet_id", "subnet_ids", "project_id"}
    port = sdk.network.get_port(info["port_id"])
    assert (port.device_owner, port.device_id) == ("network:router_interface", router.id)
    assert port.fixed_ips == [{"subnet_id": t["priv_sub"].id, "ip_address": "10.0.0.1"}]
    gw_ports = list(sdk.network.ports(device_id=router.id, device_owner="network:router_gateway"))
    assert len(gw_ports) == 1 and gw_ports[0].project_id == ""
    with pytest.raises(exceptions.BadRequestException, match="already has a port"):
        sdk.network.add_interface_to_router(router, subnet_id=t["priv_sub"].id)
    with pytest.raises(exceptions.ConflictException, match="still has ports"):
        sdk.network.delete_router(router)
    with pytest.raises(exceptions.ConflictException):
        sdk.network.delete_port(port)  # a router's port goes through the router API
    routed = sdk.network.update_router(
        router, routes=[{"destination": "192.0.2.0/24", "nexthop": "10.0.0.5"}]
    )
    assert routed.routes == [{"destination": "192.0.2.0/24", "nexthop": "10.0.0.5"}]
    with pytest.raises(exceptions.BadRequestException, match="not connected"):
        sdk.network.update_router(
            router, routes=[{"destination": "192.0.2.0/24", "nexthop": "172.16.0.1"}]
        )
    sdk.network.remove_interface_from_router(router, subnet_id=t["priv_sub"].id)
    with pytest.raises(exceptions.NotFoundException):
        sdk.network.get_port(info["port_id"])
    router = sdk.network.get_router(router.id)  # the SDK object kept the refused routes
    sdk.network.update_router(router, external_gateway_info={})
    assert sdk.network.get_router(router.id).external_gateway_info is None
    assert list(sdk.network.ports(device_owner="network:router_gateway")) == []
    sdk.network.delete_router(router)


def test_gateway_must_be_external(sdk: Connection) -> None:
    private = sdk.network.create_network(name="private")
    with pytest.raises(exceptions.BadRequestException, match="not an external network"):
        sdk.network.create_router(name="r", external_gateway_info={"network_id": private.id})


def test_floating_ip_allocate_associate_disassociate(sdk: Connection) -> None:
    t = _topology(sdk)
    vm = sdk.network.create_port(network_id=t["private"].id, name="vm")
    fip = sdk.network.create_ip(floating_network_id=t["public"].id)
    assert (
        fip.floating_ip_address == "203.0.113.3" and fip.port_id is None and fip.router_id is None
    )
    with pytest.raises(exceptions.NotFoundException, match="not reachable"):
        sdk.network.update_ip(fip, port_id=vm.id)
    sdk.network.add_interface_to_router(t["router"], subnet_id=t["priv_sub"].id)
    fip = sdk.network.update_ip(fip, port_id=vm.id)
    assert (fip.port_id, fip.fixed_ip_address, fip.router_id) == (
        vm.id,
        vm.fixed_ips[0]["ip_address"],
        t["router"].id,
    )
    assert fip.port_details["name"] == "vm"
    second = sdk.network.create_ip(floating_network_id=t["public"].id)
    with pytest.raises(exceptions.ConflictException, match="already has a floating IP"):
        sdk.network.update_ip(second, port_id=vm.id)
    with pytest.raises(exceptions.ConflictException):
        sdk.network.remove_interface_from_router(t["router"], subnet_id=t["priv_sub"].id)
    with pytest.raises(exceptions.ConflictException):
        sdk.network.update_router(t["router"], external_gateway_info={})
    assert [f.id for f in sdk.network.ips(port_id=vm.id)] == [fip.id]
    fip = sdk.network.update_ip(fip, port_id=None)
    assert (fip.port_id, fip.fixed_ip_address, fip.router_id) == (None, None, None)
    sdk.network.update_ip(fip, port_id=vm.id)
    sdk.network.delete_port(vm)
    assert sdk.network.get_ip(fip.id).port_id is None  # deleting the port disassociates
    sdk.network.delete_ip(fip)
    assert {p.device_owner for p in sdk.network.ports(network_id=t["public"].id)} == {
        "network:router_gateway",
        "network:floatingip",
    }


def test_floating_ip_needs_an_external_network_and_room(sdk: Connection) -> None:
    private = sdk.network.create_network(name="private")
    with pytest.raises(exceptions.BadRequestException, match="not a valid external network"):
        sdk.network.create_ip(floating_network_id=private.id)
    public = sdk.network.create_network(
        name="tiny", is_router_external=True, provider_network_type="flat"
    )
    sdk.network.create_subnet(
        network_id=public.id, ip_version=4, cidr="198.51.100.0/30"
    )  # one address
    sdk.network.create_ip(floating_network_id=public.id)
    with pytest.raises(exceptions.ConflictException, match="No more IP addresses"):
        sdk.network.create_ip(floating_network_id=public.id)


def test_other_projects_cannot_touch_a_router(sdk: Connection, sdk_as: Any) -> None:
    alice, bob = sdk_as("proj-a"), sdk_as("proj-b")
    router = alice.network.create_router(name="a")
    net = bob.network.create_network(name="b")
    sub = bob.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.5.0.0/24")
    with pytest.raises(exceptions.NotFoundException):
        bob.network.add_interface_to_router(router, subnet_id=sub.id)
    with pytest.raises(exceptions.NotFoundException):
        alice.network.add_interface_to_router(router, subnet_id=sub.id)
    assert [r.name for r in bob.network.routers()] == []


def test_an_external_subnet_in_use_by_gateways_or_floating_ips_stays(sdk: Connection) -> None:
    t = _topology(sdk)
    fip = sdk.network.create_ip(floating_network_id=t["public"].id)
    with pytest.raises(exceptions.ConflictException, match="One or more ports"):
        sdk.network.delete_subnet(t["pub_sub"].id)
    with pytest.raises(exceptions.ConflictException, match="ports still in use"):
        sdk.network.delete_network(t["public"].id)
    sdk.network.delete_ip(fip)
    sdk.network.update_router(t["router"].id, external_gateway_info={})
    sdk.network.delete_subnet(t["pub_sub"].id)
    sdk.network.delete_network(t["public"].id)
