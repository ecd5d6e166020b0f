"""HealthMonitor: misses, one enqueue per outage, recovery, forget, bounds, gone, breaker, loop.

A fake client answers per address from a script; time is virtual (the
monitor's clock and sleep are the test's), so nothing here sleeps for real.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from astara.domain.breaker import CircuitBreaker
from astara.orchestrator.appliance_client import Address, ApplianceUnreachable
from astara.orchestrator.health import HealthMonitor
from astara.orchestrator.resolution import ResourceKey
from astara.wire.appliance_v1 import Status

A = ResourceKey.router("a")
B = ResourceKey.router("b")


pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


class FakeClient:
    """Answers ``status`` per address: ``down`` addresses raise, the rest answer ``answer``."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.answer = Status(v4=True, v6=True)
        self.calls: list[str] = []
        self.in_flight = 0
        self.peak = 0
        self.gate: asyncio.Event | None = None

    async def status(self, address: Address) -> Status:
        self.calls.append(str(address))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0)
            if self.gate is not None:
                await self.gate.wait()
            if str(address) in self.down:
                raise ApplianceUnreachable(f"{address}: connect refused")
            return self.answer
        finally:
            self.in_flight -= 1


class VirtualTime:
    """A clock the test owns; ``sleep`` advances it and yields once."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)


class Env:
    def __init__(self, targets: dict[ResourceKey, Address], **kwargs: object) -> None:
        self.client = FakeClient()
        self.time = VirtualTime()
        self.targets = targets
        self.enqueued: list[ResourceKey] = []
        self.breaker: CircuitBreaker[ResourceKey] = CircuitBreaker(
            window_seconds=10, min_population=1
        )
        self.monitor = HealthMonitor(
            client=self.client,
            targets=lambda: self.targets,
            enqueue=self.enqueued.append,
            breaker=self.breaker,
            clock=self.time.clock,
            sleep=self.time.sleep,
            rng=random.Random(7),
            **kwargs,  # type: ignore[arg-type]
        )

    async def sweeps(self, n: int) -> None:
        for _ in range(n):
            await self.monitor.sweep()
            self.time.now += 2.0


def two() -> Env:
    return Env({A: "10.0.0.1", B: "fd00::1"})


async def test_misses_count_up_to_the_threshold_then_enqueue() -> None:
    env = two()
    env.client.down.add("10.0.0.1")
    await env.sweeps(2)
    state = env.monitor.health(A)
    assert state is not None
    assert (state.misses, state.answering, state.healthy) == (2, False, False)
    assert "connect refused" in (state.last_error or "")
    assert env.enqueued == []
    await env.sweeps(1)
    assert env.enqueued == [A]


async def test_one_enqueue_per_outage() -> None:
    env = two()
    env.client.down.add("10.0.0.1")
    await env.sweeps(10)
    assert env.enqueued == [A]
    state = env.monitor.health(A)
    assert state is not None and state.misses == 10


async def test_recovery_resets_misses_and_rearms() -> None:
    env = two()
    env.client.down.add("10.0.0.1")
    await env.sweeps(3)
    env.client.down.clear()
    seen_at = env.time.now
    await env.sweeps(1)
    state = env.monitor.health(A)
    assert state is not None
    assert (state.misses, state.healthy, state.last_error) == (0, True, None)
    assert state.last_seen == seen_at
    env.client.down.add("10.0.0.1")
    await env.sweeps(2)
    assert env.enqueued == [A]  # misses count from zero again
    await env.sweeps(1)
    assert env.enqueued == [A, A]  # a second outage, a second enqueue


async def test_an_answer_with_unreachable_gateways_is_not_a_miss() -> None:
    env = two()
    env.client.answer = Status(v4=False, v6=True)
    await env.sweeps(5)
    state = env.monitor.health(A)
    assert state is not None
    assert (state.misses, state.healthy, state.v4, state.v6) == (0, True, False, True)
    assert env.enqueued == []


async def test_unknown_and_unprobed_keys_have_no_health() -> None:
    env = two()
    assert env.monitor.health(A) is None
    await env.sweeps(1)
    assert env.monitor.health(ResourceKey.router("nobody")) is None


async def test_keys_no_longer_targets_are_forgotten_here_and_in_the_breaker() -> None:
    env = two()
    env.client.down.add("fd00::1")
    await env.sweeps(1)
    assert env.breaker.counts(env.time.now) == (1, 2)
    del env.targets[B]
    await env.sweeps(1)
    assert env.monitor.health(B) is None
    assert env.breaker.counts(env.time.now) == (0, 1)


async def test_a_new_address_starts_afresh() -> None:
    env = two()
    env.client.down.add("10.0.0.1")
    await env.sweeps(2)
    env.targets[A] = "10.0.0.2"
    await env.sweeps(2)
    state = env.monitor.health(A)
    assert state is not None and state.misses == 0 and state.healthy
    assert env.enqueued == []


async def test_the_breaker_sees_every_probe() -> None:
    targets: dict[ResourceKey, Address] = {
        ResourceKey.router(str(i)): f"10.0.0.{i}" for i in range(1, 11)
    }
    env = Env(targets)
    env.client.down.update(f"10.0.0.{i}" for i in range(1, 7))
    await env.sweeps(1)
    now = env.time.now
    assert env.breaker.dead_fraction(now) == pytest.approx(0.6)
    assert not env.breaker.allow_rebuild(now)
    env.client.down.clear()
    await env.sweeps(1)
    assert env.breaker.dead_fraction(env.time.now) == 0
    assert env.breaker.allow_rebuild(env.time.now)


async def test_probes_in_flight_are_bounded() -> None:
    targets: dict[ResourceKey, Address] = {
        ResourceKey.router(str(i)): f"10.1.{i // 250}.{i % 250 + 1}" for i in range(200)
    }
    env = Env(targets, concurrency=8)
    env.client.gate = asyncio.Event()
    baseline = len(asyncio.all_tasks())
    sweep = asyncio.create_task(env.monitor.sweep())
    for _ in range(5):
        await asyncio.sleep(0)
    assert env.client.in_flight == 8
    assert len(asyncio.all_tasks()) - baseline == 1 + 8  # the sweep and its workers, no more
    env.client.gate.set()
    await sweep
    assert env.client.peak == 8
    assert len(env.client.calls) == 200


async def test_a_hanging_probe_times_out_as_a_miss() -> None:
    env = Env({A: "10.0.0.1"}, probe_timeout=0.01)
    env.client.gate = asyncio.Event()  # never set: the probe hangs
    await env.monitor.sweep()
    state = env.monitor.health(A)
    assert state is not None and state.misses == 1
    assert "TimeoutError" in (state.last_error or "")


async def test_notice_gone_enqueues_at_once_and_resets() -> None:
    env = two()
    env.client.down.add("10.0.0.1")
    await env.sweeps(2)
    env.monitor.notice_gone(A)
    assert env.enqueued == [A]
    state = env.monitor.health(A)
    assert state is not None
    assert (state.misses, state.healthy, state.answering) == (0, False, False)
    await env.sweeps(5)  # still down: the outage was reported already
    assert env.enqueued == [A]
    env.client.down.clear()
    await env.sweeps(1)
    state = env.monitor.health(A)
    assert state is not None and state.healthy
    env.monitor.notice_gone(ResourceKey.router("unknown"))  # not a target: enqueued anyway
    assert env.enqueued == [A, ResourceKey.router("unknown")]


async def test_a_failing_enqueue_does_not_stop_the_sweep() -> None:
    env = two()
    env.client.down.update({"10.0.0.1", "fd00::1"})

    def broken(key: ResourceKey) -> None:
        raise RuntimeError("queue broken")

    env.monitor._enqueue = broken
    await env.sweeps(3)
    state = env.monitor.health(B)
    assert state is not None and state.misses == 3


async def test_jitter_stays_within_bounds() -> None:
    env = Env({}, period=2.0, jitter=0.2)
    delays = [env.monitor.next_delay() for _ in range(2000)]
    assert all(1.6 <= d <= 2.4 for d in delays)
    assert max(delays) - min(delays) > 0.6  # it does spread
    flat = Env({}, period=2.0, jitter=0.0)
    assert {flat.monitor.next_delay() for _ in range(10)} == {2.0}


async def test_run_sweeps_each_period_and_close_leaves_no_task() -> None:
    env = two()
    runner = asyncio.create_task(env.monitor.run())
    while len(env.time.sleeps) < 5:
        await asyncio.sleep(0)
    await env.monitor.close()
    await runner  # returns normally after close
    assert len(env.client.calls) >= 10  # both targets, every sweep
    assert all(1.6 <= d <= 2.4 for d in env.time.sleeps)


async def test_close_during_a_sweep_abandons_it() -> None:
    env = two()
    env.client.gate = asyncio.Event()  # probes hang
    runner = asyncio.create_task(env.monitor.run())
    while env.client.in_flight < 2:
        await asyncio.sleep(0)
    await env.monitor.close()
    await runner
    assert env.client.in_flight == 0


async def test_cancelling_run_propagates_and_leaves_no_task() -> None:
    env = two()
    runner = asyncio.create_task(env.monitor.run())
    while len(env.time.sleeps) < 2:
        await asyncio.sleep(0)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner


async def test_run_after_close_returns_at_once() -> None:
    env = two()
    await env.monitor.close()
    await env.monitor.run()
    assert env.client.calls == []


def test_bad_settings_are_refused() -> None:
    breaker: CircuitBreaker[ResourceKey] = CircuitBreaker(window_seconds=1)
    for bad in ({"period": 0}, {"jitter": 1.0}, {"misses": 0}, {"concurrency": 0}):
        with pytest.raises(ValueError):
            HealthMonitor(
                client=FakeClient(),
                targets=dict,
                enqueue=lambda key: None,
                breaker=breaker,
                **bad,
            )
