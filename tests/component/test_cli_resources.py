"""The ``astara`` resource commands against a real network API, on SQLite and PostgreSQL.

Each test runs ``astara.cli.main.main`` in-process, as a user would type the
command, reads what it printed, and checks what it made through the API
itself (plain HTTP), not through the CLI's own client.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest

from astara.cli.main import main
from astara.cli.netclient import NetworkClient
from astara.cli.resources import floating_report
from tests.component.conftest import NetworkApi


class Cli:
    """``astara …`` against one API: exit code, stdout and stderr of each command."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.url = url
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([*argv, "--url", self.url])
        out = self.capsys.readouterr()
        return code, out.out, out.err

    def ok(self, *argv: str) -> str:
        code, out, err = self(*argv)
        # no orchestrator runs here: router list/show say so once, and carry on
        err = "".join(line for line in err.splitlines(keepends=True) if UNAVAILABLE not in line)
        assert (code, err) == (0, ""), err
        return out

    def json(self, *argv: str) -> Any:
        return json.loads(self.ok(*argv, "-f", "json"))

    def fails(self, *argv: str) -> str:
        code, out, err = self(*argv)
        assert (code, out) == (1, ""), out
        return err

    def api(self, collection: str, **filters: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/v2.0/{collection}", params=filters)
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json()[collection]
        return found


UNAVAILABLE = "the orchestrator's view is unavailable"


@pytest.fixture
def cli(
    network_api: NetworkApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Cli:
    # an admin API that is certainly not there (port 9 on loopback: nothing listens)
    monkeypatch.setenv("ASTARA_ADMIN_URL", "http://127.0.0.1:9")
    return Cli(network_api.url, capsys)


def test_network_create_with_a_subnet_then_list_show_set_delete(cli: Cli) -> None:
    out = cli.ok(
        "network",
        "create",
        "private",
        "--provider-network-type",
        "vlan",
        "--segment",
        "200",
        "--subnet",
        "10.1.0.0/24",
    )
    (network,) = cli.api("networks", name="private")
    (subnet,) = cli.api("subnets", network_id=network["id"])
    assert (network["provider:network_type"], network["provider:segmentation_id"]) == ("vlan", 200)
    assert (subnet["name"], subnet["cidr"], subnet["gateway_ip"]) == (
        "private",
        "10.1.0.0/24",
        "10.1.0.1",
    )
    assert network["id"] in out and subnet["id"] in out  # the Field/Value table of the network

    listed = cli.ok("network", "list")
    assert "private" in listed and network["id"] in listed and "vlan" in listed
    assert cli.json("network", "show", "private")["subnets"] == [subnet["id"]]
    assert cli.json("network", "show", network["id"])["name"] == "private"

    changed = cli.json(
        "network", "set", "private", "--name", "renamed", "--shared", "--mtu", "1400"
    )
    assert (changed["name"], changed["shared"], changed["mtu"]) == ("renamed", True, 1400)
    assert "nothing to change" in cli.fails("network", "set", "renamed")

    assert cli.ok("network", "delete", "renamed") == ""
    assert cli.api("networks") == [] and cli.api("subnets") == []
    assert "no network has the id or name 'renamed'" in cli.fails("network", "show", "renamed")


def test_fixed_range_makes_n_vlan_networks_carved_in_order(cli: Cli) -> None:
    out = cli.ok(
        "network",
        "create",
        "--fixed-range",
        "10.20.0.0/24",
        "--num-networks",
        "3",
        "--network-size",
        "64",
        "--vlan-start",
        "300",  # explicit ids: outside the API's tenant range (100..102) on purpose
        "--label",
        "tenant",
        "--project",
        "p1",
    )
    networks = {n["name"]: n for n in cli.api("networks")}
    assert sorted(networks) == ["tenant-0", "tenant-1", "tenant-2"]
    for i, cidr in enumerate(("10.20.0.0/26", "10.20.0.64/26", "10.20.0.128/26")):
        network = networks[f"tenant-{i}"]
        assert network["provider:network_type"] == "vlan"
        assert network["provider:segmentation_id"] == 300 + i
        assert network["project_id"] == "p1"
        (subnet,) = cli.api("subnets", network_id=network["id"])
        assert (subnet["cidr"], subnet["project_id"]) == (cidr, "p1")
        assert f"tenant-{i}" in out and cidr in out and str(300 + i) in out


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (("--network-size", "100"), "--network-size 100 is not a power of two"),
        (("--network-size", "2"), "--network-size 2 is not a power of two of at least 4"),
        (
            ("--num-networks", "5"),
            "5 networks of 64 addresses need 320; --fixed-range 10.30.0.0/24 has 256",
        ),
        (("--vlan-start", "4094"), "VLAN ids 4094..4095 are not all within 1..4094"),
    ],
)
def test_impossible_fixed_ranges_are_refused_before_anything_is_made(
    cli: Cli, options: tuple[str, ...], reason: str
) -> None:
    defaults = {"--num-networks": "2", "--network-size": "64", "--vlan-start": "300"}
    defaults.update(dict(zip(options[::2], options[1::2], strict=True)))
    argv = [arg for pair in defaults.items() for arg in pair]
    err = cli.fails("network", "create", "--fixed-range", "10.30.0.0/24", *argv)
    assert reason in err
    assert cli.api("networks") == []


def test_a_failed_step_undoes_the_networks_made_before_it_and_shows_the_409(cli: Cli) -> None:
    cli.ok("network", "create", "taken", "--provider-network-type", "vlan", "--segment", "301")
    err = cli.fails(
        "network",
        "create",
        "--fixed-range",
        "10.40.0.0/24",
        "--num-networks",
        "3",
        "--network-size",
        "64",
        "--vlan-start",
        "300",
        "--label",
        "lab",
    )
    assert "The vlan 301 on physical network physnet1 is in use." in err
    assert "nothing was kept" in err
    assert [n["name"] for n in cli.api("networks")] == ["taken"]
    assert cli.api("subnets") == []


def test_seed_options_need_fixed_range_and_a_name_is_needed_otherwise(cli: Cli) -> None:
    assert "--num-networks: only with --fixed-range" in cli.fails(
        "network", "create", "x", "--num-networks", "2"
    )
    assert "give the network a NAME" in cli.fails("network", "create")


def test_subnet_and_port_commands(cli: Cli) -> None:
    cli.ok("network", "create", "net1")
    subnet = cli.json(
        "subnet",
        "create",
        "s1",
        "--network",
        "net1",
        "--subnet-range",
        "10.2.0.0/24",
        "--dns-nameserver",
        "192.0.2.53",
        "--no-dhcp",
        "--allocation-pool",
        "start=10.2.0.100,end=10.2.0.199",
    )
    assert (subnet["cidr"], subnet["ip_version"], subnet["enable_dhcp"]) == (
        "10.2.0.0/24",
        4,
        False,
    )
    assert subnet["dns_nameservers"] == ["192.0.2.53"]
    assert subnet["allocation_pools"] == [{"start": "10.2.0.100", "end": "10.2.0.199"}]
    assert "10.2.0.0/24" in cli.ok("subnet", "list", "--network", "net1")
    changed = cli.json("subnet", "set", "s1", "--name", "s2", "--gateway", "none", "--dhcp")
    assert (changed["name"], changed["gateway_ip"], changed["enable_dhcp"]) == ("s2", None, True)

    port = cli.json(
        "port",
        "create",
        "p1",
        "--network",
        "net1",
        "--fixed-ip",
        "subnet=s2,ip-address=10.2.0.150",
    )
    assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "10.2.0.150"}]
    listed = cli.ok("port", "list", "--network", "net1")
    assert "p1" in listed and "10.2.0.150" in listed and port["mac_address"] in listed
    cli.ok("port", "set", "p1", "--name", "p2", "--device-owner", "compute:nova")
    (seen,) = cli.api("ports", name="p2")
    assert seen["device_owner"] == "compute:nova"
    shown = cli.ok("port", "show", "p2")
    assert "ip_address=10.2.0.150" in shown and f"subnet_id={subnet['id']}" in shown

    assert "One or more ports have an IP allocation from this subnet." in cli.fails(
        "subnet", "delete", "s2"
    )
    cli.ok("port", "delete", "p2")
    bare = ("--network", "net1", "--subnet-range", "10.9.0.0/24", "--gateway", "none")
    assert cli.json("subnet", "create", "s3", *bare)["gateway_ip"] is None
    cli.ok("subnet", "delete", "s2", "s3")
    assert cli.api("ports") == [] and cli.api("subnets") == []


def test_an_ambiguous_name_is_refused(cli: Cli) -> None:
    cli.ok("network", "create", "twin")
    cli.ok("network", "create", "twin")
    ids = [n["id"] for n in cli.api("networks")]
    err = cli.fails("network", "delete", "twin")
    assert "2 networks have the name 'twin'" in err and all(i in err for i in ids)
    assert len(cli.api("networks")) == 2
    cli.ok("network", "delete", *ids)
    assert cli.api("networks") == []


def test_floating_pool_create_list_and_delete(cli: Cli) -> None:
    cli.ok("floating", "create", "--ip-range", "203.0.113.0/24")
    (pool,) = cli.api("networks", name="public")
    assert pool["router:external"] and pool["provider:network_type"] == "flat"
    (first,) = cli.api("subnets", network_id=pool["id"])
    assert (first["cidr"], first["enable_dhcp"]) == ("203.0.113.0/24", False)

    cli.ok("floating", "create", "--ip-range", "198.51.100.0/28", "--pool", "public")
    assert [n["id"] for n in cli.api("networks")] == [pool["id"]]  # the same pool, one more range
    assert "overlaps the floating range 203.0.113.0/24" in cli.fails(
        "floating", "create", "--ip-range", "203.0.113.128/25", "--pool", "other"
    )
    cli.ok("network", "create", "inside")
    assert "network 'inside' exists and is not external" in cli.fails(
        "floating", "create", "--ip-range", "192.0.2.0/24", "--pool", "inside"
    )

    listed = cli.ok("floating", "list")
    assert "public" in listed and "203.0.113.0/24" in listed and "198.51.100.0/28" in listed
    pools = cli.json("floating", "list")["pools"]
    assert {(p["pool"], p["range"]) for p in pools} == {
        ("public", "203.0.113.0/24"),
        ("public", "198.51.100.0/28"),
    }

    assert cli.ok("floating", "delete", "198.51.100.0/28") == ""
    assert [s["cidr"] for s in cli.api("subnets", network_id=pool["id"])] == ["203.0.113.0/24"]
    assert "no floating range 198.51.100.0/28" in cli.fails("floating", "delete", "198.51.100.0/28")


def test_floating_delete_is_refused_while_addresses_are_in_use(cli: Cli) -> None:
    cli.ok("floating", "create", "--ip-range", "203.0.113.0/24", "--pool", "ext")
    (pool,) = cli.api("networks", name="ext")
    response = httpx.post(
        f"{cli.url}/v2.0/ports", json={"port": {"network_id": pool["id"], "name": "user"}}
    )
    assert response.status_code == 201
    err = cli.fails("floating", "delete", "203.0.113.0/24")
    assert "One or more ports have an IP allocation from this subnet." in err
    assert [s["cidr"] for s in cli.api("subnets")] == ["203.0.113.0/24"]


def test_an_unreachable_api_is_named_with_what_to_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    assert main(["network", "list", "--url", url]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"astara: cannot reach the network API at {url} — "
        "is `astara network-api` (or `astara up`) running?\n"
    )


def test_the_url_comes_from_astara_url_and_the_project_from_project(
    network_api: NetworkApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASTARA_URL", network_api.url + "/v2.0/")
    assert main(["network", "create", "mine", "--project", "p9", "-f", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["project_id"] == "p9"


def _pool_and_private_net(cli: Cli) -> tuple[str, str]:
    """A floating pool ``public`` (203.0.113.0/24) and ``net1`` with a subnet: their ids."""
    cli.ok("floating", "create", "--ip-range", "203.0.113.0/24")
    pool = cli.json("network", "show", "public")["id"]
    net1 = cli.json("network", "create", "net1", "--subnet", "10.3.0.0/24")["id"]
    return pool, net1


def test_router_commands(cli: Cli) -> None:
    pool, _net1 = _pool_and_private_net(cli)
    router = cli.json("router", "create", "r1", "--external-gateway", "public", "--disable-snat")
    assert router["external_gateway_info"]["network_id"] == pool
    assert router["external_gateway_info"]["enable_snat"] is False
    interface = cli.json("router", "add-interface", "r1", "--subnet", "net1")
    (port,) = cli.api("ports", device_owner="network:router_interface")
    assert interface["port_id"] == port["id"] and port["device_id"] == router["id"]
    assert port["fixed_ips"][0]["ip_address"] == "10.3.0.1"
    listed = cli.ok("router", "list")
    assert "r1" in listed and pool in listed

    assert cli.json("router", "set", "r1", "--enable-snat")["external_gateway_info"]["enable_snat"]
    err = cli.fails("router", "delete", "r1")
    assert f"Router {router['id']} still has ports" in err
    cli.ok("router", "remove-interface", "r1", "--subnet", "net1")
    assert cli.api("ports", device_owner="network:router_interface") == []
    assert cli.json("router", "set", "r1", "--no-external-gateway")["external_gateway_info"] is None
    assert "give --external-gateway NETWORK" in cli.fails("router", "set", "r1", "--disable-snat")
    cli.ok("router", "delete", "r1")
    assert cli.api("routers") == []


def test_floating_ip_commands_and_the_pool_listing(cli: Cli) -> None:
    pool, _net1 = _pool_and_private_net(cli)
    cli.ok("router", "create", "r1", "--external-gateway", "public")
    cli.ok("router", "add-interface", "r1", "--subnet", "net1")
    port = cli.json("port", "create", "vm", "--network", "net1")
    fixed = port["fixed_ips"][0]["ip_address"]

    fip = cli.json("floating-ip", "create", "public", "--port", "vm")
    address = fip["floating_ip_address"]
    assert (fip["floating_network_id"], fip["port_id"], fip["fixed_ip_address"]) == (
        pool,
        port["id"],
        fixed,
    )
    assert address.startswith("203.0.113.")
    assert address in cli.ok("floating-ip", "list", "--network", "public")
    assert cli.json("floating-ip", "show", address)["id"] == fip["id"]
    assert cli.json("floating-ip", "unset", address, "--port")["port_id"] is None
    assert cli.json("floating-ip", "set", fip["id"], "--port", "vm")["fixed_ip_address"] == fixed

    report = cli.json("floating", "list")
    assert [(p["range"], p["allocated"]) for p in report["pools"]] == [("203.0.113.0/24", 1)]
    assert [f["floating_ip_address"] for f in report["floatingips"]] == [address]
    listed = cli.ok("floating", "list")
    assert address in listed and fixed in listed

    gateway = cli.json("router", "show", "r1")["external_gateway_info"]["external_fixed_ips"]
    err = cli.fails("floating", "delete", "203.0.113.0/24")
    assert "203.0.113.0/24 is in use by floating IPs or router gateways" in err
    assert address in err and gateway[0]["ip_address"] in err
    assert [s["cidr"] for s in cli.api("subnets", network_id=pool)] == ["203.0.113.0/24"]
    cli.ok("floating-ip", "delete", address)
    assert cli.api("floatingips") == []


def test_security_group_commands(cli: Cli) -> None:
    group = cli.json("security-group", "create", "web", "--description", "front")
    rule = cli.json(
        "security-group-rule",
        "create",
        "web",
        "--protocol",
        "tcp",
        "--dst-port",
        "80:81",
        "--remote-ip",
        "0.0.0.0/0",
    )
    assert (rule["security_group_id"], rule["direction"], rule["protocol"]) == (
        group["id"],
        "ingress",
        "tcp",
    )
    assert (rule["port_range_min"], rule["port_range_max"]) == (80, 81)
    listed = cli.ok("security-group-rule", "list", "--security-group", "web")
    assert rule["id"] in listed and "0.0.0.0/0" in listed
    assert cli.json("security-group", "set", "web", "--name", "www")["name"] == "www"
    cli.ok("security-group-rule", "delete", rule["id"])
    cli.ok("security-group", "delete", "www")
    assert "www" not in {g["name"] for g in cli.api("security_groups")}


def test_floating_list_tolerates_an_api_without_floating_ips() -> None:
    """An API that serves networks but not ``/v2.0/floatingips`` (a 404) still lists pools."""
    pool = {"id": "p", "name": "public", "router:external": True}
    answers = {
        "/v2.0/networks": {"networks": [pool]},
        "/v2.0/subnets": {"subnets": [{"id": "s", "network_id": "p", "cidr": "203.0.113.0/24"}]},
    }

    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path in answers:
            return httpx.Response(200, json=answers[request.url.path])
        error = {
            "type": "HTTPNotFound",
            "message": "The resource could not be found.",
            "detail": "",
        }
        return httpx.Response(404, json={"NeutronError": error})

    with NetworkClient("http://neutron", transport=httpx.MockTransport(serve)) as client:
        (pools,) = floating_report(client)
    assert pools.items == [
        {
            "pool": "public",
            "range": "203.0.113.0/24",
            "allocated": None,
            "network_id": "p",
            "subnet_id": "s",
        }
    ]
