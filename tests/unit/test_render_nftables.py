"""The nftables renderer: golden files for typical routers, and the properties every text has.

Golden files live in tests/golden/nftables/; ``ASTARA_REGEN_GOLDEN=1`` rewrites
them (review the diff before committing). Whether nft and the kernel accept the
text, and what the rules do to packets, is proven in tests/netns/test_firewall.py.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from astara.appliance.plan import Link, RouterPlan, build_plan
from astara.appliance.render.nftables import render_ruleset
from astara.wire.appliance_v1 import Configuration

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "nftables"

MGMT_MAC = "fa:16:3e:00:00:00"
EXT_MAC = "fa:16:3e:00:00:01"


def _mac(index: int) -> str:
    return f"fa:16:3e:00:{index // 256:02x}:{index % 256:02x}"


def _network(kind: str, index: int, addresses: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "network_id": f"{kind}-{index}",
        "network_type": kind,
        "interface": {"lladdr": _mac(index), "addresses": addresses},
        **extra,
    }


def router_config(
    *,
    internals: int = 2,
    floating: int = 2,
    management: bool = True,
    external: str | None = "dual",  # "dual", "v6", or None
    bgp: bool = True,
) -> dict[str, Any]:
    """A router: ge0 management, ge1 external, ge2.. internal on 10.0.<n>.0/24.

    Floating IPs 203.0.113.20.. map to 10.0.<n>.10.. spread over the internal networks.
    """
    networks: list[dict[str, Any]] = []
    if management:
        networks.append(_network("management", 0, ["fdca:3ba5:a17a:acda::1/64"]))
    if external is not None:
        addresses = ["2001:db8:ffff::2/64"]
        subnets: list[dict[str, Any]] = [
            {"cidr": "2001:db8:ffff::/64", "gateway_ip": "2001:db8:ffff::1"}
        ]
        if external == "dual":
            addresses.insert(0, "203.0.113.2/24")
            subnets.insert(0, {"cidr": "203.0.113.0/24", "gateway_ip": "203.0.113.1"})
        networks.append(_network("external", 1, addresses, subnets=subnets))
    for n in range(1, internals + 1):
        v6 = f"2001:db8:{n:x}::"
        networks.append(
            _network(
                "internal",
                n + 1,
                [f"10.0.{n}.1/24", f"{v6}1/64"],
                subnets=[
                    {"cidr": f"10.0.{n}.0/24", "gateway_ip": f"10.0.{n}.1"},
                    {"cidr": f"{v6}/64", "gateway_ip": f"{v6}1", "ipv6_ra_mode": "slaac"},
                ],
            )
        )
    config: dict[str, Any] = {"networks": networks}
    config["floating_ips"] = [
        {
            "floating_ip": f"203.0.113.{20 + k}",
            "fixed_ip": f"10.0.{internals - k % internals}.{10 + k // internals}",
        }
        for k in range(floating)
    ]
    if bgp:
        config.update(asn=64512, neighbor_asn=64511)
    return config


def plan_of(config: dict[str, Any]) -> RouterPlan:
    """Build the plan against fake links ge<i> whose MACs are the ones the config names."""
    links = [Link(f"ge{i}", _mac(i)) for i in range(len(config["networks"]) + 2)]
    return build_plan(Configuration.model_validate(config), links=links)


def big_router_plan() -> RouterPlan:
    """50 internal networks and 200 floating IPs."""
    return plan_of(router_config(internals=50, floating=200))


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("ASTARA_REGEN_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with ASTARA_REGEN_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{name} differs from its golden file"


@pytest.mark.parametrize(
    ("golden", "config"),
    [
        ("router.nft", router_config()),
        ("no_external.nft", router_config(external=None, floating=0, bgp=False)),
        ("external_v6_only.nft", router_config(external="v6", floating=0)),
        ("no_management.nft", router_config(management=False, internals=1, bgp=False)),
    ],
)
def test_matches_golden(golden: str, config: dict[str, Any]) -> None:
    assert_golden(golden, render_ruleset(plan_of(config)))


def test_ports_come_from_the_arguments() -> None:
    text = render_ruleset(plan_of(router_config()), api_port=5050, metadata_port=9700)
    assert 'iifname "ge0" tcp dport 5050 accept' in text
    assert "tcp dport { 53, 9700 } accept" in text
    assert 'iifname "ge2" ip daddr 169.254.169.254 tcp dport 80 dnat ip to 10.0.1.1:9700' in text
    assert "5000" not in text
    assert "9602" not in text


def test_order_of_the_config_does_not_change_the_text() -> None:
    config = router_config(internals=12, floating=30)
    shuffled = dict(config)
    rng = random.Random(7)
    shuffled["networks"] = rng.sample(config["networks"], len(config["networks"]))
    shuffled["floating_ips"] = rng.sample(config["floating_ips"], len(config["floating_ips"]))
    assert render_ruleset(plan_of(shuffled)) == render_ruleset(plan_of(config))


def test_replaces_the_table_in_one_transaction() -> None:
    lines = render_ruleset(plan_of(router_config())).splitlines()
    body = [line for line in lines if not line.startswith("#")]
    assert body[:3] == [
        "table inet astara {}",
        "delete table inet astara",
        "table inet astara {",
    ]
    assert body[-1] == "}"
    assert sum(line.startswith("table ") for line in body) == 2


def test_not_dnated_is_tested_with_a_mask() -> None:
    text = render_ruleset(plan_of(router_config()))
    assert "ct status != dnat" not in text  # matches almost everything on nft 1.0.6
    assert 'iifname != "ge1" oifname != "ge1" ct status & dnat == 0 accept' in text


def _chain(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(f"\tchain {name} {{")
    end = lines.index("\t}", start)
    return [line.strip() for line in lines[start + 2 : end]]


def test_postrouting_order_east_west_then_floating_then_default_then_hairpin() -> None:
    rules = _chain(render_ruleset(plan_of(router_config())), "postrouting")
    assert rules == [
        'iifname != "ge1" oifname != "ge1" ct status & dnat == 0 accept',
        "snat ip to ip saddr map @floating_snat",
        'oifname "ge1" ip saddr @internal_v4 snat ip to 203.0.113.2',
        'iifname != "ge1" ct status & dnat == dnat snat ip to 203.0.113.2',
    ]


def test_management_nic_is_never_forwarded_or_nated() -> None:
    text = render_ruleset(plan_of(router_config()))
    forward = _chain(text, "forward")
    assert forward[:2] == ['iifname "ge0" drop', 'oifname "ge0" drop']
    assert not [r for r in forward[2:] if "ge0" in r]
    nat = _chain(text, "prerouting") + _chain(text, "postrouting")
    assert not [r for r in nat if "ge0" in r]
    assert '"ge0"' not in text.split("chain input")[0]  # not in any set or map


def test_bgp_is_accepted_from_the_neighbor_only() -> None:
    rules = _chain(render_ruleset(plan_of(router_config())), "input")
    bgp = [r for r in rules if "179" in r]
    assert bgp == [
        'iifname "ge1" ip6 saddr 2001:db8:ffff::1 tcp dport 179 accept',
        'iifname "ge1" ip6 saddr 2001:db8:ffff::1 tcp sport 179 accept',
    ]


def test_without_external_there_is_no_nat_but_metadata() -> None:
    text = render_ruleset(plan_of(router_config(external=None, floating=0, bgp=False)))
    assert "chain postrouting" not in text
    assert "snat" not in text
    assert _chain(text, "prerouting") == [
        f'iifname "ge{n + 1}" ip daddr 169.254.169.254 tcp dport 80 dnat ip to 10.0.{n}.1:9602'
        for n in (1, 2)
    ]


def test_big_router_keeps_the_rule_count_small() -> None:
    started = time.perf_counter()
    text = render_ruleset(big_router_plan())
    elapsed = time.perf_counter() - started
    rules = {name: _chain(text, name) for name in ("input", "forward", "prerouting", "postrouting")}
    assert len(rules["input"]) == len(_chain(render_ruleset(plan_of(router_config())), "input"))
    assert len(rules["forward"]) == 8
    assert len(rules["prerouting"]) == 51  # one metadata redirect per internal NIC + the map
    assert len(rules["postrouting"]) == 4
    assert text.count(" : 10.0.") == 200  # every floating IP in the DNAT map
    assert "203.0.113.219" in text
    assert '"ge51"' in text
    assert elapsed < 0.5


def test_tenant_prefixes_follow_the_networks_of_each_render() -> None:
    """The prefix memo must never serve one plan's prefixes to another."""
    two, three = plan_of(router_config(internals=2)), plan_of(router_config(internals=3))
    merged = {2: "{ 10.0.1.0/24, 10.0.2.0/24 }", 3: "{ 10.0.1.0/24, 10.0.2.0/23 }"}
    for plan, count in ((two, 2), (three, 3), (two, 2)):
        assert f"elements = {merged[count]}" in render_ruleset(plan)
