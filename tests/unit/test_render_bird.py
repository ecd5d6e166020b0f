"""The bird renderer: golden files for typical routers, and the rules every text follows.

Golden files live in tests/golden/bird/; ``ASTARA_REGEN_GOLDEN=1`` rewrites
them (review the diff before committing). Each golden file is also parsed by
``bird -p`` when bird is installed. What bird does with the text (RAs reach a
VM, the BGP peer learns the prefixes) is proven in tests/netns/test_bird.py.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from astara.appliance.plan import Link, RouterPlan, build_plan
from astara.appliance.render.bird import render_bird, router_id
from astara.wire.appliance_v1 import Configuration

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "bird"
SEED = Path(__file__).resolve().parent.parent / "data" / "seed_put_body.json"


def _mac(index: int) -> str:
    return f"fa:16:3e:00:01:{index:02x}"


def _network(
    kind: str, index: int, addresses: list[str], subnets: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "network_id": f"{kind}-{index}",
        "network_type": kind,
        "interface": {"lladdr": _mac(index), "addresses": addresses},
        "subnets": subnets or [],
    }


def _external(v4: bool = True) -> dict[str, Any]:
    addresses = ["2001:db8:ffff::2/64"]
    subnets: list[dict[str, Any]] = [
        {"cidr": "2001:db8:ffff::/64", "gateway_ip": "2001:db8:ffff::1"}
    ]
    if v4:
        addresses.insert(0, "203.0.113.2/24")
        subnets.insert(0, {"cidr": "203.0.113.0/24", "gateway_ip": "203.0.113.1"})
    return _network("external", 1, addresses, subnets)


def _internal(
    index: int, v6: list[tuple[str, str | None]], *, v4: bool = True, router_v6: bool = True
) -> dict[str, Any]:
    """ge<index>, 10.0.<index>.1/24, and one subnet per (cidr, mode); the router takes ::1."""
    addresses = [f"10.0.{index}.1/24"] if v4 else []
    subnets: list[dict[str, Any]] = (
        [{"cidr": f"10.0.{index}.0/24", "gateway_ip": f"10.0.{index}.1"}] if v4 else []
    )
    for cidr, mode in v6:
        net = ipaddress.IPv6Network(cidr)
        gateway = str(net.network_address + 1)
        if router_v6:
            addresses.append(f"{gateway}/{net.prefixlen}")
        subnet: dict[str, Any] = {"cidr": cidr, "gateway_ip": gateway}
        if mode is not None:
            subnet.update(ipv6_ra_mode=mode, ipv6_address_mode=mode)
        subnets.append(subnet)
    return _network("internal", index, addresses, subnets)


def plan_of(config: dict[str, Any]) -> RouterPlan:
    """Build the plan against fake links ge0..ge9 carrying the MACs the config names."""
    links = [Link(f"ge{i}", _mac(i)) for i in range(10)]
    return build_plan(Configuration.model_validate(config), links=links)


def router_config(**extra: Any) -> dict[str, Any]:
    """The netns test's router: ge1 external dual stack with BGP, ge2 internal SLAAC."""
    return {
        "networks": [
            _network("management", 0, ["fdca:3ba5:a17a:acda::1/64"]),
            _external(),
            _internal(2, [("2001:db8:1::/64", "slaac")]),
        ],
        "asn": 64513,
        "neighbor_asn": 64512,
        **extra,
    }


def modes_config() -> dict[str, Any]:
    """No external network; one internal NIC per Neutron IPv6 mode, and one mixing two."""
    return {
        "networks": [
            _network("management", 0, ["fdca:3ba5:a17a:acda::1/64"]),
            _internal(5, [("2001:db8:5::/64", "dhcpv6-stateful"), ("2001:db8:55::/64", "slaac")]),
            _internal(2, [("2001:db8:2::/64", "slaac")]),
            _internal(4, [("2001:db8:4::/64", "dhcpv6-stateful")]),
            _internal(3, [("2001:db8:3::/64", "dhcpv6-stateless")]),
            _internal(6, []),  # IPv4 only: no RA on ge6
        ]
    }


def bgp_only_config() -> dict[str, Any]:
    """An IPv6-only uplink with BGP but no internal IPv6: BGP announces nothing, no RA."""
    return {
        "networks": [_external(v4=False), _internal(2, [])],
        "asn": 4200000000,
        "neighbor_asn": 64512,
    }


def seed_plan() -> RouterPlan:
    body = json.loads(SEED.read_text())
    links = [Link("ge0", "fa:16:f8:90:32:e3"), Link("ge1", _mac(1)), Link("ge2", _mac(2))]
    return build_plan(Configuration.model_validate(body["configuration"]), links=links)


GOLDEN_PLANS: dict[str, Callable[[], RouterPlan]] = {
    "router.conf": lambda: plan_of(router_config()),
    "modes.conf": lambda: plan_of(modes_config()),
    "bgp_only.conf": lambda: plan_of(bgp_only_config()),
    "seed.conf": seed_plan,
}


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("ASTARA_REGEN_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with ASTARA_REGEN_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{name} differs from its golden file"


def _render(plan: RouterPlan) -> str:
    text = render_bird(plan, log_file=Path("/var/lib/astara/r1/bird.log"))
    assert text is not None
    return text


@pytest.mark.parametrize("name", sorted(GOLDEN_PLANS))
def test_matches_golden(name: str) -> None:
    assert_golden(name, _render(GOLDEN_PLANS[name]()))


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird2 is not installed")
@pytest.mark.parametrize("name", sorted(GOLDEN_PLANS))
def test_bird_parses_the_golden_file(name: str) -> None:
    done = subprocess.run(
        ["bird", "-p", "-c", str(GOLDEN / name)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def _interface(text: str, ifname: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines()]
    start = lines.index(f'interface "{ifname}" {{')
    depth, end = 0, start
    for end in range(start, len(lines)):
        depth += lines[end].count("{") - lines[end].count("}")
        if depth == 0:
            break
    return lines[start + 1 : end]


def _prefix_flags(block: list[str], cidr: str) -> tuple[str, str]:
    start = block.index(f"prefix {cidr} {{")
    return block[start + 1], block[start + 2]


# -- nothing to do ------------------------------------------------------------------
def test_nothing_for_bird_without_internal_ipv6_or_bgp() -> None:
    config = {
        "networks": [
            _network("management", 0, ["fdca:3ba5:a17a:acda::1/64"]),
            _external(),  # IPv6 on the uplink alone is not bird's business
            _internal(2, []),
        ]
    }
    assert render_bird(plan_of(config)) is None


def test_nothing_for_bird_without_networks() -> None:
    assert render_bird(plan_of({"networks": []})) is None


# -- router advertisements ------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "autonomous", "managed", "other"),
    [
        ("slaac", "yes", "no", "no"),
        ("dhcpv6-stateless", "yes", "no", "yes"),
        ("dhcpv6-stateful", "no", "yes", "no"),
        (None, "yes", "no", "no"),  # the seed's form: no mode given means SLAAC
    ],
)
def test_flags_follow_the_subnet_mode(
    mode: str | None, autonomous: str, managed: str, other: str
) -> None:
    config = {"networks": [_internal(2, [("2001:db8:1::/64", mode)])]}
    block = _interface(_render(plan_of(config)), "ge2")
    assert f"managed {managed};" in block
    assert f"other config {other};" in block
    assert _prefix_flags(block, "2001:db8:1::/64") == ("onlink yes;", f"autonomous {autonomous};")


def test_address_mode_counts_when_the_ra_mode_is_not_given() -> None:
    config = {"networks": [_internal(2, [("2001:db8:1::/64", None)])]}
    config["networks"][0]["subnets"][1]["ipv6_address_mode"] = "dhcpv6-stateful"
    block = _interface(_render(plan_of(config)), "ge2")
    assert "managed yes;" in block
    assert _prefix_flags(block, "2001:db8:1::/64")[1] == "autonomous no;"


def test_slaac_needs_a_64() -> None:
    config = {"networks": [_internal(2, [("2001:db8:1::/80", "slaac")])]}
    block = _interface(_render(plan_of(config)), "ge2")
    assert _prefix_flags(block, "2001:db8:1::/80") == ("onlink yes;", "autonomous no;")


def test_short_intervals_and_prompt_answers() -> None:
    block = _interface(_render(plan_of(router_config())), "ge2")
    assert block[:5] == [
        "min ra interval 3;",
        "max ra interval 4;",
        "min delay 1;",
        "solicited ra unicast yes;",
        "default lifetime 600;",
    ]


def test_rdnss_is_the_routers_own_address_on_the_nic() -> None:
    block = _interface(_render(plan_of(router_config())), "ge2")
    assert block[-4:] == ["rdnss {", "lifetime 600;", "ns 2001:db8:1::1;", "};"]


def test_no_rdnss_without_an_own_address() -> None:
    config = {"networks": [_internal(2, [("2001:db8:1::/64", "slaac")], router_v6=False)]}
    assert "rdnss" not in _render(plan_of(config))


def test_other_addresses_on_the_nic_are_not_advertised() -> None:
    block = _interface(_render(plan_of(router_config())), "ge2")
    assert block.index("prefix ::/0 {") > block.index("prefix 2001:db8:1::/64 {")
    assert block[block.index("prefix ::/0 {") + 1] == "skip yes;"


def test_only_internal_nics_advertise() -> None:
    text = _render(plan_of(router_config()))
    assert text.count("protocol radv") == 1
    assert 'interface "ge2"' in text
    assert 'interface "ge0"' not in text  # management
    assert text.count('interface "ge1"') == 1  # the BGP session's, not an RA block
    assert 'interface "ge6"' not in _render(plan_of(modes_config()))  # IPv4 only


# -- BGP ----------------------------------------------------------------------------
def _protocol(text: str, header: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines()]
    start = lines.index(header)
    return lines[start + 1 : lines.index("}", start)]


def test_bgp_session_to_the_external_gateway() -> None:
    bgp = _protocol(_render(plan_of(router_config())), "protocol bgp uplink {")
    assert bgp[:5] == [
        "local 2001:db8:ffff::2 as 64513;",
        "neighbor 2001:db8:ffff::1 as 64512;",
        'interface "ge1";',
        "direct;",
        "connect delay time 1;",
    ]
    assert "import none;" in bgp
    assert 'export where proto = "tenant_prefixes";' in bgp


def test_bgp_exports_exactly_the_tenant_prefixes_and_installs_nothing() -> None:
    config = router_config()
    config["networks"].append(_internal(3, [("2001:db8:3::/64", "dhcpv6-stateful")]))
    text = _render(plan_of(config))
    static = _protocol(text, "protocol static tenant_prefixes {")
    assert static == [
        "ipv6;",
        "route 2001:db8:1::/64 unreachable;",
        "route 2001:db8:3::/64 unreachable;",
    ]
    assert "protocol kernel" not in text
    assert "protocol direct" not in text
    assert "2001:db8:ffff::/64" not in text  # the uplink's own prefix is not announced


def test_no_bgp_without_asn() -> None:
    config = router_config()
    del config["asn"], config["neighbor_asn"]
    text = _render(plan_of(config))
    assert "protocol bgp" not in text
    assert "protocol static" not in text


# -- router id and determinism --------------------------------------------------------
def test_router_id_is_the_external_ipv4_address() -> None:
    assert "router id 203.0.113.2;" in _render(plan_of(router_config()))


def test_derived_router_id_is_stable_and_follows_the_external_network() -> None:
    plan = plan_of(bgp_only_config())
    first = router_id(plan)
    assert first == router_id(plan_of(bgp_only_config()))
    assert int(first) != 0
    # adding tenant networks does not change it (no BGP session reset)
    more = bgp_only_config()
    more["networks"].append(_internal(3, [("2001:db8:3::/64", "slaac")]))
    assert router_id(plan_of(more)) == first
    other = bgp_only_config()
    other["networks"][0]["network_id"] = "another-uplink"
    assert router_id(plan_of(other)) != first


def test_router_id_without_external_uses_the_smallest_network_id() -> None:
    config = modes_config()
    reordered = dict(config, networks=list(reversed(config["networks"])))
    assert router_id(plan_of(config)) == router_id(plan_of(reordered))


def test_order_of_the_config_does_not_change_the_text() -> None:
    config = modes_config()
    shuffled = dict(config, networks=list(reversed(config["networks"])))
    for network in shuffled["networks"]:
        network["subnets"] = list(reversed(network["subnets"]))
    assert _render(plan_of(shuffled)) == _render(plan_of(config))


def test_log_file_is_optional() -> None:
    plan = plan_of(router_config())
    text = render_bird(plan)
    assert text is not None
    assert "log " not in text
    logged = render_bird(plan, log_file=Path("/run/x/bird.log"))
    assert logged is not None
    assert 'log "/run/x/bird.log" 1048576 "/run/x/bird.log.old"' in logged
