"""Queueing: resource keys waiting for a reconcile, and the bounded pool that runs them.

The intake hands every key it resolves to ``WorkQueue.enqueue``; ``run``
starts one ``reconcile(key)`` per key, several keys in parallel. An event
only says *which* resource changed (DESIGN, "How the orchestrator thinks"),
so a burst of events for one resource needs one reconcile after the last of
them, not one per event: the queue keeps a key, not the events.

A key is in at most one of three places::

    enqueue ──> waiting (FIFO) ──> running ──> done / failed / cancelled
                   ^                  │
                   └──── dirty ───────┘   (enqueued again while running)

Invariants:

- At most one reconcile per key at any time.
- ``enqueue`` of a waiting key does nothing (counted as ``coalesced``).
- ``enqueue`` of a running key marks it dirty: exactly one more reconcile
  follows when the current one ends, however many enqueues came meanwhile
  (the first marks it, the rest are ``coalesced``). No event is lost, since
  the follow-up starts after the last of them and reads the state afresh;
  there is no stampede.
- A dirty key's first follow-up starts at once (one change often comes as
  two or three events). A follow-up of a follow-up (a burst: events kept
  coming while the key was reconciled twice in a row) starts no sooner than
  ``cooldown`` after its previous reconcile started: it *cools*, and enqueues
  meanwhile coalesce into it, so a burst costs about one reconcile per
  ``cooldown``, not one per reconcile's duration. ``enqueue(key, now=True)``
  (the reconciler's own next look, due at once) skips the cooldown and ends
  one. A reconcile that ends with no follow-up ends the burst.
- Keys start in the order they were first enqueued; a dirty key goes to the
  back of the line, so a hot key cannot starve the others: between two of
  its reconciles, every key that was waiting gets its turn.
- At most ``concurrency`` reconciles are in flight.
- A reconcile that raises is logged with its traceback and counted
  (``failed``); the queue and the other keys carry on. Retries and backoff
  belong to the state machine, not here.
- ``enqueue`` never blocks and never raises; it is called on the loop.
- ``run`` owns every reconcile task; when it returns (or is cancelled) none
  is left. ``close(drain=True)`` stops starting new reconciles and waits
  for the running ones; ``close(drain=False)`` cancels them. Keys still
  waiting at close stay unreconciled (``stats.queued``); the startup sweep,
  which reconciles every resource once, covers them at the next start.

Sharding across processes. When one process is not enough, N orchestrator
processes each subscribe to the bus (every process gets every notification:
one AMQP queue per process, bound to the same exchange), resolve it, and
keep only the keys of their own shard: ``ShardFilter(index=i, shards=N)``
wraps the queue's ``enqueue`` that the intake is given. ``shard_of`` hashes
the resource id with SHA-1, not Python's per-process randomised ``hash()``,
so every process, on every host and Python version, agrees where a key
belongs, and each key is reconciled by exactly one process. One shard (the
default) keeps everything. Changing N moves most keys to another shard, so
all processes restart together and their startup sweeps take over; moving
few keys when processes come and go is what the hash ring is for
(``coordination.py``, ``ownership.Ownership``: the same ``keeps``/``wrap``,
fenced by leases; ``claims`` is what the pending poll asks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from astara.orchestrator.resolution import ResourceKey

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_COOLDOWN",
    "DEFAULT_SHARDS",
    "QueueStats",
    "ShardFilter",
    "WorkQueue",
    "shard_of",
]

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 16
"""Reconciles in flight at once, over all keys."""

DEFAULT_COOLDOWN = 0.25
"""Seconds between the starts of two event-driven reconciles of one key, at least."""

DEFAULT_SHARDS = 1
"""Orchestrator processes the keys are spread over; one keeps everything."""


@dataclass(slots=True)
class QueueStats:
    """What ``WorkQueue`` holds and has done; ``queued`` and ``running`` are current counts."""

    #: keys waiting for a reconcile
    queued: int = 0
    #: reconciles in flight
    running: int = 0
    #: reconciles that returned
    done: int = 0
    #: reconciles that raised (logged)
    failed: int = 0
    #: reconciles cancelled by ``close(drain=False)`` or by cancelling ``run``
    cancelled: int = 0
    #: enqueues that changed nothing: the key was waiting, or running and already dirty
    coalesced: int = 0
    #: enqueues after ``close``, ignored
    dropped: int = 0


class WorkQueue:
    """Per-key coalescing queue and bounded reconcile pool; see the module for the invariants.

    ``reconcile`` is called with one key at a time per key, at most
    ``concurrency`` keys at once; what it raises is logged, never propagated.
    """

    def __init__(
        self,
        *,
        reconcile: Callable[[ResourceKey], Awaitable[None]],
        concurrency: int = DEFAULT_CONCURRENCY,
        cooldown: float = DEFAULT_COOLDOWN,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        if cooldown < 0:
            raise ValueError(f"cooldown must not be negative, not {cooldown}")
        self._cooldown = cooldown
        self._started_at: dict[ResourceKey, float] = {}
        self._urgent: set[ResourceKey] = set()
        self._cooling: dict[ResourceKey, asyncio.TimerHandle] = {}
        #: keys whose current reconcile is an event-driven follow-up (a burst under way)
        self._following: set[ResourceKey] = set()
        self._reconcile = reconcile
        self._concurrency = concurrency
        self._line: deque[ResourceKey] = deque()
        self._waiting: set[ResourceKey] = set()
        self._running: set[ResourceKey] = set()
        self._dirty: set[ResourceKey] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopped = asyncio.Event()
        self._started = False
        self._closing = False
        self._stats = QueueStats()

    @property
    def stats(self) -> QueueStats:
        """A snapshot of the counters."""
        return dataclasses.replace(
            self._stats, queued=len(self._line) + len(self._cooling), running=len(self._running)
        )

    @property
    def running(self) -> frozenset[ResourceKey]:
        """The keys being reconciled now."""
        return frozenset(self._running)

    def enqueue(self, key: ResourceKey, *, now: bool = False) -> None:
        """Ask for a reconcile of ``key``: now if there is room, else when its turn comes.

        ``now``: the reconciler's own next look, due at once: no cooldown.
        """
        if self._closing:
            self._stats.dropped += 1
            log.debug("queue closed; %s dropped", key)
        elif key in self._cooling:
            if now:
                self._cooling.pop(key).cancel()
                self._push(key)
            else:
                self._stats.coalesced += 1
        elif key in self._waiting:
            self._stats.coalesced += 1
        elif key in self._running:
            if now:
                self._urgent.add(key)
            if key in self._dirty:
                self._stats.coalesced += 1
            self._dirty.add(key)
        else:
            self._push(key)

    async def join(self) -> None:
        """Return once no key is waiting or running, or once ``run`` has ended."""
        await self._idle.wait()

    async def run(self) -> None:
        """Start reconciles as keys and room allow, until ``close``; then end them all.

        Returns when ``close`` was called and no reconcile is left. Cancelling
        it cancels the running reconciles too, then it raises ``CancelledError``.
        """
        if self._started:
            raise RuntimeError("WorkQueue.run called twice")
        self._started = True
        try:
            while not self._closing:
                self._wakeup.clear()
                self._dispatch()
                await self._wakeup.wait()
        except asyncio.CancelledError:
            self._closing = True
            self._cancel_all()
            raise
        finally:
            try:
                await self._reap()
            finally:
                self._idle.set()
                self._stopped.set()

    async def close(self, *, drain: bool) -> None:
        """Stop starting reconciles; wait for the running ones (``drain``) or cancel them.

        Returns once ``run`` has ended (at once if it never started). A second
        call with ``drain=False`` cancels what a draining first call waits for.
        """
        self._closing = True
        if not drain:
            self._cancel_all()
        for timer in self._cooling.values():
            timer.cancel()
        self._cooling.clear()
        self._wakeup.set()
        if self._started:
            await self._stopped.wait()
        if self._line:
            log.info("queue closed with %d keys waiting", len(self._line))

    def _push(self, key: ResourceKey) -> None:
        self._line.append(key)
        self._waiting.add(key)
        self._idle.clear()
        self._wakeup.set()

    def _dispatch(self) -> None:
        """Start the keys at the front of the line while there is room."""
        while self._line and len(self._running) < self._concurrency:
            key = self._line.popleft()
            self._waiting.discard(key)
            # Marked running before the task exists, so no enqueue can slip in between.
            self._running.add(key)
            self._started_at[key] = asyncio.get_running_loop().time()
            task = asyncio.create_task(self._work(key), name=f"reconcile {key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _work(self, key: ResourceKey) -> None:
        try:
            await self._reconcile(key)
        except asyncio.CancelledError:
            self._stats.cancelled += 1
            raise
        except Exception:
            self._stats.failed += 1
            log.exception("reconcile of %s failed", key)
        else:
            self._stats.done += 1
        finally:
            self._finish(key)

    def _finish(self, key: ResourceKey) -> None:
        """Free the key's slot; line it up again, at the back, if it was enqueued meanwhile."""
        self._running.discard(key)
        started = self._started_at.pop(key, None)
        following = key in self._following
        self._following.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            urgent = key in self._urgent
            self._urgent.discard(key)
            if not self._closing:
                loop = asyncio.get_running_loop()
                due = (started if started is not None else loop.time()) + self._cooldown
                if not urgent:
                    self._following.add(key)
                if urgent or not following or due <= loop.time():
                    self._push(key)
                else:
                    self._cooling[key] = loop.call_at(due, self._cooled, key)
        if not self._line and not self._running and not self._cooling:
            self._idle.set()
        self._wakeup.set()

    def _cooled(self, key: ResourceKey) -> None:
        if self._cooling.pop(key, None) is not None and not self._closing:
            self._push(key)

    def _cancel_all(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _reap(self) -> None:
        """Wait until every reconcile task has ended; cancelled meanwhile, cancel them first.

        So that cancelling ``run`` while it drains still leaves no task behind.
        """
        interrupted = False
        while self._tasks:
            try:
                await asyncio.wait(set(self._tasks))
            except asyncio.CancelledError:
                interrupted = True
                self._cancel_all()
        if interrupted:
            raise asyncio.CancelledError


def shard_of(key: ResourceKey, shards: int) -> int:
    """The shard, in ``range(shards)``, that owns ``key``: the same in every process.

    Only the resource id is hashed (ids are UUIDs, unique across kinds).
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    digest = hashlib.sha1(key.id.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") % shards


@dataclass(frozen=True, slots=True)
class ShardFilter:
    """The keys one process of ``shards`` keeps: those whose ``shard_of`` is ``index``."""

    index: int = 0
    shards: int = DEFAULT_SHARDS

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError(f"shards must be at least 1, not {self.shards}")
        if not 0 <= self.index < self.shards:
            raise ValueError(f"index must be in [0, {self.shards}), not {self.index}")

    def keeps(self, key: ResourceKey) -> bool:
        """Whether this process reconciles ``key``."""
        return self.shards == 1 or shard_of(key, self.shards) == self.index

    def claims(self, key: ResourceKey) -> bool:
        """Whether ``key`` is this process's to take: here, the keys it keeps (with a hash
        ring, ``ownership.Ownership.claims``, also those whose lease is not held yet)."""
        return self.keeps(key)

    def wrap(self, enqueue: Callable[[ResourceKey], None]) -> Callable[[ResourceKey], None]:
        """An ``enqueue`` for the intake that passes on only the keys this process keeps."""

        def enqueue_kept(key: ResourceKey) -> None:
            if self.keeps(key):
                enqueue(key)

        return enqueue_kept
