"""The journal: bounded per-router history, last event, convergence time and tenant, on a fake clock."""

from __future__ import annotations

import logging

import pytest

from astara.orchestrator.journal import HISTORY, Entry, Journal
from astara.orchestrator.logcontext import NO_RESOURCE, ResourceFilter, about
from astara.orchestrator.reconcile import RouterReconciler
from astara.providers.base import ProviderTemporaryError
from astara.providers.fake import FakeProvider
from tests.unit.test_reconcile import KEY, MANAGEMENT, FakeAppliance, FakeReader, FakeSegments

R1 = "router-1"
R2 = "router-2"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _step(journal: Journal, router: str, frm: str, to: str, action: str = "BOOT") -> Entry:
    return journal.transition(
        router, from_state=frm, to_state=to, action=action, reason="because", ms=1.5
    )


def test_entries_are_kept_in_order_with_their_fields() -> None:
    clock = Clock()
    journal = Journal(clock=clock)
    journal.event(R1, "router.create.end")
    clock.now += 1
    _step(journal, R1, "ABSENT", "BOOTING")
    clock.now += 1
    journal.failure(R1, from_state="BOOTING", reason="boom", ms=2.0, action="CONFIGURE")
    journal.held(R1, "debug mode")
    journal.rebuild(R1, "forced rebuild asked")

    history = [e.as_dict() for e in journal.get(R1).history]  # type: ignore[union-attr]
    assert [e["kind"] for e in history] == ["event", "transition", "failure", "held", "rebuild"]
    assert history[0] == {
        "at": 1000.0,
        "kind": "event",
        "event": "router.create.end",
        "from": None,
        "to": None,
        "action": None,
        "reason": None,
        "ms": None,
    }
    assert history[1] == {
        "at": 1001.0,
        "kind": "transition",
        "event": None,
        "from": "ABSENT",
        "to": "BOOTING",
        "action": "BOOT",
        "reason": "because",
        "ms": 1.5,
    }
    assert history[2]["from"] == history[2]["to"] == "BOOTING"
    assert history[2]["reason"] == "boom"
    assert history[2]["action"] == "CONFIGURE"
    assert journal.get(R1).state == "BOOTING"  # type: ignore[union-attr]
    assert journal.get(R2) is None
    assert journal.routers() == [R1]


def test_history_is_bounded_and_drops_the_oldest() -> None:
    journal = Journal(size=3)
    for n in range(5):
        journal.event(R1, f"e{n}")
    assert [e.event for e in journal.get(R1).history] == ["e2", "e3", "e4"]  # type: ignore[union-attr]
    big = Journal()
    for n in range(HISTORY + 20):
        big.event(R1, f"e{n}")
    history = big.get(R1).history  # type: ignore[union-attr]
    assert len(history) == HISTORY == 100
    assert history[0].event == "e20"


def test_last_event_is_the_latest() -> None:
    clock = Clock()
    journal = Journal(clock=clock)
    journal.event(R1, "router.create.end")
    clock.now = 1005.0
    journal.event(R1, "port.update.end")
    assert journal.get(R1).last_event == ("port.update.end", 1005.0)  # type: ignore[union-attr]


def test_converge_ms_runs_from_the_first_event_to_active() -> None:
    clock = Clock()
    journal = Journal(clock=clock)
    journal.event(R1, "router.create.end")  # t=1000: the convergence starts
    assert journal.get(R1).converge_ms is None  # type: ignore[union-attr]
    clock.now = 1000.5
    journal.event(R1, "router.update.end")  # a second event does not restart it
    clock.now = 1001.0
    _step(journal, R1, "ABSENT", "BOOTING")
    assert journal.get(R1).converge_ms is None  # type: ignore[union-attr]
    clock.now = 1002.25
    _step(journal, R1, "BOOTING", "ACTIVE", "CONFIGURE")
    assert journal.get(R1).converge_ms == pytest.approx(2250.0)  # type: ignore[union-attr]

    # a look while ACTIVE with nothing asked does not change it
    clock.now = 1010.0
    _step(journal, R1, "ACTIVE", "ACTIVE", "NOTHING")
    assert journal.get(R1).converge_ms == pytest.approx(2250.0)  # type: ignore[union-attr]
    # nor does an event that needed nothing done (the echo of the router's status update)
    journal.event(R1, "router.update.end")
    clock.now = 1010.01
    _step(journal, R1, "ACTIVE", "ACTIVE", "NOTHING")
    assert journal.get(R1).converge_ms == pytest.approx(2250.0)  # type: ignore[union-attr]
    assert journal.get(R1).pending_since is None  # type: ignore[union-attr]

    # the next convergence starts at the next enqueue (no entry for it)
    clock.now = 1020.0
    journal.enqueued(R1)
    clock.now = 1020.1
    journal.enqueued(R1)
    assert len(journal.get(R1).history) == 7  # type: ignore[union-attr]  # 3 events, 4 steps
    clock.now = 1020.5
    _step(journal, R1, "ACTIVE", "REPLUGGING", "REPLUG")
    clock.now = 1021.0
    _step(journal, R1, "REPLUGGING", "ACTIVE", "NOTHING")
    assert journal.get(R1).converge_ms == pytest.approx(1000.0)  # type: ignore[union-attr]


def test_a_router_leaving_active_on_its_own_starts_a_convergence() -> None:
    clock = Clock()
    journal = Journal(clock=clock)
    _step(journal, R1, "ABSENT", "ACTIVE", "NOTHING")  # first seen already converged
    assert journal.get(R1).converge_ms is None  # type: ignore[union-attr]
    clock.now = 1003.0
    _step(journal, R1, "ACTIVE", "REBUILDING", "REBUILD")
    clock.now = 1004.0
    journal.failure(R1, from_state="REBUILDING", reason="x", ms=1.0)
    clock.now = 1007.0
    _step(journal, R1, "REBUILDING", "ACTIVE", "CONFIGURE")
    assert journal.get(R1).converge_ms == pytest.approx(4000.0)  # type: ignore[union-attr]


def test_tenant_and_states_and_listeners() -> None:
    seen: list[tuple[str, str]] = []
    journal = Journal(on_entry=lambda router, entry: seen.append((router, entry.kind)))
    journal.tenant(R1, "project-a")
    journal.tenant(R1, None)  # unknown does not erase what was learnt
    assert journal.get(R1).tenant_id == "project-a"  # type: ignore[union-attr]
    _step(journal, R1, "ABSENT", "ACTIVE")
    _step(journal, R2, "ABSENT", "BOOTING")
    journal.event(R2, "router.update.end")
    journal.tenant("router-3", "project-b")  # no transition yet: not counted
    assert journal.states() == {"ACTIVE": 1, "BOOTING": 1}
    assert seen == [(R1, "transition"), (R2, "transition"), (R2, "event")]
    journal.forget([R2, "nope"])
    assert journal.routers() == [R1, "router-3"]


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="size"):
        Journal(size=0)


def test_the_log_filter_adds_the_current_resource() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(ResourceFilter())
    handler.setFormatter(logging.Formatter("[%(resource)s] %(message)s"))
    logger = logging.getLogger("astara.test.journal")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("outside")
        with about(R1):
            logger.info("inside")
        logger.info("after")
    finally:
        logger.removeHandler(handler)
    assert [handler.format(r) for r in records] == [
        f"[{NO_RESOURCE}] outside",
        f"[{R1}] inside",
        f"[{NO_RESOURCE}] after",
    ]


async def test_the_reconciler_journals_each_step_and_the_tenant() -> None:
    journal = Journal()
    reader = FakeReader()
    appliance = FakeAppliance(answering=True)
    provider = FakeProvider()

    async def sink(router_id: str, status: str, reason: str) -> None:
        return None

    reconciler = RouterReconciler(
        reader=reader,
        provider=provider,
        appliance=appliance,
        status_sink=sink,
        management=lambda _router_id: MANAGEMENT,
        segments=FakeSegments(),
        requeue=lambda key, delay: None,
        journal=journal,
    )
    await reconciler.step(KEY)  # ABSENT: BOOT
    provider.fail("get", ProviderTemporaryError("agent down"))
    await reconciler.step(KEY)  # the read fails
    await reconciler.step(KEY)  # CONFIGURE, confirmed by the appliance: ACTIVE
    await reconciler.step(KEY)  # converged: nothing to do

    record = journal.get(KEY.id)
    assert record is not None
    assert record.tenant_id == "p1"  # FakeReader's router's project
    steps = [(e.kind, e.from_state, e.to_state, e.action) for e in record.history]
    assert steps == [
        ("transition", "ABSENT", "BOOTING", "BOOT"),
        ("failure", "BOOTING", "BOOTING", None),
        ("transition", "BOOTING", "ACTIVE", "CONFIGURE"),
        ("transition", "ACTIVE", "ACTIVE", "NOTHING"),
    ]
    failure = record.history[1]
    assert failure.reason == "ProviderTemporaryError: agent down"
    assert all(e.ms is not None and e.ms >= 0 for e in record.history)
    assert record.converge_ms is not None  # first seen, then ACTIVE
    assert record.state == "ACTIVE"
