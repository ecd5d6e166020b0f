"""The dnsmasq renderer: golden files, and the properties the service relies on.

Golden files live in tests/golden/dnsmasq/<case>/; ``ASTARA_REGEN_GOLDEN=1``
rewrites them (review the diff before committing). Whether dnsmasq accepts the
texts and serves DHCP and DNS with them is proven in tests/netns/test_dnsmasq.py.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from astara.appliance.plan import Link, RouterPlan, build_plan
from astara.appliance.render.dnsmasq import DnsmasqFiles, DnsmasqPaths, render_dnsmasq
from astara.wire.appliance_v1 import Configuration

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden" / "dnsmasq"
PATHS = DnsmasqPaths.in_dir(Path("/run/astara/appliance/router-1/dnsmasq"))
SEED_LINKS = [
    Link("ge0", "fa:16:f8:90:32:e3"),
    Link("ge1", "fa:16:3e:00:00:01"),
    Link("ge2", "fa:16:3e:00:00:02"),
]


def full_input() -> dict[str, Any]:
    """The rich case: every kind of network and subnet mode (see golden/dnsmasq/full/input.json)."""
    data: dict[str, Any] = json.loads((GOLDEN / "full" / "input.json").read_text())
    return data


def plan_of(data: dict[str, Any]) -> RouterPlan:
    links = [Link(**link) for link in data["links"]]
    return build_plan(Configuration.model_validate(data["configuration"]), links=links)


def render(data: dict[str, Any]) -> DnsmasqFiles:
    files = render_dnsmasq(plan_of(data), PATHS)
    assert files is not None
    return files


def seed_input() -> dict[str, Any]:
    body = json.loads((ROOT / "data" / "seed_put_body.json").read_text())
    return {
        "links": [{"ifname": lk.ifname, "mac": lk.mac} for lk in SEED_LINKS],
        "configuration": body["configuration"],
    }


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


# -- golden files ---------------------------------------------------------------------
FILE_NAMES = {"conf": "dnsmasq.conf", "hosts": "dhcp-hosts", "opts": "dhcp-opts"}


@pytest.mark.parametrize("case", ["full", "seed"])
@pytest.mark.parametrize("part", ["conf", "hosts", "opts", "addn_hosts"])
def test_golden(case: str, part: str) -> None:
    data = full_input() if case == "full" else seed_input()
    text = getattr(render(data), part)
    golden = GOLDEN / case / FILE_NAMES.get(part, "addn-hosts")
    if os.environ.get("ASTARA_REGEN_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


# -- where dnsmasq listens ------------------------------------------------------------
def test_listens_on_internal_nics_with_addresses_only() -> None:
    conf = lines(render(full_input()).conf)
    assert [x for x in conf if x.startswith("interface=")] == [
        "interface=ge2",
        "interface=ge3",
        "interface=ge4",
    ]
    assert "except-interface=lo" in conf
    assert "bind-dynamic" in conf
    assert "no-resolv" in conf
    assert "no-hosts" in conf


def test_no_router_advertisements_from_dnsmasq() -> None:
    conf = render(full_input()).conf
    assert "enable-ra" not in lines(conf)
    assert "ra-" not in "".join(x for x in lines(conf) if x.startswith("dhcp-range="))


def test_nothing_to_serve_renders_nothing() -> None:
    data = full_input()
    config = data["configuration"]
    config["networks"] = [n for n in config["networks"] if n["network_type"] != "internal"]
    assert render_dnsmasq(plan_of(data), PATHS) is None
    unaddressed = [
        n
        for n in full_input()["configuration"]["networks"]
        if n["network_id"] == "tenant-unaddressed"
    ]
    config["networks"] += unaddressed
    assert render_dnsmasq(plan_of(data), PATHS) is None


def test_files_live_at_the_given_paths() -> None:
    conf = lines(render(full_input()).conf)
    for key, path in (
        ("pid-file", PATHS.pid),
        ("dhcp-leasefile", PATHS.leases),
        ("dhcp-hostsfile", PATHS.hosts),
        ("dhcp-optsfile", PATHS.opts),
        ("addn-hosts", PATHS.addn_hosts),
    ):
        assert f"{key}={path}" in conf


# -- ranges and reservations ----------------------------------------------------------
def test_static_range_per_served_subnet() -> None:
    ranges = [x for x in lines(render(full_input()).conf) if x.startswith("dhcp-range=")]
    assert ranges == [
        "dhcp-range=set:ge2-s0,10.0.1.0,static,255.255.255.0,86400s",
        "dhcp-range=set:ge2-s1,2001:db8:1::,static,64,86400s",  # stateful
        "dhcp-range=set:ge3-s0,10.0.2.0,static,255.255.255.0,86400s",
        "dhcp-range=set:ge3-s1,2001:db8:2::,static,64,86400s",  # stateless: options only
    ]  # ge4: DHCP disabled on the IPv4 subnet, SLAAC on the IPv6 one


def test_hosts_reserve_dhcp_addresses_only() -> None:
    assert lines(render(full_input()).hosts) == [
        "fa:16:3e:aa:00:01,10.0.1.10,[2001:db8:1::10],vm-a",
        # vm-b's IPv6 address is on a stateless subnet: SLAAC, not DHCP
        "fa:16:3e:bb:00:02,10.0.2.10,vm-b",
        # vm-c's address is not DHCP-flagged; vm-d's subnet has DHCP disabled
    ]


def test_subnet_outside_the_appliance_is_not_served() -> None:
    data = full_input()
    tenant_a = data["configuration"]["networks"][2]
    tenant_a["interface"]["addresses"] = ["2001:db8:1::1/64"]  # no IPv4 address on ge2
    files = render(data)
    assert "10.0.1.0" not in files.conf
    assert "tag:ge2-s0" not in files.opts
    assert lines(files.hosts)[0] == "fa:16:3e:aa:00:01,[2001:db8:1::10],vm-a"


# -- options --------------------------------------------------------------------------
def test_options_point_at_the_appliance() -> None:
    opts = lines(render(full_input()).opts)
    assert "tag:ge2-s0,option:router,10.0.1.1" in opts
    assert "tag:ge2-s0,option:dns-server,10.0.1.1" in opts
    assert "tag:ge2-s1,option6:dns-server,[2001:db8:1::1]" in opts
    assert "tag:ge3-s1,option6:dns-server,[2001:db8:2::1]" in opts
    assert not any("option:router" in x for x in opts if x.startswith("tag:ge2-s1"))


def test_classless_routes_include_the_default_route() -> None:
    opts = lines(render(full_input()).opts)
    assert (
        "tag:ge2-s0,option:classless-static-route,192.168.100.0/24,10.0.1.254,0.0.0.0/0,10.0.1.1"
        in opts
    )
    # a host route that already sets the default is not doubled
    assert (
        "tag:ge3-s0,option:classless-static-route,0.0.0.0/0,10.0.2.254,172.16.0.0/12,10.0.2.253"
        in opts
    )


def test_no_classless_routes_without_host_routes() -> None:
    opts = render(seed_input()).opts
    assert "classless-static-route" not in opts


def test_domain_search_from_host_names() -> None:
    opts = lines(render(full_input()).opts)
    assert "tag:ge2-s0,option:domain-search,tenant.test" in opts
    assert "tag:ge2-s1,option6:domain-search,tenant.test" in opts
    data = full_input()
    for net in data["configuration"]["networks"]:
        for alloc in net.get("address_allocations", []):
            alloc["hostname"] = alloc["hostname"].split(".")[0]
    assert "domain-search" not in render(data).opts


# -- names ----------------------------------------------------------------------------
def test_every_allocated_address_has_its_names() -> None:
    assert lines(render(full_input()).addn_hosts) == [
        "10.0.1.10 vm-a.tenant.test vm-a",
        "2001:db8:1::10 vm-a.tenant.test vm-a",
        "10.0.1.12 vm-c",
        "10.0.2.10 vm-b.tenant.test vm-b",
        "2001:db8:2::10 vm-b.tenant.test vm-b",
        "10.0.3.10 vm-d.other.test vm-d",
        "2001:db8:3::10 vm-d.other.test vm-d",
    ]


def test_upstream_servers_from_internal_subnets_without_own_addresses() -> None:
    servers = [x for x in lines(render(full_input()).conf) if x.startswith("server=")]
    # 10.0.1.1 is the appliance itself (a loop); 198.51.100.53 is an external subnet's
    assert servers == ["server=192.0.2.53", "server=192.0.2.54", "server=2001:db8::53"]


# -- what the service relies on -------------------------------------------------------
def test_rendering_is_deterministic() -> None:
    assert render(full_input()) == render(full_input())


def test_port_changes_leave_the_main_conf_alone() -> None:
    """Moved, added, renamed and removed reservations are a SIGHUP, never a restart."""
    before = render(full_input())
    data = full_input()
    tenant_a = data["configuration"]["networks"][2]
    allocs = tenant_a["address_allocations"]
    allocs[0]["ip_addresses"] = {"10.0.1.11": True, "2001:db8:1::11": True}
    allocs[1]["hostname"] = "vm-c.elsewhere.test"
    extra = copy.deepcopy(allocs[0])
    extra.update(
        mac_address="fa:16:3e:aa:00:09", hostname="vm-new", ip_addresses={"10.0.1.99": True}
    )
    allocs.append(extra)
    data["configuration"]["networks"][3]["address_allocations"] = []
    after = render(data)
    assert after.conf == before.conf
    assert after.hosts != before.hosts
    assert after.opts != before.opts  # a new search domain
    assert after.addn_hosts != before.addn_hosts


def test_seed_body_serves_ipv4_only() -> None:
    """The seed names no subnets: they come from the addresses, with no DHCPv6 mode."""
    files = render(seed_input())
    conf = lines(files.conf)
    assert [x for x in conf if x.startswith("interface=")] == ["interface=ge2"]
    assert [x for x in conf if x.startswith("dhcp-range=")] == [
        "dhcp-range=set:ge2-s0,10.10.10.0,static,255.255.255.0,86400s"
    ]
    assert lines(files.hosts) == ["fa:16:4d:c3:95:81,10.10.10.1,10-10-10-1"]
