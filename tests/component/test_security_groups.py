"""Security groups and rules through openstacksdk, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from openstack import exceptions
from openstack.connection import Connection

from astara.network.resources.security_groups import default_group_id, ensure_default_group
from tests.component.conftest import NetworkApi
from tests.fixtures import API

FIXTURE = API / "security_groups_list.json"
MEMBER = {"X-Project-Id": "proj-a", "X-Roles": "member,reader"}


def _rule_set(rules: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {(r["direction"], r["ethertype"], r["remote_group_id"], r["protocol"]) for r in rules}


def _default_id(conn: Connection) -> str:
    found = conn.network.find_security_group("default")
    assert found is not None
    return str(found.id)


def _error(answer: httpx.Response, status: int) -> dict[str, str]:
    assert answer.status_code == status, answer.text
    error: dict[str, str] = answer.json()["NeutronError"]
    assert set(error) == {"type", "message", "detail"}
    return error


def test_each_project_gets_one_default_group_with_neutrons_rules(
    network_api: NetworkApi, sdk_as: Callable[[str], Connection]
) -> None:
    alice, bob = sdk_as("proj-a"), sdk_as("proj-b")
    (default,) = list(alice.network.security_groups())
    assert (default.name, default.description) == ("default", "Default security group")
    assert default.id == default_group_id("proj-a") and default.revision_number == 1
    assert _rule_set(default.security_group_rules) == {
        ("ingress", "IPv4", default.id, None),
        ("ingress", "IPv6", default.id, None),
        ("egress", "IPv4", None, None),
        ("egress", "IPv6", None, None),
    }
    assert [g.id for g in alice.network.security_groups()] == [default.id]  # made once
    assert [g.name for g in bob.network.security_groups()] == ["default"]
    assert _default_id(bob) != default.id
    raw = httpx.get(f"{network_api.url}/v2.0/security-groups", headers=MEMBER).json()
    neutron = json.loads(FIXTURE.read_text())["security_groups"][0]
    (group,) = raw["security_groups"]
    assert set(group) == set(neutron)
    assert set(group["security_group_rules"][0]) == set(neutron["security_group_rules"][0]) - {
        "standard_attr_id"
    }
    assert all(r["belongs_to_default_sg"] for r in group["security_group_rules"])


def test_ensure_default_group_is_idempotent(network_api: NetworkApi, sdk: Connection) -> None:
    db = network_api.service.db
    with db.write() as session:
        first = ensure_default_group(session, "proj-x")
        assert ensure_default_group(session, "proj-x") == first
    with db.write() as session:
        assert ensure_default_group(session, "proj-x") == first
    groups = list(sdk.network.security_groups(project_id="proj-x"))
    assert [(g.id, g.name, len(g.security_group_rules)) for g in groups] == [(first, "default", 4)]


def test_group_lifecycle(sdk_as: Callable[[str], Connection]) -> None:
    alice = sdk_as("proj-a")
    web = alice.network.create_security_group(name="web", description="front")
    assert (web.project_id, web.stateful, web.is_shared, web.revision_number) == (
        "proj-a",
        True,
        False,
        1,
    )
    assert _rule_set(web.security_group_rules) == {
        ("egress", "IPv4", None, None),
        ("egress", "IPv6", None, None),
    }
    assert not any(r["belongs_to_default_sg"] for r in web.security_group_rules)
    alice.network.create_security_group(name="db")
    assert {g.name for g in alice.network.security_groups()} == {"default", "web", "db"}
    assert [g.id for g in alice.network.security_groups(name="web")] == [web.id]
    assert alice.network.get_security_group(web.id).description == "front"
    renamed = alice.network.update_security_group(web, name="www", description="new")
    assert (renamed.name, renamed.description, renamed.revision_number) == ("www", "new", 2)
    alice.network.delete_security_group(web)
    with pytest.raises(exceptions.NotFoundException, match="does not exist"):
        alice.network.get_security_group(web.id)
    with pytest.raises(exceptions.ConflictException, match="Default security group already"):
        alice.network.create_security_group(name="Default")


def test_rules_are_added_normalised_refused_twice_and_deleted(sdk: Connection) -> None:
    group = sdk.network.create_security_group(name="g")
    ssh = sdk.network.create_security_group_rule(
        security_group_id=group.id,
        direction="ingress",
        protocol="tcp",
        port_range_min=22,
        port_range_max=22,
        remote_ip_prefix="10.0.0.5/24",
    )
    assert (ssh.ether_type, ssh.remote_ip_prefix, ssh.description) == ("IPv4", "10.0.0.5/24", "")
    assert ssh.project_id == "admin"
    with pytest.raises(exceptions.ConflictException) as twin:
        sdk.network.create_security_group_rule(
            security_group_id=group.id,
            direction="ingress",
            protocol="6",
            port_range_min=22,
            port_range_max=22,
            remote_ip_prefix="10.0.0.0/24",
        )
    assert f"Security group rule already exists. Rule id is {ssh.id}." in str(twin.value)
    ping = sdk.network.create_security_group_rule(
        security_group_id=group.id,
        direction="ingress",
        ethertype="ipv6",
        protocol="icmp",
        port_range_min=128,
        port_range_max=0,
    )
    assert (ping.ether_type, ping.protocol) == ("IPv6", "ipv6-icmp")
    shown = sdk.network.get_security_group(group.id)
    assert shown.revision_number == 3 and len(shown.security_group_rules) == 4
    assert {r.id for r in sdk.network.security_group_rules(security_group_id=group.id)} >= {
        ssh.id,
        ping.id,
    }
    sdk.network.delete_security_group_rule(ssh)
    with pytest.raises(exceptions.NotFoundException):
        sdk.network.get_security_group_rule(ssh.id)
    assert len(sdk.network.get_security_group(group.id).security_group_rules) == 3


def test_rule_view_and_its_only_update(network_api: NetworkApi, sdk: Connection) -> None:
    group = sdk.network.create_security_group(name="g")
    rule = sdk.network.create_security_group_rule(
        security_group_id=group.id, direction="egress", protocol="udp", remote_ip_prefix="10.1.2.3"
    )
    url = f"{network_api.url}/v2.0/security-group-rules/{rule.id}"
    view = httpx.get(url).json()["security_group_rule"]
    assert (view["remote_ip_prefix"], view["normalized_cidr"]) == ("10.1.2.3/32", "10.1.2.3/32")
    assert view["remote_address_group_id"] is None and view["belongs_to_default_sg"] is False
    done = httpx.put(url, json={"security_group_rule": {"description": "dns"}})
    assert done.status_code == 200 and done.json()["security_group_rule"]["description"] == "dns"
    refused = httpx.put(url, json={"security_group_rule": {"protocol": "tcp"}})
    assert "not allowed in UPDATE" in _error(refused, 400)["message"]


@pytest.mark.parametrize(
    ("rule", "kind", "message"),
    [
        ({"direction": "sideways"}, "HTTPBadRequest", "is not in"),
        ({"ethertype": "IPv5"}, "SecurityGroupRuleInvalidEtherType", "not supported"),
        ({"protocol": "bogus"}, "SecurityGroupRuleInvalidProtocol", "protocol bogus not"),
        ({"protocol": 256}, "SecurityGroupRuleInvalidProtocol", "[0 to 255]"),
        ({"port_range_min": 22}, "SecurityGroupProtocolRequiredWithPorts", "specify protocol"),
        (
            {"protocol": "tcp", "port_range_min": 80, "port_range_max": 22},
            "SecurityGroupInvalidPortRange",
            "port_range_min must be <= port_range_max",
        ),
        (
            {"protocol": "tcp", "port_range_min": 22},
            "SecurityGroupInvalidPortRange",
            "port_range_min must be <= port_range_max",
        ),
        (
            {"protocol": "tcp", "port_range_min": 0, "port_range_max": 22},
            "SecurityGroupInvalidPortValue",
            "Invalid value for port 0",
        ),
        (
            {"protocol": "udp", "port_range_min": 1, "port_range_max": 70000},
            "SecurityGroupInvalidPortValue",
            "Invalid value for port 70000",
        ),
        (
            {"protocol": "icmp", "port_range_min": 300},
            "SecurityGroupInvalidIcmpValue",
            "ICMP type (port_range_min) 300. It must be 0 to 255.",
        ),
        (
            {"protocol": "icmp", "port_range_max": 3},
            "SecurityGroupMissingIcmpType",
            "ICMP type (port-range-min) is missing",
        ),
        (
            {"protocol": "gre", "port_range_min": 1, "port_range_max": 2},
            "SecurityGroupInvalidProtocolForPort",
            "Ports cannot be specified for protocol 47",
        ),
        (
            {"ethertype": "IPv6", "remote_ip_prefix": "10.0.0.0/8"},
            "SecurityGroupRuleParameterConflict",
            "Conflicting value ethertype IPv6 for CIDR 10.0.0.0/8",
        ),
        ({"remote_ip_prefix": "10.0.0.0/33"}, "InvalidCIDR", "Invalid CIDR 10.0.0.0/33"),
        (
            {"ethertype": "IPv4", "protocol": "ipv6-icmp"},
            "SecurityGroupEthertypeConflictWithProtocol",
            "Invalid ethertype IPv4 for protocol ipv6-icmp.",
        ),
        (
            {"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "SELF"},
            "SecurityGroupMultipleRemoteEntites",
            "Only one of remote_ip_prefix or remote_group_id",
        ),
        ({"colour": "red"}, "HTTPBadRequest", "Unrecognized attribute"),
    ],
)
def test_invalid_rules_are_refused_with_neutron_errors(
    network_api: NetworkApi,
    sdk: Connection,
    rule: dict[str, Any],
    kind: str,
    message: str,
) -> None:
    group = sdk.network.create_security_group(name="g")
    body = {"security_group_id": group.id, "direction": "ingress", **rule}
    if body.get("remote_group_id") == "SELF":
        body["remote_group_id"] = group.id
    answer = httpx.post(
        f"{network_api.url}/v2.0/security-group-rules", json={"security_group_rule": body}
    )
    error = _error(answer, 400)
    assert (error["type"], message in error["message"]) == (kind, True), error
    assert len(sdk.network.get_security_group(group.id).security_group_rules) == 2


def test_other_projects_groups_are_not_found(
    network_api: NetworkApi, sdk_as: Callable[[str], Connection], sdk: Connection
) -> None:
    alice, bob = sdk_as("proj-a"), sdk_as("proj-b")
    group = alice.network.create_security_group(name="mine")
    rule = alice.network.create_security_group_rule(
        security_group_id=group.id, direction="ingress", protocol="tcp", port_range_min=443,
        port_range_max=443,
    )  # fmt: skip
    assert group.id not in {g.id for g in bob.network.security_groups()}
    with pytest.raises(exceptions.NotFoundException, match=f"Security group {group.id}"):
        bob.network.create_security_group_rule(security_group_id=group.id, direction="ingress")
    with pytest.raises(exceptions.NotFoundException):
        bob.network.create_security_group_rule(
            security_group_id=_default_id(bob),
            direction="ingress",
            remote_group_id=group.id,
        )
    for attempt in (
        lambda: bob.network.get_security_group(group.id),
        lambda: bob.network.delete_security_group(group.id, ignore_missing=False),
        lambda: bob.network.get_security_group_rule(rule.id),
        lambda: bob.network.delete_security_group_rule(rule.id, ignore_missing=False),
    ):
        with pytest.raises(exceptions.NotFoundException):
            attempt()
    assert rule.id not in {r.id for r in bob.network.security_group_rules()}
    shared = httpx.post(
        f"{network_api.url}/v2.0/security-groups",
        json={"security_group": {"name": "common", "shared": True}},
    ).json()["security_group"]
    assert "common" in {g.name for g in bob.network.security_groups()}
    with pytest.raises(exceptions.NotFoundException):
        bob.network.delete_security_group(shared["id"], ignore_missing=False)
    forbidden = httpx.post(
        f"{network_api.url}/v2.0/security-groups",
        json={"security_group": {"name": "x", "shared": True}},
        headers=MEMBER,
    )
    assert forbidden.status_code == 403
    assert {g.name for g in sdk.network.security_groups()} >= {"mine", "common"}  # admin


def test_default_group_cannot_be_deleted_or_renamed_by_its_project(
    sdk_as: Callable[[str], Connection], sdk: Connection
) -> None:
    alice = sdk_as("proj-a")
    default = alice.network.find_security_group("default")
    assert default is not None
    with pytest.raises(exceptions.ConflictException, match="Insufficient rights for removing"):
        alice.network.delete_security_group(default)
    with pytest.raises(exceptions.ConflictException, match="Updating default security group"):
        alice.network.update_security_group(default.id, name="other")
    assert alice.network.update_security_group(default.id, description="d").description == "d"
    sdk.network.delete_security_group(default.id)  # an admin may
    (again,) = list(alice.network.security_groups())  # and it comes back on the next list
    assert again.name == "default" and len(again.security_group_rules) == 4


def test_a_group_used_by_a_port_cannot_be_deleted(sdk_as: Callable[[str], Connection]) -> None:
    alice = sdk_as("proj-a")
    net = alice.network.create_network(name="n")
    group = alice.network.create_security_group(name="web")
    other = alice.network.create_security_group(name="peer")
    alice.network.create_security_group_rule(
        security_group_id=other.id, direction="ingress", remote_group_id=group.id
    )
    port = alice.network.create_port(network_id=net.id, security_group_ids=[group.id])
    with pytest.raises(exceptions.ConflictException, match=f"Security Group {group.id} in use."):
        alice.network.delete_security_group(group)
    alice.network.delete_port(port)
    alice.network.delete_security_group(group)
    assert len(alice.network.get_security_group(other.id).security_group_rules) == 2


async def test_concurrent_first_requests_make_one_default_group(network_api: NetworkApi) -> None:
    headers = {"X-Project-Id": "proj-busy", "X-Roles": "member,reader"}
    async with httpx.AsyncClient(base_url=network_api.url, headers=headers, timeout=60) as client:
        answers = await asyncio.gather(
            *(client.get("/v2.0/security-groups") for _ in range(20)),
            *(
                client.post("/v2.0/security-groups", json={"security_group": {"name": f"g{i}"}})
                for i in range(10)
            ),
        )
        assert [a.status_code for a in answers] == [200] * 20 + [201] * 10, answers[-1].text
        listed = (await client.get("/v2.0/security-groups", params={"name": "default"})).json()
    assert [g["id"] for g in listed["security_groups"]] == [default_group_id("proj-busy")]
    assert len(listed["security_groups"][0]["security_group_rules"]) == 4
