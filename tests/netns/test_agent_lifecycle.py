"""The agent's life cycle, in real namespaces with a real ``astara appliance serve``.

One agent process serves several appliance namespaces, each on its own
management address; namespaces come and go through the control socket
(``astara appliance add|remove|list``) while the agent runs; a restarted agent
adopts the daemons the previous one left running; a push that fails while
applying leaves the previous configuration in place.

Each appliance is built like ``scenario.build`` builds its router: ``ge0`` on
a host-side veth with a ULA /64 (random 16-bit part), the API on ``::1`` of it;
internal NICs ``ge2`` (and ``ge3``) joined to 'VM' namespaces by veths.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from astara import scenario as sc
from astara.lab import Lab

pytestmark = pytest.mark.netns

PORT = 5000
NULL_CONFIG = {"configuration": None}
_ULAS: set[ipaddress.IPv6Network] = set()

# Holds UDP 10.0.2.1:53 (IP_FREEBIND=15: before the address exists), then says so.
_SQUATTER = (
    "import pathlib, signal, socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.setsockopt(socket.IPPROTO_IP, 15, 1)\n"
    "s.bind((sys.argv[1], 53))\n"
    "pathlib.Path(sys.argv[2]).touch()\n"
    "signal.pause()\n"
)


@dataclass(frozen=True)
class Appliance:
    ns: str
    vms: tuple[str, ...]  # the VM behind ge2, then the one behind ge3
    mgmt: ipaddress.IPv6Address  # ge0's address, where the API listens
    token: str


@dataclass(frozen=True)
class Env:
    lab: Lab
    workdir: Path
    token: str

    @property
    def state(self) -> Path:
        return self.workdir / "state"

    @property
    def control(self) -> Path:
        return self.workdir / "control.sock"


@pytest.fixture
def env(lab: Lab, workdir: Path) -> Iterator[Env]:
    """The agent's token, state dir and control socket; no daemon of it may outlive the test."""
    token = secrets.token_urlsafe(24)
    (workdir / "token").write_text(token + "\n")
    made = Env(lab, workdir, token)
    yield made
    leftovers = _pids("dnsmasq", str(made.state)) + _pids("bird", str(made.state))
    for pid in leftovers:  # keep the run's leak check clean, then say what was left
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"daemons outlived the test: {leftovers}"


# -- topology -----------------------------------------------------------------------------------
def _fresh_ula() -> ipaddress.IPv6Network:
    while True:
        ula = ipaddress.IPv6Network(f"fd00:a57a:{secrets.randbelow(0xFFFF):x}::/64")
        if ula not in _ULAS:
            _ULAS.add(ula)
            return ula


def _appliance(env: Env, short: str, nics: tuple[str, ...] = ("ge2",)) -> Appliance:
    """A router namespace: ge0 with its management address, and one VM per internal NIC."""
    lab, ula = env.lab, _fresh_ula()
    router = lab.namespace(short)
    host_nic = lab.host_name()
    lab.veth(None, host_nic, router, "ge0", mac_b=sc.MACS["ge0"])
    lab.address(None, host_nic, f"{ula[0xFFFE]}/64")
    lab.address(router, "ge0", f"{ula[1]}/64")
    vms = []
    for nic, vm_name in zip(nics, ("vm1", "vm2"), strict=False):
        vm = lab.vm(f"{short}{vm_name}")
        lab.veth(router, nic, vm, "eth0", mac_a=sc.MACS[nic], mac_b=sc.MACS[vm_name])
        vms.append(vm)
    return Appliance(router, tuple(vms), ula[1], env.token)


def _config(app: Appliance, *, ge3: bool = False, vm1: str = "10.0.1.10") -> dict[str, Any]:
    """ge0 as management, ge2 (and ge3) internal, each with a DHCP reservation for its VM."""
    networks = [
        _network("mgmt", "management", "ge0", f"{app.mgmt}/64"),
        _network("net1", "internal", "ge2", "10.0.1.1/24", "10.0.1.0/24", ("vm1", vm1)),
    ]
    if ge3:
        networks.append(
            _network("net2", "internal", "ge3", "10.0.2.1/24", "10.0.2.0/24", ("vm2", "10.0.2.10"))
        )
    return {"configuration": {"tenant_id": "lifecycle", "networks": networks}}


def _network(
    name: str,
    kind: str,
    nic: str,
    address: str,
    cidr: str | None = None,
    host: tuple[str, str] | None = None,
) -> dict[str, Any]:
    allocations = []
    if host is not None:
        vm, ip = host
        allocations.append(
            {
                "device_id": f"dev-{vm}",
                "hostname": vm,
                "mac_address": sc.MACS[vm],
                "ip_addresses": {ip: True},
            }
        )
    return {
        "network_id": f"net-{name}",
        "network_type": kind,
        "interface": {"ifname": nic, "lladdr": sc.MACS[nic], "addresses": [address]},
        "subnets": [{"cidr": cidr}] if cidr else [],
        "address_allocations": allocations,
    }


# -- the agent ----------------------------------------------------------------------------------
def _serve_argv(env: Env, namespaces: tuple[str, ...]) -> list[str]:
    argv = [sc.astara_executable(), "appliance", "serve", "--port", str(PORT)]
    argv += ["--token-file", str(env.workdir / "token"), "--state-dir", str(env.state)]
    argv += ["--control-socket", str(env.control)]
    served = [a for ns in namespaces for a in ("--netns", ns)] or ["--empty"]
    return [*argv, *served]


def _ctl(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    """``astara appliance <args>`` against this test's agent; never raises on failure."""
    argv = [sc.astara_executable(), "appliance", *args, "--control-socket", str(env.control)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def _served(env: Env) -> list[str]:
    """The namespaces ``astara appliance list`` shows, sorted."""
    done = _ctl(env, "list")
    assert done.returncode == 0, done.stderr
    return sorted(a["netns"] for a in json.loads(done.stdout)["appliances"])


def _listing(env: Env) -> list[str] | None:
    """The same, asked on the control socket directly (the CLI takes ~1.5 s); None if closed."""
    transport = httpx.HTTPTransport(uds=str(env.control))
    try:
        with httpx.Client(transport=transport, base_url="http://agent", timeout=10) as client:
            response = client.get("/appliances")
    except httpx.TransportError:
        return None
    assert response.status_code == 200, response.text
    return sorted(a["netns"] for a in response.json()["appliances"])


def _running(agent: subprocess.Popen[bytes]) -> bool:
    assert agent.poll() is None, f"the agent exited with {agent.returncode}"
    return True


@contextlib.contextmanager
def _agent(env: Env, *namespaces: str) -> Iterator[subprocess.Popen[bytes]]:
    """An agent serving ``namespaces`` (none: ``--empty``); on exit it drops what it serves."""
    log = env.workdir / "agent.log"
    agent = env.lab.spawn(None, _serve_argv(env, namespaces), log=log)
    try:
        # the control socket opens once the initial namespaces are served
        env.lab.wait_for(
            "the agent's control socket",
            lambda: _running(agent) and _listing(env) is not None,
            timeout=20,
        )
        yield agent
    finally:
        try:
            if agent.poll() is None:
                for ns in _listing(env) or []:
                    done = _ctl(env, "remove", ns)
                    assert done.returncode == 0, done.stderr
        finally:
            if agent.poll() is None:
                agent.terminate()
            agent.wait(timeout=30)
            print("agent log:\n" + log.read_text(errors="replace"))  # shown if the test failed


# -- the API --------------------------------------------------------------------------------------
def _call(app: Appliance, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request on a fresh connection to the appliance's API over its management veth."""
    kwargs.setdefault("timeout", 30)
    url = f"http://[{app.mgmt}]:{PORT}{path}"
    return httpx.request(method, url, headers={"Authorization": f"Bearer {app.token}"}, **kwargs)


def _answers(app: Appliance) -> bool:
    try:
        return _call(app, "GET", "/v1/status/", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _wait_api(env: Env, app: Appliance, agent: subprocess.Popen[bytes]) -> None:
    env.lab.wait_for(f"the API of {app.ns}", lambda: _running(agent) and _answers(app), timeout=20)


def _get_config(app: Appliance) -> Any:
    response = _call(app, "GET", "/v1/system/config/")
    assert response.status_code == 200, response.text
    return response.json()


def _put_config(app: Appliance, body: dict[str, Any]) -> Any:
    response = _call(app, "PUT", "/v1/system/config/", json=body)
    assert response.status_code == 200, response.text
    return response.json()


# -- processes ------------------------------------------------------------------------------------
def _pids(comm: str, marker: str) -> list[int]:
    """Live (not zombie) processes named ``comm`` whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        name, state = stat.split("(", 1)[1].rsplit(")", 1)
        if name == comm and state.split()[0] != "Z" and marker in cmdline:
            found.append(int(entry.name))
    return found


def _dnsmasq(env: Env, app: Appliance) -> int | None:
    """The pid of the appliance's dnsmasq (found by its state dir), or None."""
    pids = _pids("dnsmasq", f"{env.state / app.ns}/")
    assert len(pids) <= 1, f"more than one dnsmasq for {app.ns}: {pids}"
    return pids[0] if pids else None


def _lease(env: Env, vm: str) -> str:
    """Drop the VM's IPv4 address and take a lease again."""
    env.lab.run(vm, ["ip", "-4", "address", "flush", "dev", "eth0"])
    return env.lab.dhcp(vm)


@contextlib.contextmanager
def _squatter(env: Env, app: Appliance, address: str) -> Iterator[subprocess.Popen[bytes]]:
    """A process in the router holding UDP ``address``:53 until the block ends."""
    ready = env.workdir / "squatter.ready"
    squatter = env.lab.spawn(app.ns, ["python3", "-c", _SQUATTER, address, str(ready)])
    try:
        env.lab.wait_for(f"the squatter on {address}:53", ready.exists, timeout=10)
        yield squatter
    finally:
        squatter.terminate()
        squatter.wait(timeout=10)


def _assert_apply_failed(response: httpx.Response) -> None:
    """A 5xx naming dnsmasq, with code apply_failed, and no traceback."""
    assert 500 <= response.status_code < 600, response.text
    assert response.json()["error"]["code"] == "apply_failed", response.text
    assert "dnsmasq" in response.json()["error"]["message"], response.text
    assert "Traceback" not in response.text


# -- the tests ------------------------------------------------------------------------------------
def test_one_agent_serves_two_namespaces_independently(env: Env) -> None:
    """Each namespace answers on its own address about itself; a push to one leaves the other."""
    one, two = _appliance(env, "one"), _appliance(env, "two")
    with _agent(env, one.ns, two.ns) as agent:
        _wait_api(env, one, agent)
        _wait_api(env, two, agent)
        assert _served(env) == sorted([one.ns, two.ns])
        for app, other in ((one, two), (two, one)):
            assert _call(app, "GET", "/v1/status/").json() == {"v4": False, "v6": False}
            interfaces = _call(app, "GET", "/v1/system/interfaces").json()["interfaces"]
            by_name = {i["ifname"]: i for i in interfaces}
            assert set(by_name) == {"ge0", "ge2"}
            assert f"{app.mgmt}/64" in by_name["ge0"]["addresses"]
            assert f"{other.mgmt}/64" not in by_name["ge0"]["addresses"]
            assert _get_config(app) == NULL_CONFIG

        applied = _put_config(one, _config(one))
        assert _get_config(one) == applied
        assert _get_config(two) == NULL_CONFIG
        assert "10.0.1.1/24" not in env.lab.run(
            two.ns, ["ip", "-o", "address", "show", "dev", "ge2"]
        )
        assert _dnsmasq(env, one) is not None
        assert _dnsmasq(env, two) is None

        # and the other way round: a push to two leaves one's configuration alone
        applied_two = _put_config(two, _config(two, vm1="10.0.1.20"))
        assert _get_config(two) == applied_two
        assert _get_config(one) == applied
        assert env.lab.dhcp(one.vms[0]) == "10.0.1.10"
        assert env.lab.dhcp(two.vms[0]) == "10.0.1.20"


def test_namespaces_come_and_go_through_the_control_socket(env: Env) -> None:
    """add/list/remove on a running agent; remove stops the services; bad adds fail clearly."""
    one, two = _appliance(env, "one"), _appliance(env, "two")
    with _agent(env) as agent:
        assert _listing(env) == []
        for app in (one, two):
            added = _ctl(env, "add", app.ns)
            assert added.returncode == 0, added.stderr
            assert json.loads(added.stdout) == {
                "netns": app.ns,
                "address": str(app.mgmt),
                "port": PORT,
            }
            _wait_api(env, app, agent)
        assert _served(env) == sorted([one.ns, two.ns])

        _put_config(one, _config(one))
        assert env.lab.dhcp(one.vms[0]) == "10.0.1.10"
        assert _dnsmasq(env, one) is not None

        removed = _ctl(env, "remove", one.ns)
        assert removed.returncode == 0, removed.stderr
        with pytest.raises(httpx.ConnectError):
            _call(one, "GET", "/v1/status/", timeout=5)
        assert _dnsmasq(env, one) is None
        assert "astara" not in env.lab.run(one.ns, ["nft", "list", "tables"])
        assert not (env.state / one.ns).exists()
        assert _listing(env) == [two.ns]
        assert _running(agent) and _answers(two)

        missing = f"{env.lab.prefix}-nowhere"
        refused = _ctl(env, "add", missing)
        assert refused.returncode == 1
        assert f"network namespace {missing!r} does not exist" in refused.stderr
        assert "Traceback" not in refused.stderr

        bare = env.lab.namespace("bare")  # ge0 is up, with only a link-local address
        env.lab.veth(None, env.lab.host_name(), bare, "ge0")
        refused = _ctl(env, "add", bare)
        assert refused.returncode == 1
        assert f"ge0 in {bare} has no global address" in refused.stderr
        assert "Traceback" not in refused.stderr

        assert _listing(env) == [two.ns]
        assert _running(agent) and _answers(two)


def test_a_restarted_agent_adopts_the_running_daemons(env: Env) -> None:
    """SIGTERM leaves dnsmasq serving; the next agent resumes the config and adopts it."""
    app = _appliance(env, "rtr")
    body = _config(app)
    with _agent(env, app.ns) as first:
        _wait_api(env, app, first)
        applied = _put_config(app, body)
        rules = _call(app, "GET", "/v1/firewall/rules/").text
        pid = _dnsmasq(env, app)
        assert pid is not None
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0
        assert not env.control.exists()

    # no agent runs: DHCP still does
    assert _dnsmasq(env, app) == pid
    assert _lease(env, app.vms[0]) == "10.0.1.10"

    with _agent(env, app.ns) as second:
        _wait_api(env, app, second)
        assert _get_config(app) == applied
        assert _dnsmasq(env, app) == pid
        assert _put_config(app, body) == applied
        assert _dnsmasq(env, app) == pid
        assert _call(app, "GET", "/v1/firewall/rules/").text == rules
        assert _lease(env, app.vms[0]) == "10.0.1.10"


def test_a_failed_apply_keeps_the_previous_configuration(env: Env) -> None:
    """dnsmasq cannot bind a new network's DNS port: 500 apply_failed, and A stays in place."""
    app = _appliance(env, "rtr", nics=("ge2", "ge3"))
    with _agent(env, app.ns) as agent:
        _wait_api(env, app, agent)
        applied = _put_config(app, _config(app))
        assert _lease(env, app.vms[0]) == "10.0.1.10"
        rules = _call(app, "GET", "/v1/firewall/rules/").text
        with _squatter(env, app, "10.0.2.1") as squatter:
            # dnsmasq's conf gains ge3: it restarts, cannot bind 10.0.2.1:53 and exits
            _assert_apply_failed(
                _call(app, "PUT", "/v1/system/config/", json=_config(app, ge3=True))
            )
            assert squatter.poll() is None  # the fault was the one we made
            assert _get_config(app) == applied
            assert _lease(env, app.vms[0]) == "10.0.1.10"
            assert _call(app, "GET", "/v1/firewall/rules/").text == rules
            ge3 = env.lab.run(app.ns, ["ip", "-o", "address", "show", "dev", "ge3"])
            assert "10.0.2.1" not in ge3, ge3


def test_a_failed_first_push_leaves_nothing(env: Env) -> None:
    """The same fault on the first push: no config, no daemon, no rules, no address stays."""
    app = _appliance(env, "rtr", nics=("ge2", "ge3"))
    with _agent(env, app.ns) as agent, _squatter(env, app, "10.0.2.1"):
        _wait_api(env, app, agent)
        _assert_apply_failed(_call(app, "PUT", "/v1/system/config/", json=_config(app, ge3=True)))
        assert _get_config(app) == NULL_CONFIG
        assert _dnsmasq(env, app) is None
        assert _call(app, "GET", "/v1/firewall/rules/").text == ""
        for nic in ("ge2", "ge3"):
            out = env.lab.run(app.ns, ["ip", "-4", "-o", "address", "show", "dev", nic])
            assert out == "", out
