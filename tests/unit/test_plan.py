"""The config plan: the seed body, prefix inference, and each cross-field refusal."""

from __future__ import annotations

import copy
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from astara.appliance.errors import ConfigError
from astara.appliance.plan import Link, NetworkKind, build_plan
from astara.scenario import MACS
from astara.wire.appliance_v1 import Configuration, ConfigurationBody

SEED = json.loads((Path(__file__).parent.parent / "data" / "seed_put_body.json").read_text())
SEED_LINKS = [
    Link("ge0", "fa:16:f8:90:32:e3"),
    Link("ge1", "fa:16:3e:00:00:01"),
    Link("ge2", "fa:16:3e:00:00:02"),
]
LINKS = [Link(nic, MACS[nic]) for nic in ("ge0", "ge1", "ge2", "ge3")]


def _router_config() -> dict[str, Any]:
    def net(
        name: str,
        kind: str,
        nic: str,
        addresses: list[str],
        subnets: list[dict[str, Any]],
        allocations: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        return {
            "network_id": name,
            "network_type": kind,
            "interface": {"lladdr": MACS[nic], "addresses": addresses},
            "subnets": subnets,
            "address_allocations": allocations or [],
        }

    return {
        "asn": 64513,
        "neighbor_asn": 64512,
        "tenant_id": "p",
        "floating_ips": [{"floating_ip": "203.0.113.22", "fixed_ip": "10.0.2.10"}],
        "networks": [
            net("m", "management", "ge0", ["fd00::1/64"], []),
            net(
                "e",
                "external",
                "ge1",
                ["203.0.113.2/24", "2001:db8:ffff::2/64"],
                [
                    {"cidr": "203.0.113.0/24", "gateway_ip": "203.0.113.1"},
                    {"cidr": "2001:db8:ffff::/64", "gateway_ip": "2001:db8:ffff::1"},
                ],
            ),
            net(
                "a",
                "internal",
                "ge2",
                ["10.0.1.1/24", "2001:db8:1::1/64"],
                [{"cidr": "10.0.1.0/24"}, {"cidr": "2001:db8:1::/64", "ipv6_ra_mode": "slaac"}],
                [
                    {
                        "hostname": "vm1",
                        "mac_address": "fa:16:3e:00:00:10",
                        "ip_addresses": {"10.0.1.10": True},
                        "device_id": "d1",
                    }
                ],
            ),
            net("b", "internal", "ge3", ["10.0.2.1"], [{"cidr": "10.0.2.0/24"}]),
        ],
    }


def _plan(config: dict[str, Any], links: list[Link] = LINKS) -> Any:
    return build_plan(Configuration.model_validate(config), links)


def test_seed_body_validates_and_plans() -> None:
    body = ConfigurationBody.model_validate(SEED)
    plan = build_plan(body.configuration, SEED_LINKS)
    external = plan.external
    assert external is not None and external.ifname == "ge1"
    assert [str(a) for a in external.addresses] == ["8.8.8.8/32", "2001:4860:4860::8888/128"]
    internal = plan.internals[0]
    assert internal.ifname == "ge2"
    # no subnets in the seed: they are read off the interface addresses
    assert [str(s.cidr) for s in internal.subnets] == ["10.10.10.0/24", "2607:f298:6050:f0ff::/64"]
    assert internal.hosts[0].short_name == "10-10-10-1"
    assert plan.management is not None and plan.management.ifname == "ge0"


def test_router_plan_resolves_everything() -> None:
    plan = _plan(_router_config())
    assert plan.default_v4_gateway == ipaddress.ip_address("203.0.113.1")
    assert plan.default_v6_gateway == ipaddress.ip_address("2001:db8:ffff::1")
    assert plan.floating_ips[0].ifname == "ge3"
    assert plan.bgp is not None and [str(p) for p in plan.bgp.prefixes] == ["2001:db8:1::/64"]
    # a bare address takes its subnet's prefix length
    assert [str(a) for a in plan.internals[1].addresses] == ["10.0.2.1/24"]
    assert [n.kind for n in plan.networks][:2] == [NetworkKind.MANAGEMENT, NetworkKind.EXTERNAL]


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (
            lambda c: c["networks"][2]["interface"]["addresses"].__setitem__(0, "10.9.0.1/24"),
            "networks.2.interface.addresses.0",
            "outside",
        ),
        (
            lambda c: c["networks"][2]["interface"]["addresses"].__setitem__(0, "10.0.1.1/16"),
            "networks.2.interface.addresses.0",
            "prefix length",
        ),
        (
            lambda c: c["networks"][3]["interface"].__setitem__("lladdr", "fa:16:3e:ff:ff:ff"),
            "networks.3.interface.lladdr",
            "no interface",
        ),
        (
            lambda c: c["networks"][3]["interface"].__setitem__("lladdr", MACS["ge2"]),
            "networks.3.interface",
            "already used",
        ),
        (
            lambda c: c["networks"].append(copy.deepcopy(c["networks"][1]) | {"network_id": "x"}),
            "networks.4.network_type",
            "more than one external",
        ),
        (
            lambda c: c["networks"][3].__setitem__("network_id", "a"),
            "networks.3.network_id",
            "twice",
        ),
        (
            lambda c: c["floating_ips"][0].__setitem__("fixed_ip", "192.0.2.9"),
            "floating_ips.0.fixed_ip",
            "not on an internal network",
        ),
        (
            lambda c: c["floating_ips"].append(dict(c["floating_ips"][0])),
            "floating_ips.1.floating_ip",
            "twice",
        ),
        (lambda c: c.pop("neighbor_asn"), "neighbor_asn", "required"),
        (
            lambda c: c["networks"][2]["address_allocations"][0]["ip_addresses"].__setitem__(
                "10.5.5.5", True
            ),
            "networks.2.address_allocations.0.ip_addresses",
            "outside",
        ),
        (
            lambda c: c.__setitem__(
                "static_routes", [{"destination": "192.0.2.0/24", "nexthop": "198.51.100.1"}]
            ),
            "static_routes.0.nexthop",
            "not on a connected network",
        ),
        (
            lambda c: c["networks"][1]["subnets"][0].__setitem__("gateway_ip", "198.51.100.1"),
            "networks.1.subnets.0.gateway_ip",
            "is not in",
        ),
        (
            lambda c: c.__setitem__("default_v4_gateway", "198.51.100.1"),
            "default_v4_gateway",
            "not on the external network",
        ),
    ],
)
def test_cross_field_errors_name_the_field(mutate: Any, field: str, reason: str) -> None:
    config = _router_config()
    mutate(config)
    with pytest.raises(ConfigError) as caught:
        _plan(config)
    assert caught.value.field == field
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("networks", 0, "interface", "mtu"), 20),
        (("networks", 0, "interface", "lladdr"), "zz:16:3e:00:00:00"),
        (("networks", 0, "network_type"), "dmz"),
        (("networks", 0, "interface", "addresses"), ["300.1.1.1"]),
        (("networks", 0, "bogus"), 1),
        (("asn",), 0),
    ],
)
def test_shape_errors_are_refused(path: tuple[Any, ...], value: Any) -> None:
    config = _router_config()
    target: Any = config
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(ValidationError):
        Configuration.model_validate(config)


def test_replan_keeps_unchanged_networks_and_floating_ip_mappings() -> None:
    config = Configuration.model_validate(_router_config())
    first = build_plan(config, LINKS)
    changed = _router_config()
    changed["floating_ips"].append({"floating_ip": "203.0.113.23", "fixed_ip": "10.0.1.10"})
    second = build_plan(Configuration.model_validate(changed), LINKS, previous=(config, first))
    assert all(a is b for a, b in zip(first.networks, second.networks, strict=True))
    assert second.floating_ips[0] is first.floating_ips[0]
    assert (str(second.floating_ips[1].floating_ip), second.floating_ips[1].ifname) == (
        "203.0.113.23",
        "ge2",
    )


def test_replan_remaps_floating_ips_when_their_network_moves() -> None:
    config = Configuration.model_validate(_router_config())
    first = build_plan(config, LINKS)
    moved = _router_config()
    moved["networks"][3]["interface"]["lladdr"] = MACS["ge2"]
    moved["networks"][2]["interface"]["lladdr"] = MACS["ge3"]
    second = build_plan(Configuration.model_validate(moved), LINKS, previous=(config, first))
    assert second.floating_ips[0] is not first.floating_ips[0]
    assert second.floating_ips[0].ifname == "ge2"
