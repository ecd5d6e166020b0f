"""The lifecycle table: every row, the properties it promises, and its drawing."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from astara.domain.backoff import Backoff, FailureRecord
from astara.domain.lifecycle import (
    TRANSITIONS,
    Action,
    Condition,
    Decision,
    Observation,
    State,
    Transition,
    api_status,
    classify,
    decide,
    state_after_failure,
)

BOOT_TIMEOUT = 120.0
NOW = 1_000.0
WANTED = frozenset({"port-ext", "port-a"})
DOC = Path(__file__).parents[2] / "ARCHITECTURE.md"

CONVERGED = Observation(
    now=NOW,
    wanted_interfaces=WANTED,
    plugged_interfaces=WANTED,
    config_wanted=3,
    config_applied=3,
    instance_present=True,
    booted_at=NOW - 10 * BOOT_TIMEOUT,
    agent_answering=True,
    healthy=True,
)
SILENT = replace(CONVERGED, agent_answering=False, healthy=False)
MISSING = replace(SILENT, instance_present=False, booted_at=None)

EXAMPLES: dict[Condition, Observation] = {
    Condition.DELETED_RUNNING: replace(CONVERGED, deleted=True),
    Condition.DELETED_STOPPED: replace(MISSING, deleted=True),
    Condition.INSTANCE_MISSING: MISSING,
    Condition.AGENT_SILENT: replace(SILENT, booted_at=NOW - BOOT_TIMEOUT / 2),
    Condition.AGENT_LOST: SILENT,
    Condition.REBUILD_HELD: replace(SILENT, rebuild_allowed=False),
    Condition.UNHEALTHY: replace(CONVERGED, healthy=False),
    Condition.INTERFACES_DIFFER: replace(CONVERGED, plugged_interfaces=frozenset({"port-ext"})),
    Condition.CONFIG_STALE: replace(CONVERGED, config_applied=2),
    Condition.CONVERGED: CONVERGED,
}
"""One observation showing each condition, and nothing earlier in the order."""

LIVE = [s for s in State if s not in (State.STOPPING, State.GONE)]


def test_every_condition_has_an_example_that_classifies_as_it() -> None:
    assert set(EXAMPLES) == set(Condition)
    for condition, observation in EXAMPLES.items():
        assert classify(observation, boot_timeout=BOOT_TIMEOUT) is condition


def test_the_table_is_total() -> None:
    assert set(TRANSITIONS) == {(s, c) for s in State for c in Condition}


@pytest.mark.parametrize(("key", "row"), sorted(TRANSITIONS.items()), ids=str)
def test_every_row_is_what_decide_returns(key: tuple[State, Condition], row: Transition) -> None:
    state, condition = key
    decision = decide(state, EXAMPLES[condition], boot_timeout=BOOT_TIMEOUT)
    assert (decision.next_state, decision.action, decision.failure) == (
        row.next_state,
        row.action,
        row.failure,
    )
    assert str(state) in decision.reason
    assert str(condition) in decision.reason


@pytest.mark.parametrize("state", list(State))
def test_deletion_from_every_state_leads_to_stopping_then_gone(state: State) -> None:
    running = EXAMPLES[Condition.DELETED_RUNNING]
    stopped = EXAMPLES[Condition.DELETED_STOPPED]
    first = decide(state, running, boot_timeout=BOOT_TIMEOUT)
    if state is State.GONE:
        again = decide(state, stopped, boot_timeout=BOOT_TIMEOUT)
        assert (first.next_state, first.action) == (State.GONE, Action.NOTHING)
        assert (again.next_state, again.action) == (State.GONE, Action.NOTHING)
        return
    assert (first.next_state, first.action) == (State.STOPPING, Action.STOP)
    # Even with no instance, a live state stops once to clean up its ports.
    second = decide(state, stopped, boot_timeout=BOOT_TIMEOUT)
    expected = State.GONE if state is State.STOPPING else State.STOPPING
    assert second.next_state is expected
    last = decide(second.next_state, stopped, boot_timeout=BOOT_TIMEOUT)
    assert (last.next_state, last.action) == (State.GONE, Action.NOTHING)


@pytest.mark.parametrize("condition", list(Condition))
def test_gone_is_terminal_and_stopping_never_goes_back(condition: Condition) -> None:
    gone = decide(State.GONE, EXAMPLES[condition], boot_timeout=BOOT_TIMEOUT)
    assert (gone.next_state, gone.action) == (State.GONE, Action.NOTHING)
    stopping = decide(State.STOPPING, EXAMPLES[condition], boot_timeout=BOOT_TIMEOUT)
    assert stopping.next_state in (State.STOPPING, State.GONE)


def test_boot_timeout_is_enforced_at_its_boundary() -> None:
    booted = replace(SILENT, booted_at=NOW - BOOT_TIMEOUT)
    on_time = decide(State.BOOTING, booted, boot_timeout=BOOT_TIMEOUT)
    assert (on_time.next_state, on_time.action) == (State.BOOTING, Action.WAIT)
    late = decide(State.BOOTING, replace(booted, now=NOW + 0.001), boot_timeout=BOOT_TIMEOUT)
    assert (late.next_state, late.action, late.failure) == (
        State.REBUILDING,
        Action.REBUILD,
        True,
    )
    held = replace(booted, now=NOW + 0.001, rebuild_allowed=False)
    waiting = decide(State.BOOTING, held, boot_timeout=BOOT_TIMEOUT)
    assert (waiting.next_state, waiting.action) == (State.BOOTING, Action.WAIT)


@pytest.mark.parametrize("state", [s for s in LIVE if s is not State.REBUILDING])
def test_interfaces_that_differ_replug_a_healthy_appliance_and_never_rebuild_it(
    state: State,
) -> None:
    differ = EXAMPLES[Condition.INTERFACES_DIFFER]
    decision = decide(state, differ, boot_timeout=BOOT_TIMEOUT)
    assert decision.action is Action.REPLUG
    assert not decision.failure
    unhealthy = decide(state, replace(differ, healthy=False), boot_timeout=BOOT_TIMEOUT)
    assert unhealthy.action is Action.REBUILD


@pytest.mark.parametrize("state", LIVE)
def test_the_breaker_holds_every_rebuild(state: State) -> None:
    for condition in Condition:
        observation = replace(EXAMPLES[condition], rebuild_allowed=False)
        if condition is Condition.REBUILD_HELD:
            continue
        decision = decide(state, observation, boot_timeout=BOOT_TIMEOUT)
        assert decision.action is not Action.REBUILD, (state, condition)


def test_observation_invariants_are_checked() -> None:
    with pytest.raises(ValueError, match="booted_at"):
        Observation(now=NOW, instance_present=True)
    with pytest.raises(ValueError, match="present instance"):
        Observation(now=NOW, agent_answering=True)
    with pytest.raises(ValueError, match="answering"):
        Observation(now=NOW, instance_present=True, booted_at=NOW, healthy=True)


def test_api_status_per_state() -> None:
    assert {s: api_status(s) for s in State} == {
        State.ABSENT: "BUILD",
        State.BOOTING: "BUILD",
        State.CONFIGURING: "BUILD",
        State.ACTIVE: "ACTIVE",
        State.REPLUGGING: "BUILD",
        State.REBUILDING: "BUILD",
        State.STOPPING: "DOWN",
        State.GONE: "DOWN",
        State.ERROR: "ERROR",
    }


@pytest.mark.parametrize("state", list(State))
def test_state_after_failure(state: State) -> None:
    assert state_after_failure(state, in_error=False) is state
    expected = state if state in (State.STOPPING, State.GONE) else State.ERROR
    assert state_after_failure(state, in_error=True) is expected


# A tiny world driven by the table, to check what the rows add up to.


@dataclass
class World:
    """What the provider and the agent would report; actions change it."""

    now: float = 0.0
    instance: bool = False
    booted_at: float | None = None
    agent_comes_up: bool = True
    agent_delay: float = 0.0
    plugged: frozenset[str] = frozenset()
    applied: int | None = None

    def observe(self) -> Observation:
        up = self.booted_at is not None and self.now - self.booted_at >= self.agent_delay
        answering = self.instance and self.agent_comes_up and up
        return Observation(
            now=self.now,
            wanted_interfaces=WANTED,
            plugged_interfaces=self.plugged,
            config_wanted=3,
            config_applied=self.applied,
            instance_present=self.instance,
            booted_at=self.booted_at,
            agent_answering=answering,
            healthy=answering,
        )

    def perform(self, action: Action) -> None:
        if action is Action.BOOT:
            self.instance, self.booted_at, self.plugged = True, self.now, WANTED
        elif action in (Action.REBUILD, Action.STOP):
            self.instance, self.booted_at, self.plugged, self.applied = False, None, WANTED, None
        elif action is Action.CONFIGURE:
            self.applied = 3
        elif action is Action.REPLUG:
            self.plugged = WANTED


def reconcile(
    world: World, state: State, record: FailureRecord, backoff: Backoff
) -> tuple[State, FailureRecord, Decision]:
    """One reconcile as the orchestrator will run it, with the clock advanced by hand."""
    decision = decide(state, world.observe(), boot_timeout=BOOT_TIMEOUT)
    world.perform(decision.action)
    state = decision.next_state
    if decision.failure:
        record = record.failed(decision.reason)
        state = state_after_failure(state, in_error=record.in_error)
    elif state is State.ACTIVE:
        record = record.succeeded()
    delay = record.retry_delay(backoff)
    world.now += 30.0 if delay is None else delay
    return state, record, decision


def test_a_new_router_converges_boot_wait_configure_active() -> None:
    world, state, record = World(agent_delay=45.0), State.ABSENT, FailureRecord()
    backoff = Backoff(base=1.0, cap=60.0, rng=random.Random(1))
    actions = []
    for _ in range(10):
        state, record, decision = reconcile(world, state, record, backoff)
        actions.append(decision.action)
        if state is State.ACTIVE and decision.action is Action.NOTHING:
            break
    assert actions == [Action.BOOT, Action.WAIT, Action.CONFIGURE, Action.NOTHING]
    assert record.failures == 0


def test_a_router_that_never_boots_ends_in_error_and_keeps_retrying() -> None:
    world, state, record = World(agent_comes_up=False), State.ABSENT, FailureRecord(max_failures=3)
    backoff = Backoff(base=200.0, cap=400.0, rng=random.Random(2))
    seen_error = False
    for _ in range(30):
        state, record, _ = reconcile(world, state, record, backoff)
        if state is State.ERROR:
            seen_error = True
            assert record.retry_delay(backoff) is not None
            assert "boot timeout" in record.reason
    assert seen_error
    assert record.failures >= 3
    assert api_status(state) == "ERROR"
    # The appliance comes up after all: ERROR converges to ACTIVE and clears.
    world.agent_comes_up = True
    for _ in range(10):
        state, record, _ = reconcile(world, state, record, backoff)
    assert state is State.ACTIVE
    assert record.failures == 0


# The drawing in ARCHITECTURE.md must be the table.


def _between(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:begin -->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert match, f"ARCHITECTURE.md lost its {name} markers"
    return match.group(1)


def test_the_documented_matrix_is_exactly_the_table() -> None:
    lines = _between(DOC.read_text(), "transitions").strip().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    conditions = [Condition[name] for name in header[1:]]
    drawn: dict[tuple[State, Condition], Transition] = {}
    for line in lines[2:]:
        name, *cells = (cell.strip() for cell in line.strip("|").split("|"))
        for condition, cell in zip(conditions, cells, strict=True):
            match = re.fullmatch(r"(\w+) / (\w+)( !)?", cell)
            assert match, cell
            drawn[State(name), condition] = Transition(
                State(match[1]), Action(match[2]), bool(match[3])
            )
    assert drawn == dict(TRANSITIONS)


def test_the_documented_diagram_is_exactly_the_state_changes() -> None:
    edge = re.compile(r"\s*(\w+) --> (\w+) : (\w+) \((.*)\)")
    drawn = set()
    for line in _between(DOC.read_text(), "diagram").splitlines():
        if "-->" not in line or line.strip() in ("[*] --> ABSENT", "GONE --> [*]"):
            continue
        match = edge.fullmatch(line)
        assert match, f"not an edge of the table: {line!r}"
        if match:
            for name in match[4].split(", "):
                if match[2] == "ERROR" and match[3] == "failure":
                    drawn.add((State(match[1]), "max_failures", State.ERROR, "failure"))
                else:
                    drawn.add((State(match[1]), Condition[name], State(match[2]), match[3]))
    expected: set[tuple[State, object, State, str]] = {
        (s, c, row.next_state, str(row.action))
        for (s, c), row in TRANSITIONS.items()
        if row.next_state is not s
    }
    expected |= {
        (s, "max_failures", State.ERROR, "failure")
        for s in State
        if s is not State.ERROR and state_after_failure(s, in_error=True) is State.ERROR
    }
    assert drawn == expected
