"""Issue 6: a RabbitMQ restart with events in flight loses none, with real appliances.

``astara network-api --bus-url rabbit://…`` publishes Neutron's notifications
on the real RabbitMQ (127.0.0.1:5672), exchange ``neutron``; ``astara
orchestrator`` reads them from a durable queue of its own
(``astara-test-<random>-orchestrator``, deleted after) and runs real
appliances (namespaces ``test-<run>-u-…``, fabric ``t<run>u-…``, an
``outside`` namespace on 203.0.113.1/24 behind physnet1).

Five routers, each with an external gateway, an interface on its own VXLAN
network and a floating IP, converge (ACTIVE). Then a stream of changes runs
from a thread — extra routes (``routes``, to 198.51.100.0/24), floating IPs
associated and disassociated, a second interface added and removed — while
the broker is restarted (``rabbitmqctl stop_app``, changes while it is down,
``start_app``; always started again in a ``finally``). What is asserted:

- every API request of the stream succeeds, also while the broker is down
  (the API does not wait for the bus; a notification it cannot publish is
  logged and counted);
- the orchestrator notices the gap (its channel restored) and resyncs every
  router;
- within a bounded time every appliance's applied configuration
  (``GET /v1/system/config/`` on its management address) has the routes,
  floating IPs and networks the network API says it should;
- everything is removed after: no namespace, link or process left.

Exchange ``neutron`` is the one every engineer's orchestrator on this broker
shares (its name is not configurable: ``astara.wire.neutron_events.EXCHANGE``),
and it exists there transient (oslo's default), so both processes declare it
``exchange_durable=false`` (declaring it durable would be refused, and after a
restart would break the others). Its binding to our queue does not survive the
restart: what is published between the broker's start and our re-declaration
is routed nowhere. That, and a publish that failed in the network API, is what
the orchestrator's resync after a restored connection covers.

Needs RabbitMQ on 127.0.0.1:5672 and ``rabbitmqctl``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from astara.lab import Lab
from tests.component.conftest import connect
from tests.component.test_intake_durable import _answers, _rabbitmqctl
from tests.netns.test_orchestrator_alone import RABBIT, _api, _started
from tests.netns.test_up import (
    ASTARA,
    BRIDGE,
    FABRIC_PREFIX,
    NETNS_PREFIX,
    _free_port,
    _links,
    _namespaces,
    _until,
    external_network,
)

pytestmark = [pytest.mark.netns, pytest.mark.database]

ROUTERS = 5
QUIET = 2.5
"""Seconds the last routers go unchanged before the broker starts again: more than the
network API's publish timeout (``?timeout=1.5``), so their last notifications are lost."""
CONVERGE = 60.0
"""Seconds every appliance has to match the desired state after the restart."""


@dataclass
class Tenant:
    """One router and what the stream changes on it."""

    index: int
    router: Any
    subnet: Any
    extra: Any
    port: Any
    fip: Any
    attached: bool = False
    associated: bool = True
    #: changes made to it so far (which one comes next)
    changes: int = 0


@dataclass
class Stream:
    """Changes made one after the other from a thread until ``stop``, round-robin over
    ``tenants`` (replaced by the test as it goes); every outcome kept."""

    url: str
    tenants: list[Tenant]
    stop: threading.Event = field(default_factory=threading.Event)
    done: int = 0
    errors: list[str] = field(default_factory=list)
    slowest: float = 0.0

    def run(self) -> None:
        sdk = connect(self.url)  # its own session: this runs in another thread
        n = 0
        while not self.stop.is_set():
            tenants = self.tenants
            tenant = tenants[n % len(tenants)]
            started = time.monotonic()
            try:
                change(sdk, tenant)
            except Exception as exc:
                self.errors.append(f"change {n} on router {tenant.index}: {exc!r}")
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.done += 1
            n += 1


def change(sdk: Any, tenant: Tenant) -> None:
    """The next change to ``tenant``'s router, in turn: routes, floating IP, interface."""
    round_ = tenant.changes
    kind = round_ % 3
    if kind == 0:  # extra routes: 1 or 2 new ones, to TEST-NET-2, via the tenant's subnet
        routes = [
            {
                "destination": f"198.51.100.{(round_ * 8 + k * 4) % 256}/30",
                "nexthop": f"10.9{tenant.index}.0.{10 + k}",
            }
            for k in range(1 + (round_ // 3) % 2)
        ]
        sdk.network.update_router(tenant.router, routes=routes)
    elif kind == 1:  # the floating IP: disassociated, or associated again
        port_id = None if tenant.associated else tenant.port.id
        sdk.network.update_ip(tenant.fip, port_id=port_id)
        tenant.associated = not tenant.associated
    elif tenant.attached:  # a second interface, removed again
        sdk.network.remove_interface_from_router(tenant.router, subnet=tenant.extra.id)
        tenant.attached = False
    else:
        sdk.network.add_interface_to_router(tenant.router, subnet=tenant.extra.id)
        tenant.attached = True
    tenant.changes += 1


def _desired(sdk: Any, router_id: str) -> dict[str, Any]:
    """What the network API says the router's appliance should have."""
    router = sdk.network.get_router(router_id)
    ports = sdk.network.ports(device_id=router_id)
    networks = {p.network_id for p in ports if p.device_owner == "network:router_interface"}
    networks.add(router.external_gateway_info["network_id"])
    fips = {
        (f.floating_ip_address, f.fixed_ip_address)
        for f in sdk.network.ips()
        if f.router_id == router_id and f.port_id
    }
    routes = {(r["destination"], r["nexthop"]) for r in router.routes or []}
    return {"networks": networks, "floating_ips": fips, "routes": routes}


def _applied(config: dict[str, Any]) -> dict[str, Any]:
    """The same from an appliance's ``GET /v1/system/config/``."""
    body = config["configuration"]
    return {
        "networks": {
            n["network_id"] for n in body["networks"] if n["network_type"] != "management"
        },
        "floating_ips": {(f["floating_ip"], f["fixed_ip"]) for f in body["floating_ips"]},
        "routes": {(r["destination"], r["nexthop"]) for r in body["static_routes"]},
    }


class Appliances:
    """Reads an appliance's applied configuration: its address from the orchestrator's admin
    API, then the appliance API with the agent's token."""

    def __init__(self, admin_url: str, state: Path) -> None:
        self.admin_url = admin_url
        self.state = state

    def config(self, router_id: str) -> dict[str, Any] | None:
        admin_token = (self.state / "admin-token").read_text().strip()
        token = (self.state / "token").read_text().strip()
        try:
            view = httpx.get(
                f"{self.admin_url}/v1/routers/{router_id}",
                headers={"X-Auth-Token": admin_token},
                timeout=5,
            )
            if view.status_code != 200 or not view.json().get("appliance"):
                return None
            address = view.json()["appliance"]["management_address"]
            if address is None:  # booting
                return None
            got = httpx.get(
                f"http://[{address}]:5000/v1/system/config/",
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            )
        except httpx.HTTPError:
            return None
        if got.status_code != 200:
            return None
        config: dict[str, Any] | None = got.json()
        return config if config and config.get("configuration") else None  # none pushed yet


def _mismatches(sdk: Any, appliances: Appliances, tenants: list[Tenant]) -> list[str]:
    """The routers whose appliance differs from the desired state, with what differs."""
    wrong = []
    for tenant in tenants:
        desired = _desired(sdk, tenant.router.id)
        config = appliances.config(tenant.router.id)
        applied = _applied(config) if config is not None else None
        if applied != desired:
            wrong.append(f"router {tenant.index}: desired {desired}, applied {applied}")
    return wrong


def _restart_broker(stream: Stream, sdk: Any, quiet: list[Tenant]) -> tuple[float, int]:
    """``stop_app``; while it is down the stream goes on (on the other routers) and each of
    ``quiet`` (settled, out of the stream) is changed three times from here: routes, floating
    IP, interface; then ``QUIET`` seconds, more than the API's publish timeout, so that each of
    those notifications was refused by the bus and only a resync can bring them; ``start_app``
    (always), until it answers. How long it was down, and how many changes the stream made."""
    stopped = time.monotonic()
    before = stream.done
    try:
        _rabbitmqctl("stop_app")
        stopped = time.monotonic()
        before = stream.done
        for tenant in quiet:
            for _ in range(3):
                change(sdk, tenant)  # the API answers, its notifications are not published
        time.sleep(QUIET)
    finally:
        during = stream.done - before
        _rabbitmqctl("start_app")
        deadline = time.monotonic() + 60
        while not _answers() and time.monotonic() < deadline:
            time.sleep(0.2)
    assert _answers(), "RabbitMQ did not come back within 60 s"
    return time.monotonic() - stopped, during


async def _delete_queue(queue: str) -> None:
    connection = await aio_pika.connect(RABBIT, timeout=10)
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue, if_unused=False, if_empty=False)
    finally:
        await connection.close()


@pytest.mark.timeout(300)
def test_a_broker_restart_with_changes_in_flight_loses_none(
    lab: Lab, network_db: str, orchestrator_db: str
) -> None:
    if not _answers() or shutil.which("rabbitmqctl") is None:
        pytest.fail("RabbitMQ at 127.0.0.1:5672 with rabbitmqctl is needed")
    began = time.monotonic()
    outside = lab.namespace("out")  # the internet, on TEST-NET-3
    nic = lab.host_name()
    lab.veth(None, nic, outside, "eth0")
    lab.address(outside, "eth0", "203.0.113.1/24")
    work = Path(tempfile.mkdtemp(prefix=f"{lab.prefix}-"))
    work.chmod(0o755)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    queue = f"astara-test-{secrets.token_hex(4)}-orchestrator"
    state = work / "orchestrator"
    admin_port = _free_port()
    mgmt = ipaddress.IPv6Network(f"fd00:a57e:{secrets.randbelow(0xFFFF):x}::/64")
    flags = ["--state-dir", str(state), "--fabric-prefix", FABRIC_PREFIX]
    flags += ["--netns-prefix", NETNS_PREFIX, "--mgmt-bridge", BRIDGE, "--mgmt-prefix", str(mgmt)]
    api_argv = [*ASTARA, "network-api", "--port", str(port), "--db", network_db]
    # a short publish timeout (default 5 s) to make the outage lose notifications surely; a
    # short reconnect interval (default 2 s): within it a publish waits for the connection
    api_argv += ["--bus-url", f"{RABBIT}?exchange_durable=false&timeout=1.5&reconnect_interval=0.5"]
    orchestrator_argv = [*ASTARA, "orchestrator", *flags, "--uplink", f"physnet1={nic}"]
    orchestrator_argv += ["--network-url", url, "--admin-port", str(admin_port)]
    orchestrator_argv += ["--metadata-port", str(_free_port())]
    orchestrator_argv += ["--orchestrator-db", orchestrator_db]
    # a durable queue (the default): what it holds survives the restart; the exchange cannot
    orchestrator_argv += ["--bus-url", f"{RABBIT}?queue={queue}&exchange_durable=false"]
    log = work / "orchestrator.log"
    api_log = work / "api.log"
    appliances = Appliances(f"http://127.0.0.1:{admin_port}", state)
    report: dict[str, float | int] = {}
    try:
        with (
            _api(api_argv, api_log, url, tracebacks=True),
            _started(orchestrator_argv, log, "ready;"),
        ):
            sdk = connect(url)
            tenants = _tenants(sdk)
            for tenant in tenants:
                _until(
                    f"router {tenant.index} ACTIVE",
                    lambda t=tenant: sdk.network.get_router(t.router.id).status == "ACTIVE",
                    90,
                    log,
                )
            _until(
                "every appliance as desired",
                lambda: not _mismatches(sdk, appliances, tenants),
                60,
                log,
            )
            report["setup_s"] = time.monotonic() - began

            stream = Stream(url, tenants)
            changer = threading.Thread(target=stream.run, name="changes")
            changer.start()
            try:
                _until("changes before the restart", lambda: stream.done >= 10, 30, log)
                # the last two routers leave the stream and settle; their last changes are
                # made while the broker is down
                active, quiet = tenants[:3], tenants[3:]
                stream.tenants = active
                _until(
                    "the quiet routers as desired",
                    lambda: not _mismatches(sdk, appliances, quiet),
                    60,
                    log,
                )
                report["down_s"], report["changes_while_down"] = _restart_broker(stream, sdk, quiet)
                restarted = stream.done
                _until("changes after the restart", lambda: stream.done >= restarted + 15, 60, log)
            finally:
                stream.stop.set()
                changer.join(timeout=60)
            assert not changer.is_alive()
            assert not stream.errors, stream.errors[:5]
            assert report["changes_while_down"] >= 1  # the API answered while the broker was down
            report["changes"] = stream.done
            report["slowest_request_s"] = stream.slowest

            settled = time.monotonic()
            deadline = settled + CONVERGE
            wrong = _mismatches(sdk, appliances, tenants)
            while wrong and time.monotonic() < deadline:
                time.sleep(1)
                wrong = _mismatches(sdk, appliances, tenants)
            assert not wrong, "\n".join(wrong) + "\n" + log.read_text()[-4000:]
            report["converged_after_s"] = time.monotonic() - settled
            text = log.read_text()
            assert "the bus connection was lost and restored" in text, text[-4000:]
            assert "resync after lost notifications" in text, text[-4000:]
            report["not_published"] = api_log.read_text().count("not published")

            _teardown(sdk, tenants)
            _until("the appliances destroyed", lambda: not _namespaces(NETNS_PREFIX), 90, log)
    finally:
        down = subprocess.run(
            [*ASTARA, "down", *flags], capture_output=True, text=True, timeout=120, check=False
        )
        shutil.rmtree(work, ignore_errors=True)
        asyncio.run(_delete_queue(queue))
    assert down.returncode == 0, down.stderr
    assert not _namespaces(NETNS_PREFIX)
    assert not _namespaces(FABRIC_PREFIX)
    assert not _links()
    report["total_s"] = time.monotonic() - began
    print("broker restart:", {k: round(v, 2) for k, v in report.items()})


def _tenants(sdk: Any) -> list[Tenant]:
    """``ROUTERS`` routers on a flat external network, each with an interface on its own VXLAN
    network, a spare subnet (the stream attaches it) and a floating IP on a port of its own."""
    public = external_network(sdk)
    tenants = []
    for i in range(ROUTERS):
        subnets = []
        for cidr in (f"10.9{i}.0.0/24", f"10.10{i}.0.0/24"):
            network = sdk.network.create_network(
                name=f"net-{cidr}",
                provider_network_type="vxlan",
                provider_segmentation_id=100_000 + secrets.randbelow(16_000_000),
            )
            subnets.append(
                sdk.network.create_subnet(network_id=network.id, cidr=cidr, ip_version=4)
            )
        router = sdk.network.create_router(
            name=f"r{i}", external_gateway_info={"network_id": public.id}
        )
        sdk.network.add_interface_to_router(router, subnet=subnets[0].id)
        port = sdk.network.create_port(network_id=subnets[0].network_id, name=f"vm{i}")
        fip = sdk.network.create_ip(floating_network_id=public.id, port_id=port.id)
        tenants.append(Tenant(i, router, subnets[0], subnets[1], port, fip))
    return tenants


def _teardown(sdk: Any, tenants: list[Tenant]) -> None:
    for tenant in tenants:
        sdk.network.delete_ip(tenant.fip)
        sdk.network.delete_port(tenant.port)
        if tenant.attached:
            sdk.network.remove_interface_from_router(tenant.router, subnet=tenant.extra.id)
        sdk.network.update_router(tenant.router, routes=[])
        sdk.network.remove_interface_from_router(tenant.router, subnet=tenant.subnet.id)
        sdk.network.remove_gateway_from_router(tenant.router)
        sdk.network.delete_router(tenant.router)
