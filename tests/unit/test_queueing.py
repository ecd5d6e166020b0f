"""WorkQueue: bounded pool, one reconcile per key, coalescing, fairness, failures, close; shards."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from astara.orchestrator.queueing import ShardFilter, WorkQueue, shard_of
from astara.orchestrator.resolution import ResourceKey

A = ResourceKey.router("a")
B = ResourceKey.router("b")
C = ResourceKey.router("c")


pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


class Recorder:
    """A reconcile that records starts and overlaps, and waits for ``release`` (set by default)."""

    def __init__(self, *, gated: bool = False) -> None:
        self.started: list[ResourceKey] = []
        self.finished: list[ResourceKey] = []
        self.cancelled: list[ResourceKey] = []
        self.in_flight: set[ResourceKey] = set()
        self.overlaps: list[ResourceKey] = []
        self.max_in_flight = 0
        self.release = asyncio.Event()
        if not gated:
            self.release.set()
        self.during: Callable[[ResourceKey], None] = lambda key: None
        self._changed = asyncio.Condition()

    async def __call__(self, key: ResourceKey) -> None:
        if key in self.in_flight:
            self.overlaps.append(key)
        self.in_flight.add(key)
        self.max_in_flight = max(self.max_in_flight, len(self.in_flight))
        self.started.append(key)
        async with self._changed:
            self._changed.notify_all()
        try:
            self.during(key)
            await self.release.wait()
            await asyncio.sleep(0)  # let other reconciles interleave
            self.finished.append(key)
        except asyncio.CancelledError:
            self.cancelled.append(key)
            raise
        finally:
            self.in_flight.discard(key)

    async def wait_started(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.started) >= count)


@asynccontextmanager
async def running(queue: WorkQueue) -> AsyncIterator[asyncio.Task[None]]:
    """Run the queue in a task; close it (cancelling what is left) on the way out."""
    task = asyncio.create_task(queue.run())
    try:
        yield task
    finally:
        await queue.close(drain=False)
        await task


async def settle() -> None:
    """Let every ready callback run a few rounds (no wall-clock time involved)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_never_more_than_concurrency_in_flight() -> None:
    reconcile = Recorder(gated=True)
    queue = WorkQueue(reconcile=reconcile, concurrency=3)
    keys = [ResourceKey.router(f"r{i}") for i in range(10)]
    async with running(queue):
        for key in keys:
            queue.enqueue(key)
        await reconcile.wait_started(3)
        await settle()
        assert len(reconcile.started) == 3
        assert (queue.stats.running, queue.stats.queued) == (3, 7)
        reconcile.release.set()
        await queue.join()
    assert reconcile.max_in_flight == 3
    assert sorted(reconcile.finished) == sorted(keys)
    assert queue.stats.done == 10


async def test_one_reconcile_per_key_at_a_time() -> None:
    reconcile = Recorder()
    keys = [ResourceKey.router(f"r{i}") for i in range(4)]
    queue = WorkQueue(reconcile=reconcile, concurrency=8)

    def enqueue_all(key: ResourceKey) -> None:
        if len(reconcile.started) < 60:
            for other in keys:
                queue.enqueue(other)

    reconcile.during = enqueue_all
    async with running(queue):
        for key in keys:
            queue.enqueue(key)
        await queue.join()
    assert reconcile.overlaps == []
    assert reconcile.max_in_flight == 4  # the keys did run in parallel
    assert len(reconcile.started) >= 60
    assert queue.stats.coalesced > 0


async def test_burst_while_running_gives_exactly_one_follow_up() -> None:
    reconcile = Recorder(gated=True)
    queue = WorkQueue(reconcile=reconcile)
    async with running(queue):
        queue.enqueue(A)
        await reconcile.wait_started(1)
        for _ in range(100):
            queue.enqueue(A)
        assert (queue.stats.queued, queue.stats.coalesced) == (0, 99)
        reconcile.release.set()
        await queue.join()
    assert reconcile.started == [A, A]
    assert reconcile.overlaps == []


async def test_burst_while_queued_gives_one_reconcile() -> None:
    reconcile = Recorder(gated=True)
    queue = WorkQueue(reconcile=reconcile, concurrency=1)
    async with running(queue):
        queue.enqueue(B)
        await reconcile.wait_started(1)  # B holds the only slot, A has to wait
        for _ in range(10):
            queue.enqueue(A)
        assert (queue.stats.queued, queue.stats.coalesced) == (1, 9)
        reconcile.release.set()
        await queue.join()
    assert reconcile.started == [B, A]


async def test_enqueued_before_run_starts_once_run_does() -> None:
    reconcile = Recorder()
    queue = WorkQueue(reconcile=reconcile)
    for _ in range(5):
        queue.enqueue(A)
    assert queue.stats.queued == 1
    async with running(queue):
        await queue.join()
    assert reconcile.started == [A]


async def test_hot_key_goes_to_the_back_of_the_line() -> None:
    reconcile = Recorder()
    hot = ResourceKey.router("hot")
    others = [ResourceKey.router(f"r{i}") for i in range(10)]
    queue = WorkQueue(reconcile=reconcile, concurrency=1)

    def reenqueue(key: ResourceKey) -> None:
        if key == hot and reconcile.started.count(hot) < 5:
            queue.enqueue(hot)

    reconcile.during = reenqueue
    async with running(queue):
        for key in [hot, *others]:
            queue.enqueue(key)
        await queue.join()
    # Every key waiting when the hot one ran got its turn before the hot one's next run.
    assert reconcile.started == [hot, *others, hot, hot, hot, hot]


async def test_key_enqueued_while_hot_key_runs_waits_one_round_at_most() -> None:
    reconcile = Recorder()
    queue = WorkQueue(reconcile=reconcile, concurrency=1)

    def churn(key: ResourceKey) -> None:
        if key == A and reconcile.started.count(A) < 6:
            queue.enqueue(A)
            if reconcile.started.count(A) == 2:
                queue.enqueue(B)

    reconcile.during = churn
    async with running(queue):
        queue.enqueue(A)
        await queue.join()
    assert reconcile.started == [A, A, B, A, A, A, A]


async def test_a_failing_reconcile_is_logged_counted_and_isolated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()

    async def reconcile(key: ResourceKey) -> None:
        await recorder(key)
        if key == B:
            raise RuntimeError("boom")

    queue = WorkQueue(reconcile=reconcile, concurrency=1)
    with caplog.at_level(logging.ERROR, logger="astara.orchestrator.queueing"):
        async with running(queue):
            for key in (A, B, C):
                queue.enqueue(key)
            await queue.join()
            queue.enqueue(B)  # a failed key is not stuck
            queue.enqueue(A)
            await queue.join()
    assert recorder.started == [A, B, C, B, A]
    assert (queue.stats.done, queue.stats.failed) == (3, 2)
    failures = [r for r in caplog.records if "router:b" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info is not None for r in failures)


async def test_close_with_drain_waits_for_running_and_starts_nothing_new() -> None:
    reconcile = Recorder(gated=True)
    queue = WorkQueue(reconcile=reconcile, concurrency=1)
    run = asyncio.create_task(queue.run())
    queue.enqueue(A)
    queue.enqueue(B)
    await reconcile.wait_started(1)
    queue.enqueue(A)  # dirty: would follow, but the queue is closing first
    closing = asyncio.create_task(queue.close(drain=True))
    await settle()
    assert not closing.done()
    assert not run.done()
    reconcile.release.set()
    await closing
    assert run.done()
    await run
    assert reconcile.started == [A]
    assert reconcile.finished == [A]
    stats = queue.stats
    assert (stats.done, stats.running, stats.queued, stats.cancelled) == (1, 0, 1, 0)
    queue.enqueue(C)
    assert queue.stats.dropped == 1


async def test_close_without_drain_cancels_and_leaves_no_task() -> None:
    reconcile = Recorder(gated=True)
    queue = WorkQueue(reconcile=reconcile, concurrency=2)
    before = asyncio.all_tasks()
    run = asyncio.create_task(queue.run())
    queue.enqueue(A)
    queue.enqueue(B)
    await reconcile.wait_started(2)
    assert len(asyncio.all_tasks() - before) == 3  # run and two reconciles
    await queue.close(drain=False)
    assert run.done()
    await run
    assert asyncio.all_tasks() == before
    assert sorted(reconcile.cancelled) == [A, B]
    assert reconcile.finished == []
    assert (queue.stats.cancelled, queue.stats.running) == (2, 0)


async def test_close_without_drain_cuts_a_draining_close_short() -> None:
    reconcile = Recorder(gated=True)
    queue = WorkQueue(reconcile=reconcile)
    run = asyncio.create_task(queue.run())
    queue.enqueue(A)
    await reconcile.wait_started(1)
    draining = asyncio.create_task(queue.close(drain=True))
    await settle()
    assert not draining.done()
    await queue.close(drain=False)
    await draining
    await run
    assert reconcile.cancelled == [A]


async def test_cancelling_run_cancels_the_reconciles() -> None:
    reconcile = Recorder(gated=True)
    queue = WorkQueue(reconcile=reconcile)
    run = asyncio.create_task(queue.run())
    queue.enqueue(A)
    await reconcile.wait_started(1)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert reconcile.cancelled == [A]
    assert queue.stats.running == 0
    await queue.close(drain=True)  # after the fact: returns at once


async def test_cancelling_run_while_it_drains_cancels_the_reconciles() -> None:
    reconcile = Recorder(gated=True)
    queue = WorkQueue(reconcile=reconcile)
    run = asyncio.create_task(queue.run())
    queue.enqueue(A)
    await reconcile.wait_started(1)
    draining = asyncio.create_task(queue.close(drain=True))
    await settle()
    assert not run.done()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await draining
    assert reconcile.cancelled == [A]


async def test_close_before_run_makes_run_return_at_once() -> None:
    reconcile = Recorder()
    queue = WorkQueue(reconcile=reconcile)
    queue.enqueue(A)
    await queue.close(drain=True)
    await queue.run()
    assert reconcile.started == []
    with pytest.raises(RuntimeError):
        await queue.run()


def test_invalid_concurrency_is_refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        WorkQueue(reconcile=Recorder(), concurrency=0)


# Hard-coded: any process, any PYTHONHASHSEED, any host must agree on these.
EXPECTED_SHARDS: dict[str, list[int]] = {
    "00000000-0000-0000-0000-000000000000": [0, 1, 1, 3, 3],
    "8a8d6f1c-3b2e-4c57-9d0e-2f1b6a7c9e41": [0, 0, 1, 2, 14],
    "b0f7f8a4-1c5e-4d3a-8f6b-9e2d7c1a5b30": [0, 0, 2, 0, 12],
    "router-1": [0, 1, 1, 1, 5],
}
SHARD_COUNTS = (1, 2, 3, 4, 16)


@pytest.mark.parametrize(("router_id", "expected"), EXPECTED_SHARDS.items())
def test_shard_of_is_fixed(router_id: str, expected: list[int]) -> None:
    key = ResourceKey.router(router_id)
    assert [shard_of(key, n) for n in SHARD_COUNTS] == expected


def test_shard_of_agrees_in_another_process() -> None:
    script = (
        "from astara.orchestrator.queueing import shard_of\n"
        "from astara.orchestrator.resolution import ResourceKey\n"
        f"for i in {list(EXPECTED_SHARDS)!r}:\n"
        f"    print([shard_of(ResourceKey.router(i), n) for n in {SHARD_COUNTS!r}])\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.splitlines() == [str(v) for v in EXPECTED_SHARDS.values()]


def test_shard_of_spreads_uuids_evenly() -> None:
    rng = random.Random(20261125)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(10_000)]
    counts = Counter(shard_of(ResourceKey.router(i), 4) for i in ids)
    assert set(counts) == {0, 1, 2, 3}
    assert all(2375 <= n <= 2625 for n in counts.values()), counts


def test_every_key_is_kept_by_exactly_one_shard() -> None:
    filters = [ShardFilter(index=i, shards=3) for i in range(3)]
    for n in range(300):
        key = ResourceKey.router(f"r{n}")
        assert sum(f.keeps(key) for f in filters) == 1
    assert all(ShardFilter().keeps(ResourceKey.router(f"r{n}")) for n in range(300))


def test_wrapped_enqueue_passes_on_only_the_kept_keys() -> None:
    taken: list[ResourceKey] = []
    shard = ShardFilter(index=1, shards=4)
    enqueue = shard.wrap(taken.append)
    keys = [ResourceKey.router(f"r{n}") for n in range(100)]
    for key in keys:
        enqueue(key)
    assert taken == [k for k in keys if shard_of(k, 4) == 1]
    assert 0 < len(taken) < 100


@pytest.mark.parametrize(("index", "shards"), [(0, 0), (-1, 2), (2, 2)])
def test_invalid_shard_filter_is_refused(index: int, shards: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        ShardFilter(index=index, shards=shards)


def test_shard_of_refuses_zero_shards() -> None:
    with pytest.raises(ValueError, match="shards"):
        shard_of(A, 0)


async def _timed_queue(cooldown: float) -> tuple[WorkQueue, list[float], asyncio.Event]:
    """A queue whose reconciles record their start times and hold until ``gate`` is set."""
    starts: list[float] = []
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def reconcile(key: ResourceKey) -> None:
        starts.append(loop.time())
        await gate.wait()

    return WorkQueue(reconcile=reconcile, cooldown=cooldown), starts, gate


async def test_a_burst_while_running_follows_up_at_once_then_once_per_cooldown() -> None:
    queue, starts, gate = await _timed_queue(cooldown=0.2)
    async with running(queue):
        queue.enqueue(A)
        await settle()
        for _ in range(50):  # a burst of events for the running key
            queue.enqueue(A)
        assert queue.stats.coalesced == 49
        gate.set()
        gate.clear()
        await settle()
        assert len(starts) == 2  # one follow-up for all fifty, at once (a change is often
        assert starts[1] - starts[0] < 0.1  # two or three events)
        for _ in range(10):  # the burst goes on while the follow-up runs
            queue.enqueue(A)
        gate.set()
        await asyncio.wait_for(queue.join(), 2)
        assert len(starts) == 3  # one more follow-up for all ten...
        assert starts[2] - starts[1] >= 0.2 - 0.01  # ...no sooner than the cooldown


async def test_the_reconcilers_own_look_skips_the_cooldown() -> None:
    queue, starts, gate = await _timed_queue(cooldown=5.0)
    async with running(queue):
        queue.enqueue(A)
        await settle()
        queue.enqueue(A)  # an event: would wait 5 s
        queue.enqueue(A, now=True)  # the reconciler's own next look: at once
        gate.set()
        await asyncio.wait_for(queue.join(), 1)
        assert len(starts) == 2
        assert starts[1] - starts[0] < 1.0


async def test_a_cooling_key_starts_at_once_when_a_look_is_due_and_close_cancels_cooling() -> None:
    queue, starts, gate = await _timed_queue(cooldown=5.0)

    async def burst(expected_starts: int) -> None:
        """Enqueue A while it runs, twice in a row: the second follow-up cools."""
        queue.enqueue(A)
        gate.clear()
        await settle()
        queue.enqueue(A)
        gate.set()
        gate.clear()
        await settle()
        queue.enqueue(A)  # during the first follow-up
        gate.set()
        await settle()
        assert len(starts) == expected_starts
        assert queue.stats.queued == 1  # cooling

    async with running(queue):
        await burst(2)
        queue.enqueue(A, now=True)
        await settle()
        assert len(starts) == 3  # started at once
        await asyncio.wait_for(queue.join(), 1)
        await burst(5)  # cooling again when the queue closes
    assert queue.stats.queued == 0  # close cancelled the cooling timer
    assert len(starts) == 5
