"""Floating-IP-only changes load as a small element update, anything else as a whole table."""

from __future__ import annotations

from typing import Any

from astara.appliance.plan import Link, build_plan
from astara.appliance.render.nftables import element_changes, render_ruleset
from astara.wire.appliance_v1 import Configuration

LINKS = [Link(f"ge{i}", f"fa:16:3e:00:00:0{i}") for i in range(4)]


def _ruleset(fips: list[tuple[str, str]], *, mtu: int = 1500, extra_net: bool = False) -> str:
    nets: list[dict[str, Any]] = [
        {
            "network_id": "e",
            "network_type": "external",
            "interface": {"ifname": "ge1", "addresses": ["203.0.113.2/24"], "mtu": mtu},
        },
        {
            "network_id": "a",
            "network_type": "internal",
            "interface": {"ifname": "ge2", "addresses": ["10.0.1.1/24"]},
        },
    ]
    if extra_net:
        nets.append(
            {
                "network_id": "b",
                "network_type": "internal",
                "interface": {"ifname": "ge3", "addresses": ["10.0.2.1/24"]},
            }
        )
    config = {
        "networks": nets,
        "floating_ips": [{"floating_ip": f, "fixed_ip": x} for f, x in fips],
    }
    return render_ruleset(build_plan(Configuration.model_validate(config), LINKS))


def test_removing_a_floating_ip_is_an_element_update() -> None:
    before = _ruleset([("203.0.113.20", "10.0.1.10"), ("203.0.113.21", "10.0.1.11")])
    after = _ruleset([("203.0.113.20", "10.0.1.10")])
    assert [str(c) for c in element_changes(before, after) or []] == [
        "delete element inet astara floating_dnat { 203.0.113.21 }",
        "delete element inet astara floating_snat { 10.0.1.11 }",
    ]


def test_moving_a_floating_ip_deletes_then_adds_in_one_transaction() -> None:
    before = _ruleset([("203.0.113.20", "10.0.1.10")])
    after = _ruleset([("203.0.113.20", "10.0.1.12")])
    update = element_changes(before, after)
    assert update is not None
    lines = [str(c) for c in update]
    assert lines[0] == "delete element inet astara floating_dnat { 203.0.113.20 }"
    assert lines[1] == "add element inet astara floating_dnat { 203.0.113.20 : 10.0.1.12 }"
    assert "add element inet astara floating_snat { 10.0.1.12 : 203.0.113.20 }" in lines


def test_other_changes_reload_the_whole_table() -> None:
    base = _ruleset([("203.0.113.20", "10.0.1.10")])
    assert element_changes(base, _ruleset([("203.0.113.20", "10.0.1.10")], extra_net=True)) is None
    # the last floating IP gone: the maps and their rules go, so the table is reloaded
    assert element_changes(base, _ruleset([])) is None
    assert element_changes(base, base) == []
