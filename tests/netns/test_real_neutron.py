"""A real OpenStack Neutron as the source of truth: Astara converges its routers.

``scripts/neutron-peer`` installs (once per host, ~40 s: a venv under
``/var/tmp/astara-neutron-peer``) and starts Neutron 29 under uwsgi, no-auth,
on a free port, with a MariaDB database (``astara_test_<run>``) and a
RabbitMQ vhost (``test-<run>-neutron``) of this test run; both are dropped
and the API stopped by its pid afterwards. The test fails, never skips, when
the peer cannot be installed or started.

``astara orchestrator`` runs against it (``--network-url``, and its
notifications through RabbitMQ on that vhost, in a transient queue of this
run) with this run's names: appliance namespaces ``test-<run>-n-…``, fabric
links ``t<run>n-…``, management bridge ``t<run>nmgt``, the external physical
network ``t<run>ext`` bound to a veth whose far end is an ``outside``
namespace on 203.0.113.1/24 (the internet, on TEST-NET).

What it proves, every object made through openstacksdk on the real Neutron:
an external flat network and a tenant network (VXLAN, its VNI chosen by
Neutron's ML2 from this run's range), a router with a gateway and an
interface become an appliance with the router's addresses, ACTIVE in the
orchestrator (Neutron has no writable router status: the orchestrator says
so once and writes none); ``astara server create`` against Neutron makes a
server that takes its port's address by DHCP from the appliance; it reaches
``outside`` behind the router's gateway address (SNAT); a floating IP
associated with its port makes it reachable from ``outside`` at that address;
deleting the floating IP, the server and the router removes the appliance,
and ``astara down`` the rest.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from astara.lab import Lab
from astara.providers.naming import name_candidates
from tests.component.conftest import connect
from tests.conftest import RUN, run_prefix
from tests.netns.test_up import (
    ASTARA,
    _addresses,
    _connect,
    _free_port,
    _listening,
    _namespaces,
    _ping,
    _stop,
    _until,
    external_network,
)

pytestmark = pytest.mark.netns

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "neutron-peer"
NETNS_PREFIX = f"{run_prefix()}-n-"
FABRIC_PREFIX = f"t{RUN}n-"
BRIDGE = f"t{RUN}nmgt"
PHYSNET = f"t{RUN}ext"
SERVER = "s1"


def _links() -> set[str]:
    return {n for n in os.listdir("/sys/class/net") if n.startswith(f"t{RUN}n")}


# -- the peer ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Neutron:
    """A running Neutron peer: its API and the bus its notifications go to."""

    url: str
    bus_url: str
    log_dir: Path


def _peer(command: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), command],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def neutron() -> Iterator[Neutron]:
    """Neutron installed (if it is not yet) and started for this module; stopped by its pid,
    its database and vhost dropped, after it. Fails with the script's words if it cannot."""
    if os.geteuid() != 0:
        pytest.fail("the real Neutron test needs root (packages, namespaces)")
    instance = Path(tempfile.mkdtemp(prefix=f"{run_prefix()}-neutron-"))
    vni = 16_200_000 + secrets.randbelow(500_000)  # others' tests draw VNIs below 16.1 M
    env = {
        "INSTANCE_DIR": str(instance),
        "PORT": str(_free_port()),
        "DB_NAME": f"astara_test_{RUN}",
        "VHOST": f"{run_prefix()}-neutron",
        "VNI_RANGES": f"{vni}:{vni + 99}",
    }
    installed = _peer("install", env, timeout=900)
    if installed.returncode != 0:
        shutil.rmtree(instance, ignore_errors=True)
        pytest.fail(f"scripts/neutron-peer install failed:\n{installed.stdout}{installed.stderr}")
    try:
        started = _peer("start", env, timeout=300)
        if started.returncode != 0:
            logs = "".join(
                f"\n--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
                for p in sorted((instance / "log").glob("*.log"))
            )
            pytest.fail(
                f"scripts/neutron-peer start failed:\n{started.stdout}{started.stderr}{logs}"
            )
        yield Neutron(
            url=f"http://127.0.0.1:{env['PORT']}",
            bus_url=f"rabbit://guest:guest@127.0.0.1:5672/{env['VHOST']}",
            log_dir=instance / "log",
        )
    finally:
        stopped = _peer("stop", env | {"DROP": "1"}, timeout=120)
        shutil.rmtree(instance, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "not running" not in stopped.stdout, stopped.stdout  # it ran until now


# -- the test ----------------------------------------------------------------------------
@contextlib.contextmanager
def _started(argv: list[str], log: Path, ready: str) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` running once ``ready`` is in its log; stopped by its pid after, cleanly."""
    with log.open("ab") as output:
        proc = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
    try:
        _until(ready, lambda: ready in log.read_text() or proc.poll() is not None, 60, log)
        assert proc.poll() is None, "astara orchestrator exited:\n" + log.read_text()[-4000:]
        yield proc
    finally:
        assert _stop(proc) == 0, log.read_text()[-4000:]


def _server(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ASTARA, "server", *argv], capture_output=True, text=True, check=False, timeout=90
    )


def _admin_view(admin: tuple[str, Path], router_id: str) -> dict[str, Any]:
    """The orchestrator's view of the router (admin API); empty if it cannot say yet."""
    token = admin[1].read_text().strip() if admin[1].exists() else ""
    with contextlib.suppress(httpx.HTTPError):
        got = httpx.get(f"{admin[0]}/v1/routers/{router_id}", headers={"X-Auth-Token": token})
        if got.status_code == 200:
            view: dict[str, Any] = got.json()
            return view
    return {}


def _events(admin: tuple[str, Path], router_id: str) -> set[str]:
    """The notifications the orchestrator took off the bus for the router."""
    history = _admin_view(admin, router_id).get("history", [])
    return {e["event"] for e in history if e["kind"] == "event"}


@pytest.mark.timeout(900)
def test_astara_converges_a_real_neutrons_routers(neutron: Neutron, lab: Lab) -> None:
    outside = lab.namespace("out")
    nic = lab.host_name()
    lab.veth(None, nic, outside, "eth0")
    lab.address(outside, "eth0", "203.0.113.1/24")

    work = Path(tempfile.mkdtemp(prefix=f"{run_prefix()}-"))
    work.chmod(0o755)  # dnsmasq reads its files under the state directory after dropping root
    mgmt = ipaddress.IPv6Network(f"fd00:a57f:{secrets.randbelow(0xFFFF):x}::/64")
    flags = ["--state-dir", str(work / "orchestrator"), "--fabric-prefix", FABRIC_PREFIX]
    flags += ["--netns-prefix", NETNS_PREFIX, "--mgmt-bridge", BRIDGE, "--mgmt-prefix", str(mgmt)]
    flags += ["--uplink", f"{PHYSNET}={nic}"]
    admin_port = _free_port()
    argv = [*ASTARA, "orchestrator", *flags, "--network-url", neutron.url]
    argv += ["--bus-url", f"{neutron.bus_url}?queue={run_prefix()}-orchestrator&durable=false"]
    argv += ["--admin-port", str(admin_port), "--metadata-port", str(_free_port())]
    admin = (f"http://127.0.0.1:{admin_port}", work / "orchestrator" / "admin-token")
    server_flags = ["--url", neutron.url, "--fabric-prefix", FABRIC_PREFIX]
    server_flags += ["--uplink", f"{PHYSNET}={nic}", "--state-dir", str(work / "servers")]
    log = work / "orchestrator.log"
    sdk = connect(neutron.url)
    made: dict[str, Any] = {}
    try:
        with _started(argv, log, "ready;"):
            _converge_serve_and_remove(sdk, neutron, admin, server_flags, log, outside, made)
    finally:
        try:
            _server(["delete", SERVER, *server_flags])
            _cleanup_neutron(sdk, made)
            down = subprocess.run(
                [*ASTARA, "down", *flags], capture_output=True, text=True, timeout=120, check=False
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        assert down.returncode == 0, down.stderr
    assert not _namespaces(NETNS_PREFIX)
    assert not _namespaces(FABRIC_PREFIX)
    assert not _links()


def _converge_serve_and_remove(
    sdk: Any,
    neutron: Neutron,
    admin: tuple[str, Path],
    server_flags: list[str],
    log: Path,
    outside: str,
    made: dict[str, Any],
) -> None:
    # the topology, on the real Neutron
    public = made["public"] = external_network(sdk, f"{run_prefix()}-public", PHYSNET)
    private = made["private"] = sdk.network.create_network(name=f"{run_prefix()}-private")
    assert private.provider_network_type == "vxlan"  # Neutron's ML2 chose it, and the VNI
    subnet = made["subnet"] = sdk.network.create_subnet(
        network_id=private.id, cidr="10.81.0.0/24", ip_version=4, gateway_ip="10.81.0.1"
    )
    router = made["router"] = sdk.network.create_router(
        name=f"{run_prefix()}-router", external_gateway_info={"network_id": public.id}
    )
    sdk.network.add_interface_to_router(router, subnet=subnet.id)
    made["interface"] = True
    external = router.external_gateway_info["external_fixed_ips"][0]["ip_address"]
    netns = name_candidates(NETNS_PREFIX, router.id)[0]

    # the appliance: booted, configured with the router's addresses, ACTIVE
    _until(
        "the router's addresses in the appliance",
        lambda: {external, "10.81.0.1"} <= _addresses(netns),
        90,
        log,
    )
    _until(
        "router ACTIVE",
        lambda: _admin_view(admin, router.id).get("state") == "ACTIVE",
        60,
        log,
    )
    # Neutron's own notifications brought it: the router was made after the startup sweep
    assert {"router.create.end", "router.interface.create"} <= _events(admin, router.id)
    text = log.read_text()
    assert text.count("the network API keeps no router status") == 1, text[-4000:]
    assert "state not kept or published" not in text, text[-4000:]

    # a server, made against Neutron: its port's address by DHCP from the appliance
    wanted = ["--network", private.id, "--name", SERVER, "--wait", "30", "-f", "json"]
    created = _server(["create", *server_flags, *wanted])
    assert created.returncode == 0, created.stderr + log.read_text()[-4000:]
    server = json.loads(created.stdout)
    port = sdk.network.get_port(server["port_id"])
    assert port.device_owner == "compute:astara"
    fixed = port.fixed_ips[0]["ip_address"]
    assert server["addresses"] == [f"{fixed}/24"]
    assert server["gateways"] == ["10.81.0.1"]
    vm = server["namespace"]

    # SNAT: the server reaches the internet, which sees the router's gateway address
    ping = _server(["exec", *server_flags, SERVER, "--", "ping", "-c1", "-W2", "203.0.113.1"])
    assert ping.returncode == 0, ping.stdout + ping.stderr + log.read_text()[-4000:]
    with _listening(outside, "203.0.113.1", 8080):
        assert _connect(vm, "203.0.113.1", 8080) == (external, "203.0.113.1:8080")

    # a floating IP: the internet reaches the server at it, and the server sees the real peer
    fip = made["fip"] = sdk.network.create_ip(floating_network_id=public.id)
    floating = fip.floating_ip_address
    sdk.network.update_ip(fip, port_id=server["port_id"])
    with _listening(vm, "0.0.0.0", 8081):
        _until("outside pings the floating IP", lambda: _ping(outside, floating), 30, log)
        assert _connect(outside, floating, 8081) == ("203.0.113.1", f"{fixed}:8081")
    assert "floatingip.update.end" in _events(admin, router.id)

    # and back, through openstacksdk: the appliance goes with the router
    sdk.network.delete_ip(fip)
    del made["fip"]
    deleted = _server(["delete", *server_flags, SERVER])
    assert deleted.returncode == 0, deleted.stderr
    assert list(sdk.network.ports(device_id=server["id"])) == []
    sdk.network.remove_interface_from_router(router, subnet=subnet.id)
    del made["interface"]
    sdk.network.delete_router(router)
    del made["router"]
    _until("the appliance destroyed", lambda: netns not in _namespaces(NETNS_PREFIX), 60, log)
    # astara's own errors only: a RabbitMQ restart makes aiormq log tracebacks, and is survived
    assert " ERROR astara." not in log.read_text(), log.read_text()[-4000:]


def _cleanup_neutron(sdk: Any, made: dict[str, Any]) -> None:
    """Remove what the test made on Neutron and did not remove itself (it failed half-way)."""
    with contextlib.suppress(Exception):
        if "fip" in made:
            sdk.network.delete_ip(made["fip"], ignore_missing=True)
    with contextlib.suppress(Exception):
        if "interface" in made:
            sdk.network.remove_interface_from_router(made["router"], subnet=made["subnet"].id)
    with contextlib.suppress(Exception):
        if "router" in made:
            sdk.network.delete_router(made["router"], ignore_missing=True)
    for key in ("private", "public"):
        with contextlib.suppress(Exception):
            if key in made:
                sdk.network.delete_network(made[key], ignore_missing=True)
