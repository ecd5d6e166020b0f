"""The router reconciler converges a router step by step, on virtual time, with in-test fakes.

Nothing sleeps: the clock is a number the test moves, and ``requeue`` only
records the delay asked for.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from astara.domain.backoff import Backoff
from astara.domain.breaker import CircuitBreaker
from astara.domain.lifecycle import Action, ApiStatus, State
from astara.orchestrator.appliance_client import ApplianceUnreachable
from astara.orchestrator.journal import Journal
from astara.orchestrator.reconcile import (
    MIN_POLL_DELAY,
    MemoryStateStore,
    RouterReconciler,
    Segment,
    config_fingerprint,
    ports_of,
    router_ports,
)
from astara.orchestrator.resolution import ResourceKey
from astara.orchestrator.router_driver import Management, build_config
from astara.orchestrator.router_reader import (
    FixedIP,
    FloatingIPRecord,
    NetworkRecord,
    PortRecord,
    RouterGone,
    RouterRecord,
    SubnetRecord,
)
from astara.providers.base import ProviderTemporaryError
from astara.providers.fake import FakeProvider
from astara.wire.appliance_v1 import ConfigurationBody, Status

ROUTER = "1a2b3c4d-0000-4000-8000-000000000001"
KEY = ResourceKey.router(ROUTER)
BOOT_TIMEOUT = 60.0
MANAGEMENT = Management(
    mac="fa:16:3e:ff:ff:01", address=ipaddress.ip_interface("fdca:3ba5:a17a:acda::2/64")
)


def _subnet(subnet_id: str, network_id: str, cidr: str, gateway: str) -> SubnetRecord:
    return SubnetRecord(
        id=subnet_id,
        network_id=network_id,
        cidr=cidr,
        gateway_ip=gateway,
        enable_dhcp=True,
        dns_nameservers=(),
        host_routes=(),
        ipv6_ra_mode=None,
        ipv6_address_mode=None,
    )


def _port(port_id: str, network_id: str, mac: str, owner: str, subnet: str, ip: str) -> PortRecord:
    return PortRecord(
        id=port_id,
        network_id=network_id,
        mac_address=mac,
        device_id=ROUTER,
        device_owner=owner,
        fixed_ips=(FixedIP(subnet_id=subnet, ip_address=ip),),
        dns_name="",
    )


GATEWAY = _port(
    "gw", "ext", "fa:16:3e:00:00:01", "network:router_gateway", "ext-sub", "203.0.113.5"
)
IFACE_A = _port(
    "if-a", "net-a", "fa:16:3e:00:00:0a", "network:router_interface", "sub-a", "10.0.0.1"
)
IFACE_B = _port(
    "if-b", "net-b", "fa:16:3e:00:00:0b", "network:router_interface", "sub-b", "10.1.0.1"
)


pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


@dataclass
class FakeReader:
    """A ``RouterReader`` over a router, its ports, and the subnets and networks they use."""

    gone: bool = False
    router_reads: int = 0
    #: the router's status as the network API shows it
    status: str | None = None
    ports: list[PortRecord] = field(default_factory=lambda: [GATEWAY, IFACE_A])
    subnets_by_id: dict[str, SubnetRecord] = field(
        default_factory=lambda: {
            "ext-sub": _subnet("ext-sub", "ext", "203.0.113.0/24", "203.0.113.1"),
            "sub-a": _subnet("sub-a", "net-a", "10.0.0.0/24", "10.0.0.1"),
            "sub-b": _subnet("sub-b", "net-b", "10.1.0.0/24", "10.1.0.1"),
        }
    )

    async def router(self, *, router_id: str) -> RouterRecord:
        self.router_reads += 1
        await asyncio.sleep(0)  # a real read yields: the look's other reads run meanwhile
        if self.gone:
            raise RouterGone(router_id)
        return RouterRecord(
            id=router_id,
            name="r1",
            project_id="p1",
            gateway_network_id="ext",
            routes=(),
            status=self.status,
        )

    async def router_ports(self, *, router_id: str) -> Sequence[PortRecord]:
        return [] if self.gone else list(self.ports)

    async def subnets(self, *, subnet_ids: Collection[str]) -> Sequence[SubnetRecord]:
        return [s for i, s in self.subnets_by_id.items() if i in subnet_ids]

    async def networks(self, *, network_ids: Collection[str]) -> Sequence[NetworkRecord]:
        return [NetworkRecord(id=n, name=n, mtu=1450) for n in sorted(network_ids)]

    async def ports_on_subnets(self, *, subnet_ids: Collection[str]) -> Sequence[PortRecord]:
        return [p for p in self.ports if any(f.subnet_id in subnet_ids for f in p.fixed_ips)]

    async def floating_ips(self, *, router_id: str) -> Sequence[FloatingIPRecord]:
        return []


@dataclass
class FakeAppliance:
    """An ``ApplianceAPI``: silent, answering, or answering with an error; keeps one config."""

    answering: bool = False
    error: Exception | None = None
    config: ConfigurationBody | None = None
    puts: list[ConfigurationBody] = field(default_factory=list)
    #: accept PUTs but keep the old configuration (an appliance whose apply never takes)
    deaf: bool = False

    async def status(self, address: object) -> Status:
        if not self.answering:
            raise ApplianceUnreachable(f"{address}: connect timeout")
        if self.error is not None:
            raise self.error
        return Status(v4=True, v6=False)

    async def get_config(self, address: object) -> ConfigurationBody | None:
        if not self.answering:
            raise ApplianceUnreachable(f"{address}: connect timeout")
        if self.error is not None:
            raise self.error
        return self.config

    async def put_config(self, address: object, body: ConfigurationBody) -> ConfigurationBody:
        self.puts.append(body)
        if self.deaf and self.config is not None:
            return self.config  # it answers with what it runs: the old configuration
        self.config = body
        return body


class FakeSegments:
    async def segments(self, *, network_ids: Collection[str]) -> Mapping[str, Segment]:
        return {n: Segment("vxlan", 100 + i, None, 1450) for i, n in enumerate(sorted(network_ids))}


@dataclass
class World:
    """The reconciler and everything around it, on a virtual clock."""

    now: float = 1_000_000.0
    reader: FakeReader = field(default_factory=FakeReader)
    appliance: FakeAppliance = field(default_factory=FakeAppliance)
    published: list[tuple[str, ApiStatus, str]] = field(default_factory=list)
    requeued: list[tuple[ResourceKey, float]] = field(default_factory=list)
    store: MemoryStateStore = field(default_factory=MemoryStateStore)
    journal: Journal = field(default_factory=Journal)
    breaker: CircuitBreaker[ResourceKey] = field(
        default_factory=lambda: CircuitBreaker(window_seconds=600)
    )
    provider: FakeProvider = field(init=False)
    reconciler: RouterReconciler = field(init=False)

    def __post_init__(self) -> None:
        self.provider = FakeProvider(clock=lambda: datetime.fromtimestamp(self.now, UTC))
        self.reconciler = self.restart()

    def restart(self) -> RouterReconciler:
        """A reconciler as after a process restart (when given a fresh store)."""

        async def sink(router_id: str, status: ApiStatus, reason: str) -> None:
            self.published.append((router_id, status, reason))

        self.reconciler = RouterReconciler(
            reader=self.reader,
            provider=self.provider,
            appliance=self.appliance,
            status_sink=sink,
            management=lambda _router_id: MANAGEMENT,
            segments=FakeSegments(),
            requeue=lambda key, delay: self.requeued.append((key, delay)),
            store=self.store,
            boot_timeout=BOOT_TIMEOUT,
            backoff=Backoff(base=1.0, factor=2.0, cap=8.0, jitter=0.0),
            max_failures=3,
            breaker=self.breaker,
            clock=lambda: self.now,
            poll_delay=2.0,
            settle_delay=0.5,
            journal=self.journal,
        )
        return self.reconciler

    async def step(self) -> Action | None:
        decision = await self.reconciler.step(KEY)
        return None if decision is None else decision.action

    async def state(self) -> State | None:
        remembered = await self.store.get(KEY)
        return None if remembered is None else remembered.state

    def statuses(self) -> list[ApiStatus]:
        return [status for _, status, _ in self.published]

    def operations(self) -> list[str]:
        return [operation for operation, _ in self.provider.calls if operation != "get"]

    async def converge(self) -> None:
        self.appliance.answering = True
        for _ in range(10):
            if await self.step() is Action.NOTHING:
                return
        raise AssertionError("did not converge")

    async def built(self) -> ConfigurationBody:
        return await build_config(
            router_id=ROUTER, reader=self.reader, management=MANAGEMENT, orchestrator=None
        )


async def test_a_new_router_boots_waits_for_its_agent_is_configured_and_active() -> None:
    world = World()
    assert await world.step() is Action.BOOT
    assert await world.state() is State.BOOTING
    instance = await world.provider.get(router_id=ROUTER)
    assert instance is not None
    assert instance.macs == {GATEWAY.mac_address, IFACE_A.mac_address}
    assert world.requeued[-1] == (KEY, MIN_POLL_DELAY)  # the agent may answer at once

    world.now += 1
    assert await world.step() is Action.WAIT  # the agent is not up yet
    assert world.requeued[-1] == (KEY, 0.5)  # half the time since the boot
    world.now += 9
    assert await world.step() is Action.WAIT
    assert world.requeued[-1] == (KEY, 2.0)  # never longer than poll_delay

    world.appliance.answering = True
    requeues = len(world.requeued)
    assert await world.step() is Action.CONFIGURE
    assert world.appliance.puts == [await world.built()]
    # the appliance answered the PUT with the configuration wanted: ACTIVE at once
    assert await world.state() is State.ACTIVE
    assert world.statuses() == ["BUILD", "ACTIVE"]
    assert len(world.requeued) == requeues  # converged: no verifying look

    assert await world.step() is Action.NOTHING
    assert await world.state() is State.ACTIVE
    assert world.statuses() == ["BUILD", "ACTIVE"]
    assert len(world.requeued) == requeues


async def test_a_change_that_never_takes_is_retried_on_the_settle_delay_not_in_a_spin() -> None:
    world = World()
    await world.converge()
    world.appliance.deaf = True
    built = await world.built()
    stale = built.configuration.model_copy(update={"hostname": "stale"})
    world.appliance.config = built.model_copy(update={"configuration": stale})
    assert await world.step() is Action.CONFIGURE
    assert world.requeued[-1] == (KEY, 0.0)  # the first push of a change: verified at once
    for _ in range(3):
        assert await world.step() is Action.CONFIGURE
        assert world.requeued[-1] == (KEY, 0.5)  # not taken: no faster than settle_delay


async def test_nothing_changed_is_nothing_and_no_status_published() -> None:
    world = World()
    await world.converge()
    published, requeues, puts = len(world.published), len(world.requeued), len(world.appliance.puts)
    assert await world.step() is Action.NOTHING
    assert (len(world.published), len(world.requeued)) == (published, requeues)
    assert len(world.appliance.puts) == puts


async def test_a_config_already_applied_is_not_pushed_again() -> None:
    world = World()
    await world.converge()
    world.appliance.puts.clear()
    world.store.states.clear()  # a restart: ABSENT adopts the running appliance
    world.restart()
    assert await world.step() is Action.NOTHING
    assert await world.state() is State.ACTIVE
    assert world.appliance.puts == []
    assert "destroy" not in world.operations()
    assert world.statuses()[-1] == "ACTIVE"


async def test_a_restart_does_not_publish_the_status_the_network_api_shows() -> None:
    world = World()
    await world.converge()
    world.store.states.clear()
    world.restart()
    world.reader.status = "ACTIVE"  # as the previous orchestrator left it
    published = len(world.published)
    assert await world.step() is Action.NOTHING
    assert await world.state() is State.ACTIVE
    assert len(world.published) == published  # no PUT, and no notification back
    # a status the API shows wrongly is corrected, once
    world.store.states.clear()
    world.restart()
    world.reader.status = "ERROR"
    assert await world.step() is Action.NOTHING
    assert world.statuses()[published:] == ["ACTIVE"]
    assert await world.step() is Action.NOTHING
    assert world.statuses()[published:] == ["ACTIVE"]


async def test_an_interface_added_is_hot_plugged_then_configured_in_one_look() -> None:
    world = World()
    await world.converge()
    world.reader.ports.append(IFACE_B)
    requeues = len(world.requeued)
    # the plug and the configuration it calls for, in one look: no BUILD for a router
    # that keeps routing, and no second look
    assert await world.step() is Action.CONFIGURE
    assert ("plug", ROUTER) in world.provider.calls
    assert "destroy" not in world.operations()
    instance = await world.provider.get(router_id=ROUTER)
    assert instance is not None and IFACE_B.mac_address in instance.macs
    assert world.appliance.puts[-1] == await world.built()
    assert await world.state() is State.ACTIVE
    assert len(world.requeued) == requeues  # confirmed by the appliance: nothing to verify
    assert await world.step() is Action.NOTHING
    assert world.statuses() == ["BUILD", "ACTIVE"]


async def test_the_journal_shows_the_plug_and_the_configuration_of_one_look() -> None:
    world = World()
    await world.converge()
    world.reader.ports.append(IFACE_B)
    assert await world.step() is Action.CONFIGURE
    record = world.journal.get(ROUTER)
    assert record is not None
    last = [(e.from_state, e.to_state, e.action) for e in record.history][-2:]
    assert last == [("ACTIVE", "REPLUGGING", "REPLUG"), ("REPLUGGING", "ACTIVE", "CONFIGURE")]


async def test_a_replug_whose_configuration_fails_is_configured_on_the_next_look() -> None:
    world = World()
    await world.converge()
    world.reader.ports.append(IFACE_B)
    world.appliance.deaf = True  # the push does not take
    assert await world.step() is Action.CONFIGURE
    assert IFACE_B.mac_address in (await world.provider.get(router_id=ROUTER)).macs  # type: ignore[union-attr]
    assert await world.state() is State.CONFIGURING
    world.appliance.deaf = False
    assert await world.step() is Action.CONFIGURE
    assert await world.state() is State.ACTIVE


async def test_an_interface_removed_is_unplugged() -> None:
    world = World()
    world.reader.ports.append(IFACE_B)
    await world.converge()
    world.reader.ports.remove(IFACE_B)
    assert await world.step() is Action.CONFIGURE  # unplugged, then configured, in one look
    assert ("unplug", ROUTER) in world.provider.calls
    assert await world.step() is Action.NOTHING
    assert "destroy" not in world.operations()


async def test_an_agent_silent_past_the_boot_timeout_is_rebuilt() -> None:
    world = World()
    await world.converge()
    world.appliance.answering = False
    world.now += BOOT_TIMEOUT + 1
    assert await world.step() is Action.REBUILD
    assert world.operations()[-1] == "destroy"
    assert await world.state() is State.REBUILDING
    assert world.requeued[-1] == (KEY, 1.0)  # a failure: on the backoff
    world.appliance.config = None  # the new appliance starts unconfigured
    assert await world.step() is Action.BOOT
    assert world.operations()[-1] == "boot"
    assert await world.step() is Action.WAIT  # a fresh instance: within its boot timeout
    world.appliance.answering = True
    assert await world.step() is Action.CONFIGURE
    assert await world.step() is Action.NOTHING
    assert world.statuses()[-1] == "ACTIVE"


async def test_an_agent_answering_with_errors_is_unhealthy_and_rebuilt() -> None:
    world = World()
    await world.converge()
    world.appliance.error = RuntimeError("500 apply_failed")
    assert await world.step() is Action.REBUILD
    assert world.operations()[-1] == "destroy"


async def test_an_open_breaker_holds_the_rebuild() -> None:
    world = World()
    world.breaker = CircuitBreaker(window_seconds=600, min_population=1)
    world.breaker.record(ResourceKey.router("other"), alive=False, now=world.now)
    world.restart()
    await world.converge()
    world.appliance.answering = False
    world.now += BOOT_TIMEOUT + 1
    assert await world.step() is Action.WAIT
    assert "destroy" not in world.operations()
    assert await world.state() is State.ACTIVE


async def test_a_deleted_router_is_stopped_and_forgotten_without_error() -> None:
    world = World()
    await world.converge()
    world.reader.gone = True
    assert await world.step() is Action.STOP
    assert world.operations()[-1] == "destroy"
    assert await world.step() is Action.NOTHING  # nothing left: GONE
    assert await world.store.get(KEY) is None
    assert await world.provider.get(router_id=ROUTER) is None
    assert "ERROR" not in world.statuses()
    assert world.statuses() == ["BUILD", "ACTIVE"]  # a deleted router gets no status


async def test_a_failing_provider_backs_off_goes_error_and_recovers() -> None:
    world = World()
    world.provider.fail("boot", ProviderTemporaryError("the agent is down"), times=4)
    for _ in range(4):
        assert await world.step() is Action.BOOT  # decided, and failed
    delays = [delay for _, delay in world.requeued]
    assert delays == [1.0, 2.0, 4.0, 8.0]  # exponential, then capped
    assert await world.state() is State.ERROR
    errors = [(status, reason) for _, status, reason in world.published if status == "ERROR"]
    assert len(errors) == 1  # published once, with the reason
    assert "the agent is down" in errors[0][1]
    world.requeued.clear()
    assert await world.step() is Action.BOOT  # the provider works again
    assert await world.state() is State.ERROR  # still ERROR until converged
    assert world.requeued  # and still requeued
    world.appliance.answering = True
    assert await world.step() is Action.CONFIGURE
    assert await world.step() is Action.NOTHING
    assert await world.state() is State.ACTIVE
    assert world.statuses()[-1] == "ACTIVE"
    remembered = await world.store.get(KEY)
    assert remembered is not None and remembered.failures.failures == 0


async def test_a_failing_network_api_is_retried_on_the_backoff() -> None:
    world = World()

    async def broken(*, router_id: str) -> RouterRecord:
        raise OSError("connection refused")

    world.reader.router = broken  # type: ignore[method-assign]
    assert await world.step() is None
    assert world.requeued == [(KEY, 1.0)]
    assert world.operations() == []  # read only (the instance, alongside the router): no change


async def test_ports_of_maps_router_ports_gateway_first_with_their_segments() -> None:
    router = await FakeReader().router(router_id=ROUTER)
    wanted = router_ports(router, [IFACE_B, IFACE_A, GATEWAY])
    assert [p.id for p in wanted] == ["gw", "if-a", "if-b"]
    specs = ports_of(wanted, {"ext": Segment("flat", None, "public", 1500)})
    assert specs[0].network_type == "flat" and specs[0].physical_network == "public"
    assert specs[1].network_type == "local" and specs[1].mtu == 1500
    assert [s.mac for s in specs] == [GATEWAY.mac_address, IFACE_A.mac_address, IFACE_B.mac_address]


async def test_config_fingerprint_compares_json() -> None:
    world = World()
    body = await world.built()
    same = ConfigurationBody.model_validate_json(body.model_dump_json())
    assert config_fingerprint(body) == config_fingerprint(same)
    world.reader.ports.append(IFACE_B)
    assert config_fingerprint(await world.built()) != config_fingerprint(body)


async def test_one_look_reads_the_router_once_and_leaves_no_read_running() -> None:
    world = World()
    await world.converge()
    world.reader.router_reads = 0
    assert await world.step() is Action.NOTHING
    assert world.reader.router_reads == 1  # the observation and the build share the read
    world.reader.gone = True  # deleted: the build started alongside fails, and is reaped
    assert await world.step() is Action.STOP
