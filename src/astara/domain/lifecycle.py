"""Lifecycle: the per-resource state machine, as one transition table.

What it owns: the ``State`` of one appliance-backed resource, the
``Condition`` an ``Observation`` is classified into, the ``Action`` the
reconciler takes, the single table ``TRANSITIONS`` that maps a
(state, condition) pair to the next state and action, and the router status
each state publishes. Pure: no I/O, no clock (``now`` is in the
observation), standard library only. The reconciler (orchestrator) calls
``decide`` once per reconcile, performs the one action it returns, and
yields; it never loops here.

The states come from the original Astara machine (seeds 000/001: CALC_ACTION,
ALIVE, CREATE_VM, CHECK_BOOT, CONFIG, REPLUG, STOP_VM, EXIT and the instance
states DOWN, BOOTING, UP, CONFIGURED, RESTART, REPLUG, GONE, ERROR), folded
into what a level-based reconciler needs to remember between reconciles:

    ABSENT       nothing known yet: a new resource, or any resource after a
                 restart; the first observation adopts what already runs
                 (the seeds' CALC_ACTION / DOWN)
    BOOTING      an instance was created; waiting for its agent, bounded by
                 the boot timeout (CREATE_VM, CHECK_BOOT / BOOTING)
    CONFIGURING  the agent answers; pushing the configuration (CONFIG / UP)
    ACTIVE       configured, healthy, interfaces as wanted (CONFIGURED)
    REPLUGGING   interfaces added or removed: hot-plugging them, no rebuild
                 (REPLUG)
    REBUILDING   the appliance is gone, unhealthy or never came up: removing
                 the instance so a new one boots (RESTART)
    STOPPING     the resource was deleted: removing the instance and its
                 ports (STOP_VM)
    GONE         stopped and cleaned up; terminal (EXIT / GONE)
    ERROR        too many consecutive failures; still converging on the
                 backoff, left only by converging (ACTIVE) or deletion

An observation is classified into exactly one ``Condition``, checked in the
order of the enum (first match wins): deletion first, then the instance,
then the agent, then health, interfaces and configuration.

Invariants:

- ``TRANSITIONS`` is total: every (state, condition) pair has one row, so
  ``decide`` never fails on a well-formed observation.
- Deletion wins from every state: it leads to STOPPING, then GONE; GONE is
  terminal; STOPPING never goes back (Neutron ids are never reused).
- A boot is bounded: an agent silent past ``boot_timeout`` after the
  instance booted is AGENT_LOST, which rebuilds (or waits on the breaker).
- Interfaces that differ on a healthy appliance replug it; they never
  rebuild it.
- Every REBUILD is gated by the circuit breaker: REBUILD appears only in
  AGENT_LOST and UNHEALTHY rows, which ``rebuild_allowed=False`` turns into
  REBUILD_HELD (WAIT).
- Rows marked ``failure`` are observations of a broken appliance; the
  reconciler counts them like a failed action (``state_after_failure``), so
  a resource that never comes up ends in ERROR instead of BUILD forever.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Literal

__all__ = [
    "TRANSITIONS",
    "Action",
    "ApiStatus",
    "Condition",
    "Decision",
    "Observation",
    "State",
    "Transition",
    "api_status",
    "classify",
    "decide",
    "state_after_failure",
]


class State(StrEnum):
    """Where one resource is in its lifecycle (see the module docstring)."""

    ABSENT = "ABSENT"
    BOOTING = "BOOTING"
    CONFIGURING = "CONFIGURING"
    ACTIVE = "ACTIVE"
    REPLUGGING = "REPLUGGING"
    REBUILDING = "REBUILDING"
    STOPPING = "STOPPING"
    GONE = "GONE"
    ERROR = "ERROR"


class Action(StrEnum):
    """The one step the reconciler takes for a decision; each is idempotent."""

    BOOT = "BOOT"
    """Ensure an instance exists with the wanted interfaces."""
    WAIT = "WAIT"
    """Nothing to change now; reconcile again after a delay."""
    CONFIGURE = "CONFIGURE"
    """Push the desired configuration to the agent."""
    REPLUG = "REPLUG"
    """Plug wanted and unplug unwanted interfaces, without a rebuild."""
    REBUILD = "REBUILD"
    """Ensure the current instance is absent, so that a new one boots."""
    STOP = "STOP"
    """Ensure the instance and the ports we own are absent."""
    NOTHING = "NOTHING"
    """Converged (or gone): no step, no requeue."""


class Condition(StrEnum):
    """What an observation shows, checked in this order (first match wins)."""

    DELETED_RUNNING = "deleted, instance present"
    DELETED_STOPPED = "deleted, no instance"
    INSTANCE_MISSING = "no instance"
    AGENT_SILENT = "agent silent within the boot timeout"
    AGENT_LOST = "agent silent past the boot timeout"
    REBUILD_HELD = "rebuild needed, held by the circuit breaker"
    UNHEALTHY = "agent reports unhealthy"
    INTERFACES_DIFFER = "interfaces differ"
    CONFIG_STALE = "configuration stale"
    CONVERGED = "converged"


ApiStatus = Literal["BUILD", "ACTIVE", "ERROR", "DOWN"]


@dataclass(frozen=True, slots=True)
class Observation:
    """Desired state (network API) and observed state (provider, agent) at ``now``.

    Times are seconds on the reconciler's clock. Invariants, checked on
    construction: an instance present has a ``booted_at``; an agent answers
    only from a present instance; only an answering agent is healthy.
    """

    now: float
    deleted: bool = False
    wanted_interfaces: frozenset[str] = field(default_factory=frozenset)
    plugged_interfaces: frozenset[str] = field(default_factory=frozenset)
    config_wanted: int = 0
    config_applied: int | None = None
    instance_present: bool = False
    booted_at: float | None = None
    agent_answering: bool = False
    healthy: bool = False
    rebuild_allowed: bool = True
    """The circuit breaker's verdict (``CircuitBreaker.allow_rebuild``)."""

    def __post_init__(self) -> None:
        if self.instance_present and self.booted_at is None:
            raise ValueError("an instance present needs booted_at")
        if self.agent_answering and not self.instance_present:
            raise ValueError("an agent answers only from a present instance")
        if self.healthy and not self.agent_answering:
            raise ValueError("only an answering agent is healthy")


@dataclass(frozen=True, slots=True)
class Transition:
    """One row's outcome: the next state, the action, and whether it is a failure."""

    next_state: State
    action: Action
    failure: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """What ``decide`` returns: where to go, what to do, and why (for logs and ERROR)."""

    next_state: State
    action: Action
    reason: str
    failure: bool = False


S, A, C = State, Action, Condition

_STOP_ON_DELETE: Final = {
    C.DELETED_RUNNING: Transition(S.STOPPING, A.STOP),
    C.DELETED_STOPPED: Transition(S.STOPPING, A.STOP),
}
"""Deletion from any live state: stop, and clean up even with no instance."""


def _converging(state: State, *, on_missing_fails: bool) -> dict[Condition, Transition]:
    """The rows shared by ABSENT, BOOTING, CONFIGURING, ACTIVE and REPLUGGING."""
    return {
        **_STOP_ON_DELETE,
        C.INSTANCE_MISSING: Transition(S.BOOTING, A.BOOT, on_missing_fails),
        C.AGENT_SILENT: Transition(S.BOOTING, A.WAIT),
        C.AGENT_LOST: Transition(S.REBUILDING, A.REBUILD, True),
        C.REBUILD_HELD: Transition(state, A.WAIT),
        C.UNHEALTHY: Transition(S.REBUILDING, A.REBUILD, True),
        C.INTERFACES_DIFFER: Transition(S.REPLUGGING, A.REPLUG),
        C.CONFIG_STALE: Transition(S.CONFIGURING, A.CONFIGURE),
        C.CONVERGED: Transition(S.ACTIVE, A.NOTHING),
    }


def _rows(
    state: State, outcomes: Mapping[Condition, Transition]
) -> dict[tuple[State, Condition], Transition]:
    return {(state, condition): outcome for condition, outcome in outcomes.items()}


TRANSITIONS: Final[Mapping[tuple[State, Condition], Transition]] = MappingProxyType(
    {
        # An appliance that was up (or was being worked on) and vanished is a
        # failure; one that has not been booted yet is not.
        **_rows(S.ABSENT, _converging(S.ABSENT, on_missing_fails=False)),
        **_rows(S.BOOTING, _converging(S.BOOTING, on_missing_fails=False)),
        **_rows(S.CONFIGURING, _converging(S.CONFIGURING, on_missing_fails=True)),
        **_rows(S.ACTIVE, _converging(S.ACTIVE, on_missing_fails=True)),
        **_rows(S.REPLUGGING, _converging(S.REPLUGGING, on_missing_fails=True)),
        # The old instance goes before a new one boots; the failure that led
        # here was counted once. If the appliance answers healthy again (the
        # removal failed), the reason for the rebuild is gone: adopt it.
        **_rows(
            S.REBUILDING,
            {
                **_STOP_ON_DELETE,
                C.INSTANCE_MISSING: Transition(S.BOOTING, A.BOOT),
                C.AGENT_SILENT: Transition(S.BOOTING, A.WAIT),
                C.AGENT_LOST: Transition(S.REBUILDING, A.REBUILD),
                C.REBUILD_HELD: Transition(S.REBUILDING, A.WAIT),
                C.UNHEALTHY: Transition(S.REBUILDING, A.REBUILD),
                C.INTERFACES_DIFFER: Transition(S.REPLUGGING, A.REPLUG),
                C.CONFIG_STALE: Transition(S.CONFIGURING, A.CONFIGURE),
                C.CONVERGED: Transition(S.ACTIVE, A.NOTHING),
            },
        ),
        # Deletion is final: a later read that shows the resource is stale.
        **_rows(
            S.STOPPING,
            {c: Transition(S.STOPPING, A.STOP) for c in Condition}
            | {C.DELETED_STOPPED: Transition(S.GONE, A.NOTHING)},
        ),
        **_rows(S.GONE, {c: Transition(S.GONE, A.NOTHING) for c in Condition}),
        # ERROR keeps converging, and stays ERROR (with its reason) until it
        # has converged.
        **_rows(
            S.ERROR,
            {
                **_STOP_ON_DELETE,
                C.INSTANCE_MISSING: Transition(S.ERROR, A.BOOT),
                C.AGENT_SILENT: Transition(S.ERROR, A.WAIT),
                C.AGENT_LOST: Transition(S.ERROR, A.REBUILD, True),
                C.REBUILD_HELD: Transition(S.ERROR, A.WAIT),
                C.UNHEALTHY: Transition(S.ERROR, A.REBUILD, True),
                C.INTERFACES_DIFFER: Transition(S.ERROR, A.REPLUG),
                C.CONFIG_STALE: Transition(S.ERROR, A.CONFIGURE),
                C.CONVERGED: Transition(S.ACTIVE, A.NOTHING),
            },
        ),
    }
)

_API_STATUS: Final[Mapping[State, ApiStatus]] = MappingProxyType(
    {
        S.ABSENT: "BUILD",
        S.BOOTING: "BUILD",
        S.CONFIGURING: "BUILD",
        S.ACTIVE: "ACTIVE",
        S.REPLUGGING: "BUILD",
        S.REBUILDING: "BUILD",
        S.STOPPING: "DOWN",
        S.GONE: "DOWN",
        S.ERROR: "ERROR",
    }
)

_NEVER_ERROR: Final = frozenset({S.STOPPING, S.GONE})
"""A deleted resource has no status to show; it keeps stopping on the backoff."""


def classify(observation: Observation, *, boot_timeout: float) -> Condition:
    """The one condition an observation shows (first match in ``Condition`` order)."""
    o = observation
    if o.deleted:
        return C.DELETED_RUNNING if o.instance_present else C.DELETED_STOPPED
    if not o.instance_present or o.booted_at is None:
        return C.INSTANCE_MISSING
    if not o.agent_answering:
        if o.now - o.booted_at <= boot_timeout:
            return C.AGENT_SILENT
        return C.AGENT_LOST if o.rebuild_allowed else C.REBUILD_HELD
    if not o.healthy:
        return C.UNHEALTHY if o.rebuild_allowed else C.REBUILD_HELD
    if o.wanted_interfaces != o.plugged_interfaces:
        return C.INTERFACES_DIFFER
    if o.config_applied != o.config_wanted:
        return C.CONFIG_STALE
    return C.CONVERGED


def decide(state: State, observation: Observation, *, boot_timeout: float) -> Decision:
    """The next state and the one action for ``state`` given ``observation``.

    Pure and total. ``boot_timeout`` is in seconds since ``booted_at``.
    """
    condition = classify(observation, boot_timeout=boot_timeout)
    row = TRANSITIONS[state, condition]
    reason = f"{state}: {condition}; {row.action} -> {row.next_state}"
    return Decision(row.next_state, row.action, reason, row.failure)


def state_after_failure(state: State, *, in_error: bool) -> State:
    """The state to keep after a failed action or a ``failure`` decision.

    ``in_error`` is ``FailureRecord.in_error``. Below the limit the state is
    kept and the step retried on the backoff; at the limit the resource is
    ERROR (and still retried). A deleted resource never shows ERROR.
    """
    if in_error and state not in _NEVER_ERROR:
        return S.ERROR
    return state


def api_status(state: State) -> ApiStatus:
    """The router status the network API shows for ``state``."""
    return _API_STATUS[state]
