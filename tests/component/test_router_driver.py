"""The router driver against the real network API (SQLite and PostgreSQL) through HTTP.

A topology is built with openstacksdk; ``build_config`` reads it back with an
``HttpRouterReader`` and the result is checked field by field, then fed to
the appliance's own validation (``build_plan``) with links carrying the MACs.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import httpx
import pytest
from openstack.connection import Connection

from astara.appliance.plan import Link, build_plan
from astara.orchestrator.neutron_reader import (
    NetworkResponseError,
    NetworkUnavailableError,
    neutron_client,
    noauth_admin_headers,
)
from astara.orchestrator.router_driver import Management, build_config, hostname
from astara.orchestrator.router_reader import HttpRouterReader, RouterGone
from astara.wire.appliance_v1 import (
    AddressAllocation,
    ConfigurationBody,
    FloatingIP,
    Interface,
    Network,
    Route,
    Subnet,
)

from .conftest import NetworkApi

MGMT = Management(mac="fa:16:3e:00:00:01", address=ipaddress.ip_interface("fdca:3ba5::5/64"))
ORCHESTRATOR = (ipaddress.ip_address("fdca:3ba5::1"), 9697)


def _build(url: str, router_id: str) -> ConfigurationBody:
    async def run() -> ConfigurationBody:
        async with neutron_client(url=url, headers=noauth_admin_headers(), timeout=2) as client:
            return await build_config(
                router_id=router_id,
                reader=HttpRouterReader(client=client),
                management=MGMT,
                orchestrator=ORCHESTRATOR,
            )

    return asyncio.run(run())


def _links(body: ConfigurationBody) -> list[Link]:
    macs = [n.interface.lladdr for n in body.configuration.networks]
    return [Link(f"ge{i}", str(mac)) for i, mac in enumerate(macs)]


def _topology(sdk: Connection) -> dict[str, Any]:
    public = sdk.network.create_network(
        name="public", is_router_external=True, provider_network_type="flat"
    )
    pub_sub = sdk.network.create_subnet(
        network_id=public.id, ip_version=4, cidr="203.0.113.0/24", is_dhcp_enabled=False
    )
    private = sdk.network.create_network(name="private")
    priv_sub = sdk.network.create_subnet(
        network_id=private.id,
        ip_version=4,
        cidr="10.0.0.0/24",
        dns_nameservers=["192.0.2.53"],
        host_routes=[{"destination": "198.51.100.0/24", "nexthop": "10.0.0.254"}],
    )
    dual = sdk.network.create_network(name="dual")
    dual_v4 = sdk.network.create_subnet(
        network_id=dual.id, ip_version=4, cidr="10.0.1.0/24", is_dhcp_enabled=False
    )
    dual_v6 = sdk.network.create_subnet(
        network_id=dual.id,
        ip_version=6,
        cidr="fd00:1::/64",
        ipv6_ra_mode="slaac",
        ipv6_address_mode="slaac",
    )
    router = sdk.network.create_router(name="r1", external_gateway_info={"network_id": public.id})
    sdk.network.add_interface_to_router(router, subnet_id=priv_sub.id)
    # one dual-stack router port: made first, then attached (as Nova-less tooling does)
    dual_port = sdk.network.create_port(
        network_id=dual.id,
        fixed_ips=[
            {"subnet_id": dual_v4.id, "ip_address": "10.0.1.254"},
            {"subnet_id": dual_v6.id},
        ],
    )
    sdk.network.add_interface_to_router(router, port_id=dual_port.id)
    vm1 = sdk.network.create_port(
        network_id=private.id, device_id="vm-1", device_owner="compute:nova"
    )
    vm2 = sdk.network.create_port(network_id=dual.id, device_id="vm-2", device_owner="compute:nova")
    fip = sdk.network.create_ip(floating_network_id=public.id, port_id=vm1.id)
    sdk.network.create_ip(floating_network_id=public.id)  # not associated: not in the config
    router = sdk.network.update_router(
        router, routes=[{"destination": "192.0.2.0/24", "nexthop": "10.0.0.5"}]
    )
    return {
        "public": public,
        "pub_sub": pub_sub,
        "private": private,
        "priv_sub": priv_sub,
        "dual": dual,
        "dual_v4": dual_v4,
        "dual_v6": dual_v6,
        "router": router,
        "dual_port": sdk.network.get_port(dual_port.id),
        "vm1": vm1,
        "vm2": vm2,
        "fip": fip,
    }


def _by_id(body: ConfigurationBody) -> dict[str, Network]:
    return {n.network_id: n for n in body.configuration.networks}


def test_the_config_of_a_router_with_gateway_interfaces_and_floating_ip(
    network_api: NetworkApi, sdk: Connection
) -> None:
    t = _topology(sdk)
    router, vm1, vm2, dual_port = t["router"], t["vm1"], t["vm2"], t["dual_port"]
    body = _build(network_api.url, router.id)
    config = body.configuration
    gw_port = next(
        iter(sdk.network.ports(device_id=router.id, device_owner="network:router_gateway"))
    )
    priv_port = next(
        p
        for p in sdk.network.ports(device_id=router.id, device_owner="network:router_interface")
        if p.network_id == t["private"].id
    )
    management, *others = config.networks
    assert management == Network(
        network_id="management",
        name="management",
        network_type="management",
        interface=Interface(lladdr=MGMT.mac, addresses=["fdca:3ba5::5/64"]),
        subnets=[Subnet(cidr=ipaddress.ip_network("fdca:3ba5::/64"), dhcp_enabled=False)],
    )
    assert [n.network_type for n in others] == ["external", "internal", "internal"]
    nets = _by_id(body)
    external = nets[t["public"].id]
    assert (external.name, external.interface.lladdr) == ("public", gw_port.mac_address)
    assert external.interface.addresses == ["203.0.113.2/24"]
    assert external.subnets == [
        Subnet(
            cidr=ipaddress.ip_network("203.0.113.0/24"),
            gateway_ip=ipaddress.ip_address("203.0.113.1"),
            dhcp_enabled=False,
        )
    ]
    assert external.address_allocations == []

    private = nets[t["private"].id]
    assert (private.interface.lladdr, private.interface.addresses) == (
        priv_port.mac_address,
        ["10.0.0.1/24"],
    )
    assert private.subnets == [
        Subnet(
            cidr=ipaddress.ip_network("10.0.0.0/24"),
            gateway_ip=ipaddress.ip_address("10.0.0.1"),
            dhcp_enabled=True,
            dns_nameservers=[ipaddress.ip_address("192.0.2.53")],
            host_routes=[
                Route(
                    destination=ipaddress.ip_network("198.51.100.0/24"),
                    nexthop=ipaddress.ip_address("10.0.0.254"),
                )
            ],
        )
    ]
    vm1_ip = vm1.fixed_ips[0]["ip_address"]
    assert private.address_allocations == [
        AddressAllocation(
            device_id="vm-1",
            hostname="host-" + vm1_ip.replace(".", "-"),
            ip_addresses={vm1_ip: True},
            mac_address=vm1.mac_address,
        )
    ]

    dual = nets[t["dual"].id]
    dual_v6_ip = next(f["ip_address"] for f in dual_port.fixed_ips if ":" in f["ip_address"])
    assert dual.interface.lladdr == dual_port.mac_address
    assert dual.interface.addresses == ["10.0.1.254/24", f"{dual_v6_ip}/64"]
    assert [
        (str(s.cidr), str(s.gateway_ip), s.dhcp_enabled, s.ipv6_ra_mode, s.ipv6_address_mode)
        for s in dual.subnets
    ] == [
        ("10.0.1.0/24", "10.0.1.1", False, None, None),
        ("fd00:1::/64", "fd00:1::1", True, "slaac", "slaac"),
    ]
    vm2_ips = {f["ip_address"]: ":" not in f["ip_address"] for f in vm2.fixed_ips}
    vm2_v4 = next(ip for ip, v4 in vm2_ips.items() if v4)
    assert dual.address_allocations == [
        AddressAllocation(
            device_id="vm-2",
            hostname="host-" + vm2_v4.replace(".", "-"),
            # DHCP is off on the IPv4 subnet, on for the SLAAC one
            ip_addresses={ip: not v4 for ip, v4 in vm2_ips.items()},
            mac_address=vm2.mac_address,
        )
    ]

    assert config.floating_ips == [
        FloatingIP(
            floating_ip=ipaddress.IPv4Address(t["fip"].floating_ip_address),
            fixed_ip=ipaddress.IPv4Address(vm1_ip),
        )
    ]
    assert config.default_v4_gateway == ipaddress.IPv4Address("203.0.113.1")
    assert config.static_routes == [
        Route(
            destination=ipaddress.ip_network("192.0.2.0/24"),
            nexthop=ipaddress.ip_address("10.0.0.5"),
        )
    ]
    assert (
        config.tenant_id == "admin" and config.hostname == "ak-" + router.id.replace("-", "")[:12]
    )
    assert config.orchestrator is not None and config.orchestrator.address == ORCHESTRATOR[0]

    # what the appliance does with it: the body parses, the plan resolves every NIC by MAC
    assert ConfigurationBody.model_validate_json(body.model_dump_json()) == body
    plan = build_plan(config, _links(body))
    assert [n.ifname for n in plan.networks] == ["ge0", "ge1", "ge2", "ge3"]
    assert plan.external is not None and plan.external.ifname == "ge1"
    assert [(str(m.floating_ip), m.ifname) for m in plan.floating_ips] == [
        (
            t["fip"].floating_ip_address,
            next(n.ifname for n in plan.internals if n.network_id == t["private"].id),
        )
    ]
    assert str(plan.default_v4_gateway) == "203.0.113.1"
    # the same Neutron state gives the same body
    assert _build(network_api.url, router.id) == body


def test_a_router_without_gateway_has_no_external_network(
    network_api: NetworkApi, sdk: Connection
) -> None:
    net = sdk.network.create_network(name="n")
    sub = sdk.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.9.0.0/24")
    router = sdk.network.create_router(name="lonely")
    sdk.network.add_interface_to_router(router, subnet_id=sub.id)
    vm = sdk.network.create_port(network_id=net.id, device_id="vm")
    body = _build(network_api.url, router.id)
    config = body.configuration
    assert [n.network_type for n in config.networks] == ["management", "internal"]
    assert config.networks[1].interface.addresses == ["10.9.0.1/24"]
    assert [a.mac_address for a in config.networks[1].address_allocations] == [vm.mac_address]
    assert (config.floating_ips, config.default_v4_gateway, config.static_routes) == ([], None, [])
    plan = build_plan(config, _links(body))
    assert plan.external is None and len(plan.internals) == 1

    bare = sdk.network.create_router(name="bare")  # no port at all
    assert [n.network_type for n in _build(network_api.url, bare.id).configuration.networks] == [
        "management"
    ]


def test_two_router_ports_on_one_network_are_two_nics(
    network_api: NetworkApi, sdk: Connection
) -> None:
    net = sdk.network.create_network(name="n")
    v4 = sdk.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.8.0.0/24")
    v6 = sdk.network.create_subnet(
        network_id=net.id,
        ip_version=6,
        cidr="fd00:8::/64",
        ipv6_ra_mode="slaac",
        ipv6_address_mode="slaac",
    )
    router = sdk.network.create_router(name="r")
    sdk.network.add_interface_to_router(router, subnet_id=v4.id)
    sdk.network.add_interface_to_router(router, subnet_id=v6.id)
    body = _build(network_api.url, router.id)
    internals = body.configuration.networks[1:]
    assert len(internals) == 2 and len({n.network_id for n in internals}) == 2
    assert {n.network_id.split(":")[0] for n in internals} == {net.id}
    assert {str(n.subnets[0].cidr) for n in internals} == {"10.8.0.0/24", "fd00:8::/64"}
    assert len(build_plan(body.configuration, _links(body)).internals) == 2


def test_a_missing_router_is_gone(network_api: NetworkApi, sdk: Connection) -> None:
    router = sdk.network.create_router(name="short-lived")
    sdk.network.delete_router(router)
    with pytest.raises(RouterGone) as caught:
        _build(network_api.url, router.id)
    assert caught.value.router_id == router.id


def test_the_api_down_is_unavailable() -> None:
    with pytest.raises(NetworkUnavailableError):
        _build("http://127.0.0.1:9", "some-router")


@pytest.mark.parametrize(
    ("dns_name", "addresses", "expected"),
    [
        ("vm-1", ["10.0.0.5"], "vm-1"),
        ("vm-1.example.org.", ["10.0.0.5"], "vm-1.example.org."),
        ("", ["fd00::5", "10.0.0.5"], "host-10-0-0-5"),
        ("", ["fd00:1::f816:3eff:fe00:1"], "host-fd00-1--f816-3eff-fe00-1"),
        ("", ["fd00::"], "host-fd00"),
        ("not a label", ["10.0.0.5"], "host-10-0-0-5"),
    ],
)
def test_hostnames_follow_neutron(dns_name: str, addresses: list[str], expected: str) -> None:
    assert hostname(dns_name, addresses) == expected


def test_the_reader_follows_pages_and_refuses_what_is_not_neutron() -> None:
    seen: list[str] = []
    port = {"id": "p1", "network_id": "n", "mac_address": "fa:16:3e:00:00:09"}

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if "marker" in request.url.params:
            fixed = [{"subnet_id": "s1", "ip_address": "10.0.0.9"}]
            return httpx.Response(200, json={"ports": [{**port, "id": "p2", "fixed_ips": fixed}]})
        if request.url.path == "/v2.0/floatingips":
            return httpx.Response(200, json={"floatingips": [{"id": 5}]})
        fixed = [{"subnet_id": "s1", "ip_address": "10.0.0.8"}]
        nxt = {
            "rel": "next",
            "href": "http://neutron/v2.0/ports?fixed_ips=subnet_id%3Ds1&marker=p1",
        }
        return httpx.Response(
            200, json={"ports": [{**port, "fixed_ips": fixed}], "ports_links": [nxt]}
        )

    async def run() -> list[str]:
        transport = httpx.MockTransport(answer)
        async with httpx.AsyncClient(base_url="http://neutron/", transport=transport) as client:
            reader = HttpRouterReader(client=client)
            ports = await reader.ports_on_subnets(subnet_ids=["s1"])
            with pytest.raises(NetworkResponseError, match="id must be a string"):
                await reader.floating_ips(router_id="r")
            return [p.id for p in ports]

    assert asyncio.run(run()) == ["p1", "p2"]
    assert "fixed_ips=subnet_id%3Ds1" in seen[0] and "marker=p1" in seen[1]


def test_the_whole_view_read_builds_what_live_reads_build(
    network_api: NetworkApi, sdk: Connection
) -> None:
    """``SnapshotRouterReader`` (the startup sweep's five lists) answers as the live reader:
    the same configuration for each router, the same lookups, a router it lacks is gone."""
    t = _topology(sdk)
    second = sdk.network.create_router(name="r2")
    sdk.network.add_interface_to_router(second, subnet_id=t["dual_v4"].id)
    routers = [t["router"].id, second.id]

    async def run() -> None:
        async with neutron_client(
            url=network_api.url, headers=noauth_admin_headers(), timeout=2
        ) as client:
            live = HttpRouterReader(client=client)
            snapshot = await live.snapshot()
            assert len(snapshot) == len(routers)
            subnet_ids = [t["priv_sub"].id, t["dual_v4"].id, t["dual_v6"].id, "no-such-subnet"]
            network_ids = [t["public"].id, t["dual"].id, "no-such-network"]
            for router_id in routers:
                built = [
                    await build_config(
                        router_id=router_id,
                        reader=reader,
                        management=MGMT,
                        orchestrator=ORCHESTRATOR,
                    )
                    for reader in (live, snapshot)
                ]
                assert built[0] == built[1]
                assert await snapshot.router(router_id=router_id) == await live.router(
                    router_id=router_id
                )
                for method in ("router_ports", "floating_ips"):
                    got = await getattr(snapshot, method)(router_id=router_id)
                    want = await getattr(live, method)(router_id=router_id)
                    assert sorted(got, key=repr) == sorted(want, key=repr), method
            for ids, method, key in (
                (subnet_ids, "subnets", "subnet_ids"),
                (subnet_ids, "ports_on_subnets", "subnet_ids"),
                (network_ids, "networks", "network_ids"),
            ):
                got = await getattr(snapshot, method)(**{key: ids})
                want = await getattr(live, method)(**{key: ids})
                assert got and sorted(got, key=repr) == sorted(want, key=repr), method
            with pytest.raises(RouterGone):
                await snapshot.router(router_id="00000000-0000-0000-0000-000000000000")

    asyncio.run(run())
