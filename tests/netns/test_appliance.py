"""The appliance end to end, in real namespaces: one PUT makes a working router.

An agent process (``astara appliance serve``) serves the scenario's router
namespace; the test talks to it over the management veth like an orchestrator
would, and checks every path with real packets, real DHCP and real BGP.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from astara import scenario as sc
from astara.lab import Lab


@dataclass
class Running:
    scenario: sc.RouterScenario
    client: httpx.Client
    metadata: sc.FakeMetadata
    agent: subprocess.Popen[bytes]
    token: str


@pytest.fixture
def running(lab: Lab, workdir: Path) -> Iterator[Running]:
    tmp_path = workdir
    scenario = sc.build(lab, workdir / "scenario")
    token = secrets.token_urlsafe(24)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    metadata = sc.FakeMetadata(str(scenario.mgmt_host))
    agent_log = workdir / "agent.log"
    agent = lab.spawn(None, sc.agent_command(scenario, token_file=token_file), log=agent_log)
    base = f"http://[{scenario.mgmt_router}]:5000"
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        sc.wait_for_api(client, agent)
        yield Running(scenario, client, metadata, agent, token)
    finally:
        client.close()
        metadata.close()
        try:
            scenario.drop_appliance(check=True)
        finally:
            agent.terminate()
            agent.wait(timeout=30)
            # shown by pytest when the test failed
            print("agent log:\n" + agent_log.read_text(errors="replace"))


def _put(run: Running, body: dict[str, Any]) -> httpx.Response:
    return run.client.put("/v1/system/config/", json=body)


def _wait(what: str, check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def _dnsmasq_pid(run: Running) -> int:
    out = subprocess.run(["pgrep", "-x", "dnsmasq"], capture_output=True, text=True, check=False)
    for pid in out.stdout.split():
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        if str(run.scenario.workdir) in cmd:
            return int(pid)
    raise AssertionError("no dnsmasq of this appliance is running")


def test_one_put_makes_a_working_router(running: Running) -> None:
    run, s = running, running.scenario
    lab = s.lab
    bgp_sock = s.start_bgp_peer()
    s.start_echo_peer(s.outside, sc.GATEWAY_V4, 8080)
    s.start_echo_peer(s.vm2, "0.0.0.0", 8080)

    response = _put(run, s.config(metadata_port=run.metadata.port))
    assert response.status_code == 200, response.text
    assert response.json()["configuration"]["floating_ips"][0]["floating_ip"] == sc.FLOATING_IP
    assert run.client.get("/v1/system/config").json() == response.json()

    # DHCP: each VM takes its reserved address; DNS: each resolves the other by name
    assert lab.dhcp(s.vm1) == "10.0.1.10"
    assert lab.dhcp(s.vm2) == "10.0.2.10"
    resolve = "import socket,sys; print(socket.gethostbyname(sys.argv[1]))"
    assert lab.run(s.vm1, ["python3", "-c", resolve, "vm2"]).strip() == "10.0.2.10"
    assert lab.run(s.vm2, ["python3", "-c", resolve, "vm1"]).strip() == "10.0.1.10"

    # east-west across subnets
    assert "1 received" in lab.run(s.vm1, ["ping", "-c1", "-W2", "10.0.2.10"])
    # SNAT: outside sees vm1 (no floating IP) as the router's external address
    assert s.ask_peer(s.vm1, sc.GATEWAY_V4, 8080) == sc.EXTERNAL_V4.split("/")[0]
    # floating IP: outside reaches vm2, and vm2 sees outside's real address
    assert s.ask_peer(s.outside, sc.FLOATING_IP, 8080) == sc.GATEWAY_V4
    # vm2 going out is seen as its floating IP
    assert s.ask_peer(s.vm2, sc.GATEWAY_V4, 8080) == sc.FLOATING_IP
    # hairpin: vm1 reaches vm2 through vm2's floating IP
    assert not s.ask_peer(s.vm1, sc.FLOATING_IP, 8080).startswith("error")

    # metadata: 169.254.169.254 reaches the fake orchestrator with the instance's identity
    fetch = "import urllib.request; print(urllib.request.urlopen('http://169.254.169.254/latest/meta-data/instance-id', timeout=5).read().decode())"
    assert lab.run(s.vm1, ["python3", "-c", fetch]).strip() == "i-from-fake-nova"
    seen = run.metadata.requests[-1]
    assert seen["path"] == "/latest/meta-data/instance-id"
    assert seen["X-Forwarded-For"] == "10.0.1.10"
    assert seen["X-Instance-ID"] == "dev-vm1"
    assert seen["X-Tenant-ID"] == "demo-project"
    assert seen["X-Neutron-Network-ID"] == "net-net1"

    # IPv6: vm1 autoconfigures from the router's RA
    def slaac() -> bool:
        out = lab.run(
            s.vm1, ["ip", "-6", "-o", "address", "show", "dev", "eth0", "scope", "global"]
        )
        return "2001:db8:1:" in out

    _wait("a SLAAC address on vm1", slaac)
    # BGP: the outside peer learns the tenant IPv6 prefix
    _wait("the tenant prefix at the BGP peer", lambda: sc.TENANT_V6 in s.bgp_routes(bgp_sock))
    # health: the external IPv4 gateway answers
    assert run.client.get("/v1/status/").json()["v4"] is True
    rules = run.client.get("/v1/firewall/rules/")
    assert rules.headers["content-type"].startswith("text/plain")
    assert sc.FLOATING_IP in rules.text

    # the same config again changes nothing and restarts nothing
    pid = _dnsmasq_pid(run)
    assert _put(run, s.config(metadata_port=run.metadata.port)).status_code == 200
    assert _dnsmasq_pid(run) == pid

    # second PUT without the floating IP: outside can no longer reach vm2
    assert (
        _put(run, s.config(floating_ip=False, metadata_port=run.metadata.port)).status_code == 200
    )
    assert s.ask_peer(s.outside, sc.FLOATING_IP, 8080, timeout=1).startswith("error")
    assert sc.FLOATING_IP not in run.client.get("/v1/firewall/rules/").text

    # a changed reservation is served after a reload: same dnsmasq, new address
    body = s.config(floating_ip=False, vm1_address="10.0.1.11", metadata_port=run.metadata.port)
    assert _put(run, body).status_code == 200
    lab.run(s.vm1, ["ip", "-4", "address", "flush", "dev", "eth0"])
    assert lab.dhcp(s.vm1) == "10.0.1.11"
    assert _dnsmasq_pid(run) == pid


def test_interfaces_and_auth(running: Running) -> None:
    run = running
    interfaces = run.client.get("/v1/system/interfaces").json()["interfaces"]
    names = {i["ifname"] for i in interfaces}
    assert {"ge0", "ge1", "ge2", "ge3"} <= names
    ge0 = run.client.get("/v1/system/interface/ge0/").json()["interface"]
    assert set(ge0) == {
        "addresses",
        "description",
        "groups",
        "ifname",
        "lladdr",
        "media",
        "mtu",
        "state",
    }
    assert ge0["lladdr"] == sc.MACS["ge0"]
    assert f"{run.scenario.mgmt_router}/64" in ge0["addresses"]
    assert run.client.get("/v1/system/interface/ge9").status_code == 404
    anonymous = httpx.get(f"http://[{run.scenario.mgmt_router}]:5000/v1/status/", timeout=10)
    assert anonymous.status_code == 401
    wrong = httpx.get(
        f"http://[{run.scenario.mgmt_router}]:5000/v1/status/",
        headers={"Authorization": "Bearer nope"},
        timeout=10,
    )
    assert wrong.status_code == 401
    assert "Traceback" not in wrong.text


def test_bad_input_is_refused_and_the_previous_config_stays(running: Running) -> None:
    run, s = running, running.scenario
    good = s.config(metadata_port=run.metadata.port)
    assert _put(run, good).status_code == 200
    rules_before = run.client.get("/v1/firewall/rules/").text

    def refused(response: httpx.Response, status: int, needle: str) -> None:
        assert response.status_code == status, response.text
        assert needle in response.text, response.text
        assert "Traceback" not in response.text

    url = "/v1/system/config/"
    refused(
        run.client.put(url, content=b"{not json", headers={"Content-Type": "application/json"}),
        400,
        "not valid JSON",
    )
    refused(
        run.client.put(url, content=b"{}", headers={"Content-Type": "text/plain"}),
        415,
        "application/json",
    )
    refused(run.client.put(url, json={}), 422, "configuration")
    missing = json.loads(json.dumps(good))
    del missing["configuration"]["networks"][0]["network_type"]
    refused(run.client.put(url, json=missing), 422, "networks.0.network_type")
    wrong_type = json.loads(json.dumps(good))
    wrong_type["configuration"]["networks"][1]["interface"]["mtu"] = "big"
    refused(run.client.put(url, json=wrong_type), 422, "networks.1.interface.mtu")
    invalid = json.loads(json.dumps(good))
    invalid["configuration"]["networks"][2]["interface"]["lladdr"] = "not-a-mac"
    refused(run.client.put(url, json=invalid), 422, "lladdr")
    outside_subnet = json.loads(json.dumps(good))
    outside_subnet["configuration"]["networks"][2]["interface"]["addresses"][0] = "10.9.9.1/24"
    refused(run.client.put(url, json=outside_subnet), 422, "outside the network's subnets")
    unknown_nic = json.loads(json.dumps(good))
    unknown_nic["configuration"]["networks"][3]["interface"]["lladdr"] = "fa:16:3e:ff:ff:ff"
    refused(run.client.put(url, json=unknown_nic), 422, "no interface with MAC")
    no_management = json.loads(json.dumps(good))
    del no_management["configuration"]["networks"][0]
    refused(run.client.put(url, json=no_management), 422, "would lock the API out")
    huge = b'{"configuration": {"networks": [], "x": "' + b"a" * (5 * 1024 * 1024) + b'"}}'
    refused(
        run.client.put(url, content=huge, headers={"Content-Type": "application/json"}),
        413,
        "too large",
    )

    # everything above left the first configuration in place
    assert run.client.get("/v1/system/config/").json() == _put(run, good).json()
    assert run.client.get("/v1/firewall/rules/").text == rules_before
    ge3 = run.client.get("/v1/system/interface/ge3").json()["interface"]
    assert "10.0.2.1/24" in ge3["addresses"]


def test_seed_example_body_is_accepted_verbatim(lab: Lab, workdir: Path) -> None:
    tmp_path = workdir
    """Seed 002's PUT example (its elided management address filled in) on ge0/ge1/ge2."""
    body = json.loads((Path(__file__).parent.parent / "data" / "seed_put_body.json").read_text())
    router = lab.namespace("seed")
    peers = [lab.namespace(f"p{i}") for i in range(3)]
    macs = {"ge0": "fa:16:f8:90:32:e3", "ge1": "fa:16:3e:5e:ed:01", "ge2": "fa:16:3e:5e:ed:02"}
    for peer, nic in zip(peers, ("ge0", "ge1", "ge2"), strict=True):
        lab.veth(router, nic, peer, "eth0", mac_a=macs[nic])
    # the provider gives ge0 its management address before the agent starts
    lab.address(router, "ge0", "fdca:3ba5:a17a:acda::1/64")
    mgmt_peer = peers[0]
    lab.address(mgmt_peer, "eth0", "fdca:3ba5:a17a:acda::2/64")
    token_file = tmp_path / "token"
    token_file.write_text("seed-token")
    state = tmp_path / "state"
    control = tmp_path / "control.sock"
    lab.spawn(
        None,
        [
            sc.astara_executable(),
            "appliance",
            "serve",
            "--netns",
            router,
            "--token-file",
            str(token_file),
            "--state-dir",
            str(state),
            "--control-socket",
            str(control),
        ],
    )
    put = (
        "import json,sys,urllib.request,time\n"
        "body=open(sys.argv[1],'rb').read()\n"
        "for i in range(100):\n"
        "    try:\n"
        "        r=urllib.request.Request('http://[fdca:3ba5:a17a:acda::1]:5000/v1/system/config/',data=body,method='PUT',"
        "headers={'Content-Type':'application/json','Authorization':'Bearer seed-token'})\n"
        "        print(urllib.request.urlopen(r,timeout=30).status); break\n"
        "    except OSError: time.sleep(0.1)\n"
    )
    body_file = tmp_path / "body.json"
    body_file.write_text(json.dumps(body))
    # PUT from the management peer namespace, like an orchestrator on the management network
    assert lab.run(mgmt_peer, ["python3", "-c", put, str(body_file)], timeout=60).strip() == "200"
    addresses = {
        nic: lab.run(router, ["ip", "-o", "address", "show", "dev", nic])
        for nic in ("ge0", "ge1", "ge2")
    }
    assert "8.8.8.8/32" in addresses["ge1"]
    assert "2001:4860:4860::8888/128" in addresses["ge1"]
    assert "10.10.10.1/24" in addresses["ge2"]
    assert "2607:f298:6050:f0ff::1/64" in addresses["ge2"]
    assert "fdca:3ba5:a17a:acda::1/64" in addresses["ge0"]
    # dropping the namespace from the agent stops the daemons that run inside it
    subprocess.run(
        [sc.astara_executable(), "appliance", "remove", router, "--control-socket", str(control)],
        check=True,
        capture_output=True,
        timeout=30,
    )
