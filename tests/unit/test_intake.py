"""Intake: every captured Neutron notification resolved to its exact routers; the loop never stops.

The captured session (``shared/fixtures/neutron``) is replayed in its order
against a ``FakeNetworkReader`` that follows the session's router ports (from
the events, and from the API captures where no event was captured), so each
lookup sees what the real Neutron held at that moment. The router ids come
from the fixtures' payloads and are checked against the API captures.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from astara.bus import EmbeddedBus
from astara.orchestrator.intake import Intake, IntakeStats
from astara.orchestrator.neutron_reader import (
    FakeNetworkReader,
    HttpNetworkReader,
    NetworkResponseError,
    NetworkUnavailableError,
    PortRole,
    RouterPort,
    neutron_client,
    noauth_admin_headers,
    router_port_from_neutron,
)
from astara.orchestrator.resolution import LastRouters, ResourceKey, resolve
from astara.wire.neutron_events import (
    EXCHANGE,
    MalformedEventError,
    Notification,
    RequestContext,
    decode_notification,
    encode_notification,
)
from tests.fixtures import NEUTRON

FIXTURES = NEUTRON
NOTIFICATIONS = FIXTURES / "notifications"
API = FIXTURES / "api"


def _api(name: str) -> Any:
    path = API / f"{name}.json"
    if not path.is_file():
        pytest.fail(f"the captured Neutron API responses are missing: {path}")
    return json.loads(path.read_text())


def _captured() -> list[tuple[str, bytes]]:
    """(``<event_type>.<n>``, body) of every captured notification, in capture order."""
    paths = sorted(NOTIFICATIONS.glob("*.json"), key=lambda p: int(p.stem.rsplit(".", 1)[1]))
    if not paths:
        pytest.fail(f"the captured Neutron notifications are missing: {NOTIFICATIONS}")
    return [(p.stem, p.read_bytes()) for p in paths]


def _payload(stem: str) -> Mapping[str, Any]:
    return decode_notification((NOTIFICATIONS / f"{stem}.json").read_bytes()).payload


R1 = _payload("router.create.end.010")["router"]["id"]  # router1, project fake_project_id
R2 = _payload("router.create.end.097")["router"]["id"]  # a-router, project proj-a

# What each captured notification concerns, at the moment it was captured.
EXPECTED: dict[str, set[str]] = {
    "network.create.end.002": set(),  # the public network: no router on it yet
    "subnet.create.end.004": set(),
    "router.create.end.010": {R1},
    "router.update.end.012": {R1},  # gateway set
    "router.interface.create.013": {R1},
    "port.create.start.014": set(),  # .start: before the change
    "port.create.end.015": {R1},  # vm-port-1, on the subnet router1 has an interface on
    "floatingip.create.end.017": set(),  # not associated
    "floatingip.update.start.018": set(),
    "floatingip.update.end.019": {R1},  # associated with vm-port-1: router_id
    "security_group.create.end.040": set(),
    "security_group_rule.create.end.076": set(),
    "port.update.end.080": {R1},
    "network.create.start.089": set(),
    "network.create.end.093": set(),
    "router.create.end.097": {R2},
    "floatingip.create.end.102": {R2},  # created associated
    "floatingip.update.end.104": {R2},  # disassociated: router_id null, R2 remembered
    "floatingip.delete.end.108": set(),  # already disassociated
    "port.delete.end.110": {R2},  # a-port, on the subnet a-router has an interface on
    "router.interface.delete.111": {R2},
    "router.delete.end.115": {R2},
    "port.update.end.125": {R1},
}

# Router ports that existed in the session without a captured event: a-router's interface.
SEED_AFTER = {"router.create.end.097": "ports_of_router_as_member_proj-a"}


pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


def _follow(world: FakeNetworkReader, note: Notification) -> None:
    """Apply to the fake what a router event did to the router ports of the real Neutron."""
    payload = note.payload
    if note.event_type in ("router.create.end", "router.update.end"):
        router = payload["router"]
        gateway = router["external_gateway_info"]
        world.remove(port_id=f"gw-{router['id']}")
        if gateway:
            subnets = frozenset(ip["subnet_id"] for ip in gateway["external_fixed_ips"])
            world.add(
                RouterPort(
                    port_id=f"gw-{router['id']}",
                    router_id=router["id"],
                    role=PortRole.GATEWAY,
                    network_id=gateway["network_id"],
                    subnet_ids=subnets,
                )
            )
    elif note.event_type == "router.interface.create":
        info = payload["router_interface"]
        world.add(
            RouterPort(
                port_id=info["port_id"],
                router_id=info["id"],
                role=PortRole.INTERFACE,
                network_id=info["network_id"],
                subnet_ids=frozenset(info["subnet_ids"]),
            )
        )
    elif note.event_type == "router.interface.delete":
        world.remove(port_id=payload["router_interface"]["port_id"])
    elif note.event_type == "router.delete.end":
        world.remove_router(router_id=payload["router_id"])


def _note(event_type: str, payload: Mapping[str, Any]) -> Notification:
    """A notification as the bus would carry it (encoded, then decoded)."""
    body = encode_notification(
        event_type=event_type,
        payload=payload,
        context=RequestContext(project_id="p", request_id="req-1"),
        publisher_id="network.test",
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return decode_notification(body)


def _routers(keys: set[ResourceKey]) -> set[str]:
    assert all(k.kind == "router" for k in keys)
    return {k.id for k in keys}


# -- the captured session --------------------------------------------------------------------


def test_the_expectations_cover_every_captured_notification() -> None:
    assert set(EXPECTED) == {stem for stem, _ in _captured()}


def test_the_router_ids_agree_with_the_api_captures() -> None:
    from_api = FakeNetworkReader.from_neutron_ports(_api("ports_list_all")["ports"]).ports
    assert {(p.router_id, p.role) for p in from_api} == {
        (R1, PortRole.GATEWAY),
        (R1, PortRole.INTERFACE),
    }
    assert {p["device_id"] for p in _api("ports_router_filtered")["ports"]} == {R1}
    assert {p["device_id"] for p in _api("ports_of_router_as_member_proj-a")["ports"]} == {R2}
    assert _api("router_add_interface_response")["id"] == R1
    assert {f["router_id"] for f in _api("floatingips_list")["floatingips"]} == {R1}


async def test_every_captured_notification_resolves_to_its_exact_routers() -> None:
    world, memory = FakeNetworkReader(), LastRouters()
    got: dict[str, set[str]] = {}
    for stem, body in _captured():
        note = decode_notification(body)
        got[stem] = _routers(await resolve(note, world, memory=memory))
        _follow(world, note)
        if stem in SEED_AFTER:
            for port in FakeNetworkReader.from_neutron_ports(_api(SEED_AFTER[stem])["ports"]).ports:
                world.add(port)
    assert got == EXPECTED


async def test_without_memory_a_disassociation_finds_no_old_router() -> None:
    """Why the memory exists: an update payload carries the new state only."""
    world = FakeNetworkReader()
    note = decode_notification((NOTIFICATIONS / "floatingip.update.end.104.json").read_bytes())
    assert await resolve(note, world) == set()


# -- two routers in one project --------------------------------------------------------------

PUBLIC_NET, PUBLIC_SUB = "net-public", "sub-public"


def _two_routers() -> FakeNetworkReader:
    """Project p: router r1 on subnet s1 (network n1), r2 on s2 (n2); both with a gateway."""
    ports = []
    for n in ("1", "2"):
        ports.append(
            RouterPort(
                port_id=f"if{n}",
                router_id=f"r{n}",
                role=PortRole.INTERFACE,
                network_id=f"n{n}",
                subnet_ids=frozenset({f"s{n}"}),
            )
        )
        ports.append(
            RouterPort(
                port_id=f"gw{n}",
                router_id=f"r{n}",
                role=PortRole.GATEWAY,
                network_id=PUBLIC_NET,
                subnet_ids=frozenset({PUBLIC_SUB}),
            )
        )
    return FakeNetworkReader(ports)


def _vm_port(port_id: str, subnet: str, network: str = "n1") -> dict[str, Any]:
    port = dict(_payload("port.create.end.015")["port"])
    port.update(
        id=port_id,
        network_id=network,
        project_id="p",
        fixed_ips=[{"subnet_id": subnet, "ip_address": "10.0.0.5"}],
    )
    return port


def _fip(router: str | None) -> dict[str, Any]:
    fip = dict(_payload("floatingip.update.end.019")["floatingip"])
    fip.update(id="fip", project_id="p", router_id=router, port_id="vm" if router else None)
    return fip


async def test_two_routers_of_one_project_are_resolved_separately() -> None:
    world, memory = _two_routers(), LastRouters()

    async def routers(event_type: str, payload: Mapping[str, Any]) -> set[str]:
        return _routers(await resolve(_note(event_type, payload), world, memory=memory))

    assert await routers("port.create.end", {"port": _vm_port("vm1", "s1")}) == {"r1"}
    assert await routers("port.create.end", {"port": _vm_port("vm2", "s2", "n2")}) == {"r2"}
    assert await routers("floatingip.create.end", {"floatingip": _fip(None)}) == set()
    assert await routers("floatingip.update.end", {"floatingip": _fip("r1")}) == {"r1"}
    assert await routers("floatingip.update.end", {"floatingip": _fip("r2")}) == {"r1", "r2"}
    assert await routers("floatingip.update.end", {"floatingip": _fip("r2")}) == {"r2"}
    assert await routers("floatingip.update.end", {"floatingip": _fip(None)}) == {"r2"}
    assert await routers("floatingip.update.end", {"floatingip": _fip("r1")}) == {"r1"}
    gone = {"floatingip_id": "fip", "floatingip": _fip("r1")}
    assert await routers("floatingip.delete.end", gone) == {"r1"}
    assert len(memory) == 2  # the two ports; the floating IP was forgotten
    assert await routers("network.update.end", {"network": {"id": "n1"}}) == {"r1"}
    assert await routers("subnet.update.end", {"subnet": {"id": "s2"}}) == {"r2"}


async def test_the_external_network_concerns_gateways_but_a_port_on_it_does_not() -> None:
    world = _two_routers()
    public = {"subnet": {"id": PUBLIC_SUB, "network_id": PUBLIC_NET}}
    assert _routers(await resolve(_note("subnet.update.end", public), world)) == {"r1", "r2"}
    network = {"network": {"id": PUBLIC_NET}}
    assert _routers(await resolve(_note("network.update.end", network), world)) == {"r1", "r2"}
    port = {"port": _vm_port("vm", PUBLIC_SUB, PUBLIC_NET)}
    assert await resolve(_note("port.create.end", port), world) == set()


async def test_a_router_port_is_resolved_by_device_id_without_a_lookup() -> None:
    world = FakeNetworkReader()
    for owner in ("network:router_interface", "network:router_gateway", "network:router_ha_x"):
        port = _vm_port("p", "s9") | {"device_owner": owner, "device_id": "r7"}
        assert _routers(await resolve(_note("port.update.end", {"port": port}), world)) == {"r7"}
    assert world.calls == 0


async def test_a_port_moved_to_another_subnet_concerns_both_routers() -> None:
    world, memory = _two_routers(), LastRouters()
    first = _note("port.update.end", {"port": _vm_port("vm", "s1")})
    assert _routers(await resolve(first, world, memory=memory)) == {"r1"}
    moved = _note("port.update.end", {"port": _vm_port("vm", "s2")})
    assert _routers(await resolve(moved, world, memory=memory)) == {"r1", "r2"}
    deleted = _note("port.delete.end", {"port_id": "vm"})  # an older Neutron: the id alone
    assert _routers(await resolve(deleted, world, memory=memory)) == {"r2"}
    assert len(memory) == 0


async def test_bulk_payloads_resolve_every_item() -> None:
    world = _two_routers()
    ports = {"ports": [_vm_port("a", "s1"), _vm_port("b", "s2", "n2")]}
    assert _routers(await resolve(_note("port.create.end", ports), world)) == {"r1", "r2"}
    routers = {"routers": [{"id": "r8"}, {"id": "r9"}]}
    assert _routers(await resolve(_note("router.create.end", routers), world)) == {"r8", "r9"}


@pytest.mark.parametrize(
    "event_type",
    [
        "router.update.start",
        "port.delete.start",
        "floatingip.update.start",
        "security_group.create.end",
        "qos.policy.create.end",
        "router.tags.update",
        "routers.create.end",
        "port",
    ],
)
async def test_starts_and_unknown_events_concern_nothing(
    event_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    world = _two_routers()
    payload = {"router": {"id": "r1"}, "port": _vm_port("vm", "s1"), "id": "x"}
    with caplog.at_level(logging.DEBUG, logger="astara.orchestrator.resolution"):
        assert await resolve(_note(event_type, payload), world) == set()
    assert world.calls == 0
    assert event_type in caplog.text


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        ("router.update.end", {}),
        ("router.update.end", {"router": "r1"}),
        ("router.create.end", {"routers": {"id": "r1"}}),
        ("router.interface.create", {"router_interface": {"port_id": "p"}}),
        ("router.interface.delete", {}),
        ("port.create.end", {"port": {"id": 5}}),
        ("port.create.end", {"port": {"id": "p", "fixed_ips": "s1"}}),
        ("port.update.end", {"port": {"id": "p", "device_owner": ["x"]}}),
        ("floatingip.update.end", {"floatingip": {"router_id": "r1"}}),
        ("subnet.update.end", {"subnet": {}}),
        ("network.delete.end", {"network_id": 7}),
    ],
)
async def test_payloads_without_the_promised_ids_are_malformed(
    event_type: str, payload: Mapping[str, Any]
) -> None:
    memory = LastRouters()
    memory.remember("floatingip", "fip", {"r1"})
    with pytest.raises(MalformedEventError):
        await resolve(_note(event_type, payload), _two_routers(), memory=memory)
    assert memory.recall("floatingip", "fip") == {"r1"}


def test_the_memory_is_bounded_least_recently_used_first() -> None:
    memory = LastRouters(size=2)
    memory.remember("port", "a", {"r1"})
    memory.remember("port", "b", {"r2"})
    assert memory.recall("port", "a") == {"r1"}  # a is now the most recent
    memory.remember("floatingip", "c", {"r3"})
    assert len(memory) == 2
    assert memory.recall("port", "b") == frozenset()  # the least recently used left
    assert memory.recall("port", "a") == {"r1"}
    with pytest.raises(ValueError):
        LastRouters(size=0)


# -- the Intake loop -------------------------------------------------------------------------


class Recorder:
    """An ``enqueue`` that keeps what it was given, and virtual-time sleeps."""

    def __init__(self) -> None:
        self.keys: list[ResourceKey] = []
        self.sleeps: list[float] = []

    def __call__(self, key: ResourceKey) -> None:
        self.keys.append(key)

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        await asyncio.sleep(0)

    def routers(self) -> list[str]:
        taken = [k.id for k in self.keys]
        self.keys.clear()
        return taken


class Running:
    def __init__(self, bus: EmbeddedBus, intake: Intake, recorder: Recorder) -> None:
        self.bus, self.intake, self.recorder = bus, intake, recorder
        self.sent = 0

    async def publish(self, body: bytes, routing_key: str = "notifications.info") -> None:
        await self.bus.publish(exchange=EXCHANGE, routing_key=routing_key, body=body)
        self.sent += 1

    async def settle(self) -> IntakeStats:
        """Wait until the intake handled everything sent so far."""
        for _ in range(10_000):
            stats = self.intake.stats
            done = stats.malformed + stats.resolved + stats.dropped
            if stats.received == self.sent and done == self.sent:
                return stats
            await asyncio.sleep(0)
        pytest.fail(f"the intake did not settle: {self.intake.stats} after {self.sent} messages")


@pytest.fixture
def world() -> FakeNetworkReader:
    return _two_routers()


@pytest.fixture
async def running(world: FakeNetworkReader) -> AsyncIterator[Running]:
    recorder = Recorder()
    async with EmbeddedBus() as bus:
        intake = Intake(bus=bus, reader=world, enqueue=recorder, sleep=recorder.sleep)
        await intake.open()
        task = asyncio.create_task(intake.run())
        try:
            yield Running(bus, intake, recorder)
        finally:
            await intake.close()
            await asyncio.wait_for(task, timeout=5)


def _body(event_type: str, payload: Mapping[str, Any]) -> bytes:
    return encode_notification(
        event_type=event_type,
        payload=payload,
        context=RequestContext(project_id="p", request_id="req-1"),
        publisher_id="network.test",
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
    )


GOOD = _body("port.create.end", {"port": _vm_port("vm1", "s1")})


async def test_the_intake_enqueues_the_captured_session_in_order() -> None:
    recorder, world = Recorder(), FakeNetworkReader()
    async with EmbeddedBus() as bus:
        intake = Intake(bus=bus, reader=world, enqueue=recorder)
        await intake.open()
        task = asyncio.create_task(intake.run())
        run = Running(bus, intake, recorder)
        expected: list[str] = []
        for stem, body in _captured():
            await run.publish(body)
            await run.settle()
            _follow(world, decode_notification(body))
            if stem in SEED_AFTER:
                for port in FakeNetworkReader.from_neutron_ports(
                    _api(SEED_AFTER[stem])["ports"]
                ).ports:
                    world.add(port)
            expected += sorted(EXPECTED[stem])
        await intake.close()
        await asyncio.wait_for(task, timeout=5)
    assert [k.id for k in recorder.keys] == expected
    stats = intake.stats
    assert (stats.received, stats.resolved, stats.malformed, stats.dropped) == (23, 23, 0, 0)
    assert stats.enqueued == len(expected)


MALFORMED = [
    b"",
    b"\xff\xfe not utf-8",
    b"[1, 2]",
    b'{"oslo.version": "2.0"}',
    json.dumps({"oslo.version": "2.0", "oslo.message": "{not json"}).encode(),
    json.dumps({"oslo.version": "1.0", "oslo.message": "{}"}).encode(),
    _body("port.create.end", {"port": {"id": "p", "fixed_ips": 3}}),  # a payload without ids
    _body("router.interface.create", {"router_interface": None}),
]


async def test_malformed_messages_are_dropped_and_counted_and_the_loop_goes_on(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="astara.orchestrator.intake"):
        for body in MALFORMED:
            await running.publish(body, "notifications.error")
            await running.publish(GOOD)
        stats = await running.settle()
    assert running.recorder.routers() == ["r1"] * len(MALFORMED)
    assert (stats.malformed, stats.resolved, stats.dropped) == (len(MALFORMED), len(MALFORMED), 0)
    warnings = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warnings) == len(MALFORMED)
    assert all(len(r.getMessage()) < 400 for r in warnings)


async def test_only_neutron_notifications_are_taken(running: Running) -> None:
    await running.bus.publish(exchange=EXCHANGE, routing_key="other.info", body=GOOD)
    await running.bus.publish(exchange="nova", routing_key="notifications.info", body=GOOD)
    await running.publish(GOOD, "notifications.error")
    stats = await running.settle()
    assert stats.received == 1
    assert running.recorder.routers() == ["r1"]


async def test_an_api_that_is_down_is_retried_with_backoff(
    running: Running, world: FakeNetworkReader
) -> None:
    world.fail(NetworkUnavailableError("down"), NetworkUnavailableError("still down"))
    await running.publish(GOOD)
    stats = await running.settle()
    assert running.recorder.routers() == ["r1"]
    assert running.recorder.sleeps == [0.5, 1.0]
    assert (stats.resolved, stats.dropped) == (1, 0)


async def test_an_api_that_stays_down_drops_the_event_and_the_loop_goes_on(
    running: Running, world: FakeNetworkReader, caplog: pytest.LogCaptureFixture
) -> None:
    world.fail(*(NetworkUnavailableError("down") for _ in range(4)))
    with caplog.at_level(logging.ERROR, logger="astara.orchestrator.intake"):
        await running.publish(GOOD)
        await running.publish(_body("router.update.end", {"router": {"id": "r2"}}))
        await running.publish(GOOD)
        stats = await running.settle()
    assert running.recorder.routers() == ["r2", "r1"]
    assert running.recorder.sleeps == [0.5, 1.0, 2.0]
    assert (stats.received, stats.resolved, stats.dropped) == (3, 2, 1)
    assert "after 4 attempts" in caplog.text


async def test_a_refused_lookup_is_dropped_without_retrying(
    running: Running, world: FakeNetworkReader
) -> None:
    world.fail(NetworkResponseError("403"))
    await running.publish(GOOD)
    await running.publish(GOOD)
    stats = await running.settle()
    assert running.recorder.routers() == ["r1"]
    assert (running.recorder.sleeps, stats.dropped) == ([], 1)


async def test_a_failing_enqueue_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    taken: list[ResourceKey] = []

    def enqueue(key: ResourceKey) -> None:
        if not taken:
            taken.append(key)
            raise RuntimeError("queue bug")
        taken.append(key)

    async with EmbeddedBus() as bus:
        intake = Intake(bus=bus, reader=_two_routers(), enqueue=enqueue)
        await intake.open()
        task = asyncio.create_task(intake.run())
        run = Running(bus, intake, Recorder())
        with caplog.at_level(logging.ERROR, logger="astara.orchestrator.intake"):
            await run.publish(GOOD)
            await run.publish(GOOD)
            stats = await run.settle()
        await intake.close()
        await asyncio.wait_for(task, timeout=5)
    assert (stats.dropped, stats.resolved) == (1, 1)
    assert "queue bug" in caplog.text


async def test_run_ends_when_the_bus_closes_and_close_is_idempotent() -> None:
    bus = EmbeddedBus()
    intake = Intake(bus=bus, reader=FakeNetworkReader(), enqueue=Recorder())
    task = asyncio.create_task(intake.run())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await intake.run()
    await bus.close()
    await asyncio.wait_for(task, timeout=5)
    await intake.close()
    await intake.close()


async def test_an_intake_closed_before_it_ran_returns_at_once() -> None:
    async with EmbeddedBus() as bus:
        intake = Intake(bus=bus, reader=FakeNetworkReader(), enqueue=Recorder())
        await intake.close()
        await asyncio.wait_for(intake.run(), timeout=5)
        assert bus.subscriptions() == []


def test_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Intake(bus=EmbeddedBus(), reader=FakeNetworkReader(), enqueue=Recorder(), attempts=0)


# -- HttpNetworkReader against a scripted HTTP server ----------------------------------------


class Scripted:
    """An httpx transport answering ``GET /v2.0/ports`` from Neutron port objects."""

    def __init__(self, ports: list[dict[str, Any]], *, page: int | None = None) -> None:
        self.ports, self.page = ports, page
        self.requests: list[httpx.Request] = []
        self.answer: httpx.Response | Exception | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        if self.answer is not None:
            return self.answer
        assert request.url.path == "/v2.0/ports"
        q = request.url.params
        owners = set(q.get_list("device_owner"))
        subnets = {f.removeprefix("subnet_id=") for f in q.get_list("fixed_ips")}
        nets = set(q.get_list("network_id"))
        found = [
            p
            for p in self.ports
            if p["device_owner"] in owners
            and (not subnets or {ip["subnet_id"] for ip in p["fixed_ips"]} & subnets)
            and (not nets or p["network_id"] in nets)
        ]
        start = int(q.get("marker", "0"))
        if self.page is None:
            return httpx.Response(200, json={"ports": found})
        body: dict[str, Any] = {"ports": found[start : start + self.page]}
        if start + self.page < len(found):
            nxt = request.url.copy_set_param("marker", str(start + self.page))
            body["ports_links"] = [{"rel": "next", "href": str(nxt)}]
        return httpx.Response(200, json=body)


@pytest.fixture
def scripted() -> Scripted:
    return Scripted(
        _api("ports_list_all")["ports"] + _api("ports_of_router_as_member_proj-a")["ports"]
    )


@pytest.fixture
async def http_reader(scripted: Scripted) -> AsyncIterator[HttpNetworkReader]:
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(scripted),
        base_url="http://neutron:9696/",
        headers=noauth_admin_headers(),
    ) as client:
        yield HttpNetworkReader(client=client)


PRIVATE_SUB = _api("subnet_show_private")["subnet"]["id"]
PUBLIC = _api("subnet_show_public")["subnet"]


async def test_the_http_reader_asks_neutron_for_router_ports_by_subnet(
    http_reader: HttpNetworkReader, scripted: Scripted
) -> None:
    found = await http_reader.router_ports_on_subnets(subnet_ids=[PRIVATE_SUB])
    assert {(p.router_id, p.role) for p in found} == {(R1, PortRole.INTERFACE)}
    query = scripted.requests[-1].url.params
    assert query.get_list("fixed_ips") == [f"subnet_id={PRIVATE_SUB}"]
    assert "network:router_interface" in query.get_list("device_owner")
    assert "network:router_gateway" in query.get_list("device_owner")
    assert scripted.requests[-1].headers["x-roles"] == "admin"
    public = await http_reader.router_ports_on_network(network_id=PUBLIC["network_id"])
    assert {(p.router_id, p.role) for p in public} == {(R1, PortRole.GATEWAY)}
    calls = len(scripted.requests)
    assert await http_reader.router_ports_on_subnets(subnet_ids=[]) == frozenset()
    assert len(scripted.requests) == calls


async def test_the_http_reader_follows_pages_and_chunks_many_subnets(scripted: Scripted) -> None:
    scripted.page = 1
    subnets = [f"s{i}" for i in range(100)] + [PRIVATE_SUB, PUBLIC["id"]]
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(scripted), base_url="http://neutron:9696/"
    ) as client:
        found = await HttpNetworkReader(client=client).router_ports_on_subnets(subnet_ids=subnets)
    assert {(p.router_id, p.role) for p in found} == {
        (R1, PortRole.INTERFACE),
        (R1, PortRole.GATEWAY),
    }
    assert len(scripted.requests) >= 3


async def test_the_http_reader_keeps_answers_exact_when_a_server_ignores_filters(
    scripted: Scripted, http_reader: HttpNetworkReader
) -> None:
    scripted.answer = httpx.Response(200, json={"ports": scripted.ports})
    found = await http_reader.router_ports_on_subnets(subnet_ids=[PRIVATE_SUB])
    assert {p.port_id for p in found} == {
        p["id"]
        for p in _api("ports_router_filtered")["ports"]
        if p["network_id"] != PUBLIC["network_id"]
    }


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.ConnectError("refused"), NetworkUnavailableError),
        (httpx.ReadTimeout("slow"), NetworkUnavailableError),
        (httpx.Response(503, text="busy"), NetworkUnavailableError),
        (httpx.Response(429), NetworkUnavailableError),
        (httpx.Response(401, json={"NeutronError": {}}), NetworkResponseError),
        (httpx.Response(404), NetworkResponseError),
        (httpx.Response(200, text="<html>"), NetworkResponseError),
        (httpx.Response(200, json={"networks": []}), NetworkResponseError),
        (httpx.Response(200, json={"ports": ["x"]}), NetworkResponseError),
        (
            httpx.Response(
                200, json={"ports": [{"device_owner": "network:router_gateway", "device_id": "r"}]}
            ),
            NetworkResponseError,
        ),
    ],
)
async def test_the_http_reader_says_whether_to_retry(
    scripted: Scripted,
    http_reader: HttpNetworkReader,
    answer: httpx.Response | Exception,
    error: type[Exception],
) -> None:
    scripted.answer = answer
    with pytest.raises(error):
        await http_reader.router_ports_on_network(network_id="n")


@pytest.mark.parametrize(
    "url", ["http://neutron:9696", "http://neutron:9696/", "http://neutron:9696/v2.0/"]
)
async def test_neutron_client_takes_the_endpoint_with_or_without_the_version(url: str) -> None:
    async with neutron_client(url=url, headers={"X-Auth-Token": "t"}) as client:
        assert str(client.base_url) == "http://neutron:9696/"
        assert client.headers["x-auth-token"] == "t"


def test_only_ports_a_router_owns_are_router_ports() -> None:
    ports = {p["id"]: p for p in _api("ports_list_all")["ports"]}
    kinds = {pid: router_port_from_neutron(p) for pid, p in ports.items()}
    owned = {pid for pid, rp in kinds.items() if rp is not None}
    assert owned == {p["id"] for p in _api("ports_router_filtered")["ports"]}
    unattached = dict(next(iter(ports.values()))) | {
        "device_owner": "network:router_interface",
        "device_id": "",
    }
    assert router_port_from_neutron(unattached) is None


async def test_an_overflow_of_the_bus_asks_for_one_full_sweep_once_caught_up(
    world: FakeNetworkReader,
) -> None:
    """Messages dropped by a full subscription concern unknown routers: once the intake has
    caught up, ``on_overflow`` is called, once per overflow (not once per dropped message)."""
    recorder, overflows = Recorder(), []
    async with EmbeddedBus(max_pending=2) as bus:
        intake = Intake(
            bus=bus, reader=world, enqueue=recorder, on_overflow=lambda: overflows.append(1)
        )
        await intake.open()
        for _ in range(5):  # published before the intake runs: 3 are dropped
            await bus.publish(exchange=EXCHANGE, routing_key="notifications.info", body=GOOD)
        task = asyncio.create_task(intake.run())
        run = Running(bus, intake, recorder)
        run.sent = 2
        await run.settle()
        assert overflows == [1]
        await run.publish(GOOD)  # no new drop: no new sweep
        await run.settle()
        assert overflows == [1]
        for _ in range(5):  # a second overflow: one more
            await bus.publish(exchange=EXCHANGE, routing_key="notifications.info", body=GOOD)
        run.sent += 2
        await run.settle()
        assert overflows == [1, 1]
        await intake.close()
        await asyncio.wait_for(task, timeout=5)


async def test_without_an_overflow_no_sweep_is_asked(running: Running) -> None:
    overflows: list[int] = []
    running.intake._on_overflow = lambda: overflows.append(1)
    for _ in range(3):
        await running.publish(GOOD)
    await running.settle()
    assert overflows == []
