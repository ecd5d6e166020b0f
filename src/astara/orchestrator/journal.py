"""The journal: what happened to each router lately, in memory, for the admin API.

Per router it keeps a bounded history (``HISTORY`` entries, oldest dropped
first) of ``Entry``: an *event* (a notification concerning the router), a
*transition* (one reconcile step: from, to, action, reason, duration), a
*failure* (a reconcile step that raised), *held* (a reconcile skipped because
the router is in debug mode), *rebuild* (a forced rebuild, asked and done).
Besides the history:

- ``last_event``: the latest event's (type, at);
- ``converge_ms``: how long the latest convergence took, from the first
  event or enqueue after the router was last ACTIVE (or first seen) to the
  reconcile step that reached ACTIVE again; None until one did (a step
  from ACTIVE to ACTIVE that did NOTHING ends no convergence and keeps it);
- ``tenant_id``: the router's project, learnt when the reconciler reads it;
- ``state``: the state the latest transition went to (a failure keeps the
  state it was tried from).

Pure Python: no I/O, no HTTP; the clock (epoch seconds) is injected. It is
used on the event loop only (no lock). Nothing is persisted: a restart
starts with an empty journal.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["HISTORY", "Entry", "EntryKind", "Journal", "RouterJournal"]

HISTORY = 100
"""Entries kept per router."""

EntryKind = Literal["event", "transition", "held", "rebuild", "failure"]

ACTIVE = "ACTIVE"
"""The lifecycle state that ends a convergence (``State.ACTIVE``'s value)."""
NOTHING = "NOTHING"
"""The action of a step that changed nothing (``Action.NOTHING``'s value)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a router's history; fields that do not apply to its kind are None."""

    at: float
    kind: EntryKind
    event: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    action: str | None = None
    reason: str | None = None
    ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape: ``at``, ``kind``, ``event``, ``from``, ``to``, ``action``, ``reason``, ``ms``."""
        return {
            "at": self.at,
            "kind": self.kind,
            "event": self.event,
            "from": self.from_state,
            "to": self.to_state,
            "action": self.action,
            "reason": self.reason,
            "ms": self.ms,
        }


@dataclass(slots=True)
class RouterJournal:
    """One router's journal; read it, write through ``Journal``."""

    router_id: str
    size: int = HISTORY
    history: deque[Entry] = field(init=False)
    tenant_id: str | None = None
    state: str | None = None
    last_event: tuple[str, float] | None = None
    converge_ms: float | None = None
    #: when the current convergence began (the first event or enqueue since ACTIVE); None: converged
    pending_since: float | None = None

    def __post_init__(self) -> None:
        self.history = deque(maxlen=self.size)


class Journal:
    """Every router's journal; see the module. ``on_entry`` sees each entry as it is added."""

    def __init__(
        self,
        *,
        size: int = HISTORY,
        clock: Callable[[], float] = time.time,
        on_entry: Callable[[str, Entry], None] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size}")
        self._size = size
        self._clock = clock
        self._routers: dict[str, RouterJournal] = {}
        self._listeners: list[Callable[[str, Entry], None]] = []
        if on_entry is not None:
            self._listeners.append(on_entry)

    # -- reading ----------------------------------------------------------------------------
    def get(self, router_id: str) -> RouterJournal | None:
        """``router_id``'s journal, None if it was never mentioned."""
        return self._routers.get(router_id)

    def routers(self) -> list[str]:
        """The ids of every router mentioned so far, sorted."""
        return sorted(self._routers)

    def states(self) -> dict[str, int]:
        """How many routers are in each state (routers with no transition yet are left out)."""
        counts: dict[str, int] = {}
        for journal in self._routers.values():
            if journal.state is not None:
                counts[journal.state] = counts.get(journal.state, 0) + 1
        return counts

    def listen(self, listener: Callable[[str, Entry], None]) -> None:
        """Call ``listener(router_id, entry)`` for every entry added from now on."""
        self._listeners.append(listener)

    # -- writing ----------------------------------------------------------------------------
    def enqueued(self, router_id: str) -> None:
        """A reconcile was asked for (no entry): a convergence starts if none is under way."""
        self._start(self._router(router_id), self._clock())

    def event(self, router_id: str, event_type: str) -> Entry:
        """A notification concerning the router: an entry, ``last_event``, maybe a convergence start."""
        journal = self._router(router_id)
        entry = Entry(at=self._clock(), kind="event", event=event_type)
        journal.last_event = (event_type, entry.at)
        self._start(journal, entry.at)
        return self._add(journal, entry)

    def transition(
        self,
        router_id: str,
        *,
        from_state: str,
        to_state: str,
        action: str,
        reason: str,
        ms: float,
    ) -> Entry:
        """One reconcile step that did not raise; reaching ACTIVE ends the convergence."""
        journal = self._router(router_id)
        entry = Entry(
            at=self._clock(),
            kind="transition",
            from_state=from_state,
            to_state=to_state,
            action=action,
            reason=reason,
            ms=ms,
        )
        if to_state == ACTIVE:
            started = journal.pending_since
            # ACTIVE and nothing to do: the event changed nothing (the echo of the router's own
            # status update, say); that is no convergence, and keeps the last one's time
            idle = from_state == ACTIVE and action == NOTHING
            if started is not None and not idle:
                journal.converge_ms = max(0.0, (entry.at - started) * 1000.0)
            journal.pending_since = None
        elif journal.pending_since is None:
            # left ACTIVE (or first seen) without an event: the convergence starts now
            journal.pending_since = entry.at
        journal.state = to_state
        return self._add(journal, entry)

    def failure(
        self,
        router_id: str,
        *,
        from_state: str,
        reason: str,
        ms: float,
        action: str | None = None,
    ) -> Entry:
        """One reconcile step that raised: the router stays in ``from_state``."""
        journal = self._router(router_id)
        entry = Entry(
            at=self._clock(),
            kind="failure",
            from_state=from_state,
            to_state=from_state,
            action=action,
            reason=reason,
            ms=ms,
        )
        self._start(journal, entry.at)
        journal.state = from_state
        return self._add(journal, entry)

    def held(self, router_id: str, reason: str) -> Entry:
        """A reconcile skipped: the router is in debug mode for ``reason``."""
        journal = self._router(router_id)
        return self._add(journal, Entry(at=self._clock(), kind="held", reason=reason))

    def rebuild(self, router_id: str, reason: str) -> Entry:
        """A forced rebuild was asked for, or done (``reason`` says which)."""
        journal = self._router(router_id)
        entry = Entry(at=self._clock(), kind="rebuild", reason=reason)
        self._start(journal, entry.at)
        return self._add(journal, entry)

    def tenant(self, router_id: str, tenant_id: str | None) -> None:
        """The router's project, as the network API says."""
        if tenant_id:
            self._router(router_id).tenant_id = tenant_id

    def forget(self, router_ids: Iterable[str]) -> None:
        """Drop the journals of ``router_ids`` (unknown ids are ignored)."""
        for router_id in router_ids:
            self._routers.pop(router_id, None)

    # -- inside -----------------------------------------------------------------------------
    def _router(self, router_id: str) -> RouterJournal:
        journal = self._routers.get(router_id)
        if journal is None:
            journal = self._routers[router_id] = RouterJournal(router_id, size=self._size)
        return journal

    @staticmethod
    def _start(journal: RouterJournal, at: float) -> None:
        if journal.pending_since is None:
            journal.pending_since = at

    def _add(self, journal: RouterJournal, entry: Entry) -> Entry:
        journal.history.append(entry)
        for listener in self._listeners:
            listener(journal.router_id, entry)
        return entry
