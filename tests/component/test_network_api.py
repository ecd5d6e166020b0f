"""The network API through openstacksdk, a real client, on SQLite and PostgreSQL."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import httpx
import pytest
from openstack import exceptions
from openstack.connection import Connection

from tests.component.conftest import NetworkApi

ADMIN = {"X-Project-Id": "admin", "X-Roles": "admin,member,reader"}


def _network_with_subnet(
    sdk: Connection, cidr: str = "10.0.0.0/24", **subnet: object
) -> tuple[str, str]:
    net = sdk.network.create_network(name="private")
    sub = sdk.network.create_subnet(network_id=net.id, ip_version=4, cidr=cidr, name="s", **subnet)
    return net.id, sub.id


def test_network_lifecycle_and_filters(sdk: Connection) -> None:
    net = sdk.network.create_network(name="private", description="d")
    assert net.provider_network_type == "vxlan" and net.mtu == 1450
    assert net.provider_segmentation_id is not None and not net.is_router_external
    ext = sdk.network.create_network(
        name="public",
        is_router_external=True,
        provider_network_type="flat",
        provider_physical_network="physnet1",
    )
    assert ext.is_router_external and ext.mtu == 1500 and ext.provider_segmentation_id is None
    assert [n.name for n in sdk.network.networks(name="public")] == ["public"]
    assert {n.name for n in sdk.network.networks(is_router_external=False)} == {"private"}
    updated = sdk.network.update_network(net, name="renamed", mtu=1400)
    assert (updated.name, updated.mtu, updated.revision_number) == ("renamed", 1400, 1)
    sdk.network.delete_network(net)
    with pytest.raises(exceptions.NotFoundException):
        sdk.network.get_network(net.id)


def test_vlan_ids_are_allocated_once_and_freed(sdk: Connection) -> None:
    made = [
        sdk.network.create_network(name=f"v{i}", provider_network_type="vlan") for i in range(3)
    ]
    assert sorted(n.provider_segmentation_id for n in made) == [100, 101, 102]
    with pytest.raises(exceptions.ConflictException, match="No tenant network is available"):
        sdk.network.create_network(name="v3", provider_network_type="vlan")
    with pytest.raises(exceptions.ConflictException):
        sdk.network.create_network(
            name="twin", provider_network_type="vlan", provider_segmentation_id=101
        )
    sdk.network.delete_network(made[1])
    again = sdk.network.create_network(name="v4", provider_network_type="vlan")
    assert again.provider_segmentation_id == 101


def test_subnet_defaults_and_ipv6(sdk: Connection) -> None:
    net_id, sub_id = _network_with_subnet(sdk, dns_nameservers=["198.51.100.53"])
    sub = sdk.network.get_subnet(sub_id)
    assert sub.gateway_ip == "10.0.0.1"
    assert sub.allocation_pools == [{"start": "10.0.0.2", "end": "10.0.0.254"}]
    assert sub.dns_nameservers == ["198.51.100.53"] and sub.is_dhcp_enabled
    v6 = sdk.network.create_subnet(
        network_id=net_id,
        ip_version=6,
        cidr="2001:db8:1::/64",
        ipv6_ra_mode="slaac",
        ipv6_address_mode="slaac",
    )
    port = sdk.network.create_port(network_id=net_id)
    addresses = {ip["subnet_id"]: ip["ip_address"] for ip in port.fixed_ips}
    assert addresses[sub_id] == "10.0.0.2"
    mac = port.mac_address.split(":")
    assert port.mac_address.startswith("fa:16:3e:")
    slaac = f"2001:db8:1:0:f816:3eff:fe{mac[3]}:{mac[4]}{mac[5]}"  # modified EUI-64
    assert ipaddress.ip_address(addresses[v6.id]) == ipaddress.ip_address(slaac)
    assert sdk.network.get_network(net_id).subnet_ids == [sub_id, v6.id]


@pytest.mark.parametrize(
    ("subnet", "message"),
    [
        ({"cidr": "10.0.0.1/24"}, "isn't a recommended CIDR"),
        ({"cidr": "10.0.0.0/33"}, "not a valid IP subnet"),
        (
            {
                "cidr": "10.0.0.0/24",
                "allocation_pools": [
                    {"start": "10.0.0.10", "end": "10.0.0.20"},
                    {"start": "10.0.0.15", "end": "10.0.0.30"},
                ],
            },
            "overlapping allocation pools",
        ),
        (
            {
                "cidr": "10.0.0.0/24",
                "allocation_pools": [{"start": "10.0.0.10", "end": "10.0.1.20"}],
            },
            "spans beyond the subnet",
        ),
        (
            {
                "cidr": "10.0.0.0/24",
                "gateway_ip": "10.0.0.5",
                "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.9"}],
            },
            "conflicts with allocation pool",
        ),
        ({"cidr": "10.0.0.0/24", "ip_version": 6}, "is not IPv6"),
        ({"cidr": "10.0.0.0/24", "enable_dhcp": "maybe"}, "cannot be converted to boolean"),
        ({"cidr": "10.0.0.0/24", "colour": "red"}, "Unrecognized attribute"),
    ],
)
def test_bad_subnets_are_refused_with_neutron_errors(
    network_api: NetworkApi, sdk: Connection, subnet: dict[str, object], message: str
) -> None:
    net = sdk.network.create_network(name="n")
    body = {"subnet": {"network_id": net.id, "ip_version": 4, **subnet}}
    answer = httpx.post(f"{network_api.url}/v2.0/subnets", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["NeutronError"]
    assert set(error) == {"type", "message", "detail"} and message in error["message"]
    assert list(sdk.network.subnets(network_id=net.id)) == []


def test_overlapping_subnets_on_one_network_are_refused(sdk: Connection) -> None:
    net_id, _ = _network_with_subnet(sdk)
    with pytest.raises(exceptions.BadRequestException, match="overlaps"):
        sdk.network.create_subnet(network_id=net_id, ip_version=4, cidr="10.0.0.128/25")


def test_fixed_ips_conflicts_and_exhaustion(sdk: Connection) -> None:
    net_id, sub_id = _network_with_subnet(sdk, "10.9.0.0/29")  # 10.9.0.2 - .6 free
    first = sdk.network.create_port(network_id=net_id, fixed_ips=[{"ip_address": "10.9.0.5"}])
    assert first.fixed_ips == [{"subnet_id": sub_id, "ip_address": "10.9.0.5"}]
    with pytest.raises(exceptions.ConflictException, match="in use"):
        sdk.network.create_port(
            network_id=net_id, fixed_ips=[{"subnet_id": sub_id, "ip_address": "10.9.0.5"}]
        )
    with pytest.raises(exceptions.BadRequestException):
        sdk.network.create_port(network_id=net_id, fixed_ips=[{"ip_address": "10.8.0.5"}])
    got = [sdk.network.create_port(network_id=net_id).fixed_ips[0]["ip_address"] for _ in range(4)]
    assert got == ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.6"]
    with pytest.raises(exceptions.ConflictException, match="No more IP addresses"):
        sdk.network.create_port(network_id=net_id)
    with pytest.raises(exceptions.ConflictException, match="One or more ports"):
        sdk.network.delete_subnet(sub_id)
    sdk.network.delete_port(first)
    assert sdk.network.create_port(network_id=net_id).fixed_ips[0]["ip_address"] == "10.9.0.5"


def test_fixed_ips_filters_match_as_before_narrowed_in_sql(
    sdk: Connection, network_api: NetworkApi
) -> None:
    """``fixed_ips=subnet_id=…``/``ip_address=…`` (any of them) narrow the rows in SQL;
    the answer is what the view filter alone gave: ports with a matching allocation."""
    net_a, sub_a = _network_with_subnet(sdk, "10.61.0.0/24")
    net_b, sub_b = _network_with_subnet(sdk, "10.62.0.0/24")
    a1 = sdk.network.create_port(network_id=net_a, fixed_ips=[{"ip_address": "10.61.0.5"}])
    a2 = sdk.network.create_port(network_id=net_a)
    b1 = sdk.network.create_port(network_id=net_b, fixed_ips=[{"ip_address": "10.62.0.5"}])

    def ids(*values: str) -> set[str]:
        params = [("fixed_ips", v) for v in values]
        answer = httpx.get(f"{network_api.url}/v2.0/ports", params=params, headers=ADMIN)
        answer.raise_for_status()
        return {p["id"] for p in answer.json()["ports"]}

    assert ids(f"subnet_id={sub_a}") == {a1.id, a2.id}
    assert ids(f"subnet_id={sub_a}", f"subnet_id={sub_b}") == {a1.id, a2.id, b1.id}
    assert ids("ip_address=10.62.0.5") == {b1.id}
    assert ids(f"subnet_id={sub_a}", "ip_address=10.62.0.5") == {a1.id, a2.id, b1.id}
    assert ids("ip_address_substr=10.61.0.5") == {a1.id}  # not narrowed in SQL, as before
    assert ids("subnet_id=no-such-subnet") == set()


def test_a_refused_port_leaves_nothing_behind(sdk: Connection) -> None:
    net_id, _ = _network_with_subnet(sdk)
    sdk.network.create_port(network_id=net_id, fixed_ips=[{"ip_address": "10.0.0.7"}])
    with pytest.raises(exceptions.ConflictException):
        sdk.network.create_port(
            network_id=net_id,
            name="half",
            fixed_ips=[{"ip_address": "10.0.0.8"}, {"ip_address": "10.0.0.7"}],
        )
    assert [p.name for p in sdk.network.ports(name="half")] == []
    assert (
        sdk.network.create_port(
            network_id=net_id, fixed_ips=[{"ip_address": "10.0.0.8"}]
        ).fixed_ips[0]["ip_address"]
        == "10.0.0.8"
    )


def test_projects_see_only_their_own(
    network_api: NetworkApi, sdk_as: Callable[[str], Connection], sdk: Connection
) -> None:
    alice, bob = sdk_as("proj-a"), sdk_as("proj-b")
    net = alice.network.create_network(name="a-net")
    alice.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.1.0.0/24")
    port = alice.network.create_port(network_id=net.id)
    assert [n.name for n in bob.network.networks()] == []
    with pytest.raises(exceptions.NotFoundException):
        bob.network.get_port(port.id)
    with pytest.raises(exceptions.NotFoundException):
        bob.network.create_port(network_id=net.id)
    with pytest.raises(exceptions.ForbiddenException):
        bob.network.create_network(name="x", provider_network_type="vlan")
    shared = sdk.network.create_network(name="shared", is_shared=True)
    assert [n.name for n in bob.network.networks()] == ["shared"]
    member_view = httpx.get(
        f"{network_api.url}/v2.0/networks/{shared.id}",
        headers={"X-Project-Id": "proj-b", "X-Roles": "member"},
    ).json()
    assert "provider:network_type" not in member_view["network"]  # admin-only, as in Neutron
    assert {p.id for p in sdk.network.ports()} >= {port.id}


def test_pagination_sorting_and_fields(network_api: NetworkApi, sdk: Connection) -> None:
    for i in range(5):
        sdk.network.create_network(name=f"n{i}")
    assert len(list(sdk.network.networks(limit=2))) == 5  # the SDK follows the next links
    page = httpx.get(
        f"{network_api.url}/v2.0/networks",
        params={"limit": 2, "sort_key": "name", "sort_dir": "desc"},
    ).json()
    assert [n["name"] for n in page["networks"]] == ["n4", "n3"]
    assert page["networks_links"][0]["rel"] == "next"
    following = httpx.get(page["networks_links"][0]["href"]).json()
    assert [n["name"] for n in following["networks"]] == ["n2", "n1"]
    only = httpx.get(
        f"{network_api.url}/v2.0/networks",
        params=[("fields", "id"), ("fields", "name"), ("name", "n1")],
    ).json()
    assert [set(n) for n in only["networks"]] == [{"id", "name"}]
    assert httpx.get(f"{network_api.url}/v2.0/networks", params={"bogus": "1"}).status_code == 400


def test_malformed_requests_get_neutron_errors(network_api: NetworkApi) -> None:
    url = f"{network_api.url}/v2.0/networks"
    for content, status in (
        (b"{", 400),
        (b"[]", 400),
        (b'{"network": {"admin_state_up": "yes"}}', 400),
        (b'{"network": {"name": 5}}', 400),
    ):
        answer = httpx.post(url, content=content, headers={"Content-Type": "application/json"})
        assert answer.status_code == status, content
        assert set(answer.json()["NeutronError"]) == {"type", "message", "detail"}
    missing = httpx.get(f"{network_api.url}/v2.0/ports/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert missing.json() == {
        "NeutronError": {
            "type": "PortNotFound",
            "message": "Port 00000000-0000-0000-0000-000000000000 could not be found.",
            "detail": "",
        }
    }
    assert httpx.get(f"{network_api.url}/v2.0/networks").json() == {"networks": []}


def test_versions_root_and_extensions(network_api: NetworkApi) -> None:
    versions = httpx.get(network_api.url + "/").json()
    assert versions["versions"][0]["id"] == "v2.0"
    root = httpx.get(network_api.url + "/v2.0/").json()
    assert {r["collection"] for r in root["resources"]} >= {"networks", "subnets", "ports"}
    aliases = {
        e["alias"] for e in httpx.get(network_api.url + "/v2.0/extensions").json()["extensions"]
    }
    assert {"external-net", "provider", "router", "binding"} <= aliases


def test_ports_get_the_default_security_group_unless_told_otherwise(sdk: Connection) -> None:
    net_id, _ = _network_with_subnet(sdk)
    default = next(g for g in sdk.network.security_groups() if g.name == "default")
    assert sdk.network.create_port(network_id=net_id).security_group_ids == [default.id]
    mine = sdk.network.create_security_group(name="web")
    assert sdk.network.create_port(
        network_id=net_id, security_group_ids=[mine.id]
    ).security_group_ids == [mine.id]
    assert (
        sdk.network.create_port(network_id=net_id, device_owner="network:dhcp").security_group_ids
        == []
    )
    with pytest.raises(exceptions.NotFoundException):
        sdk.network.create_port(
            network_id=net_id, security_group_ids=["00000000-0000-0000-0000-000000000001"]
        )


def test_tags_on_create_and_through_the_tag_api(network_api: NetworkApi, sdk: Connection) -> None:
    net = sdk.network.create_network(name="tagged", tags=["blue"])
    assert net.tags == ["blue"]
    sdk.network.set_tags(net, ["red", "green"])
    assert sorted(sdk.network.get_network(net.id).tags) == ["green", "red"]
    url = f"{network_api.url}/v2.0/networks/{net.id}/tags"
    assert httpx.put(f"{url}/yellow").status_code == 201
    assert httpx.get(f"{url}/yellow").status_code == 204
    assert httpx.delete(f"{url}/yellow").status_code == 204
    assert httpx.get(f"{url}/yellow").status_code == 404
    assert httpx.delete(f"{url}/missing").json()["NeutronError"]["type"] == "TagNotFound"
    assert [n.name for n in sdk.network.networks(tags="red")] == ["tagged"]
    assert [n.name for n in sdk.network.networks(not_tags="red")] == []
    assert httpx.put(url, json={"tags": ["a,b"]}).status_code == 400
    assert httpx.delete(url).status_code == 204
    assert httpx.get(url).json() == {"tags": []}
