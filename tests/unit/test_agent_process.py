"""``astara up``'s agent record: adopt the very process it names, replace one of other code,
end what it started if it never served (decision 0016).

A stand-in process plays the agent (it makes the control socket and sleeps); the
real agent kept across a restart of ``astara up`` is tested in
tests/netns/test_up_lifecycle.py::test_restart_adopts_without_loss.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from astara.cli import up

STAND_IN = (
    "import socket, sys, time\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.bind(sys.argv[1])\n"
    "time.sleep(120)\n"
)


class StandIn(up.AgentProcess):
    def _argv(self) -> list[str]:
        return [sys.executable, "-c", STAND_IN, str(self.layout.control)]


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[up.Layout]:
    made = up.Layout(tmp_path / "state")
    made.root.mkdir()
    yield made
    record = made.agent_pid
    if record.exists():  # whatever a test left running: end it by its pid and start time
        data = json.loads(record.read_text())
        up._end_adopted(data["pid"], data["start"], timeout=5)


def test_start_time_names_one_process() -> None:
    assert up._start_time(os.getpid()) is not None
    assert up._start_time(2**22 + 7) is None  # beyond pid_max: no such process
    child = subprocess.Popen(["true"])
    child.wait()
    assert up._start_time(child.pid) is None  # ended and reaped


def test_a_started_agent_is_recorded_then_adopted_by_the_next_up(layout: up.Layout) -> None:
    first = StandIn(layout)
    first.start()
    assert not first.adopted
    record = json.loads(layout.agent_pid.read_text())
    assert record["pid"] == first.pid and record["start"] == up._start_time(first.pid)
    second = StandIn(layout)
    second.start()
    assert second.adopted and second.pid == first.pid and second.alive()
    second.stop()
    assert not first.alive() and not layout.agent_pid.exists()


def test_a_record_whose_pid_was_reused_is_not_adopted(layout: up.Layout) -> None:
    # our own pid with another start time: the pid of a process long gone, now reused
    start = up._start_time(os.getpid())
    assert start is not None
    mine = {"pid": os.getpid(), "start": start + 1, "code": up._code_stamp()}
    layout.agent_pid.write_text(json.dumps(mine))
    layout.control.touch()
    agent = StandIn(layout)
    agent.start()
    assert not agent.adopted and agent.pid != os.getpid() and agent.alive()
    agent.stop()


def test_an_agent_of_other_code_is_ended_and_replaced(layout: up.Layout) -> None:
    old = StandIn(layout)
    old.start()
    record = json.loads(layout.agent_pid.read_text())
    layout.agent_pid.write_text(json.dumps({**record, "code": "another-install"}))
    new = StandIn(layout)
    new.start()
    assert not new.adopted and new.pid != old.pid
    assert up._start_time(record["pid"]) is None  # ended (and reaped by its parent, us)
    new.stop()


def test_up_ends_the_agent_it_started_when_it_fails_before_serving(
    layout: up.Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(up, "AgentProcess", StandIn)
    with pytest.raises(RuntimeError), up._agent(layout, keep=True) as agent:
        pid = agent.pid
        raise RuntimeError("the network API port is in use")
    assert pid is not None and up._start_time(pid) is None
    assert not layout.agent_pid.exists()


def test_up_leaves_the_agent_it_served_with_running(
    layout: up.Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(up, "AgentProcess", StandIn)
    with up._agent(layout, keep=True) as agent:
        agent.served = True
    assert isinstance(agent, StandIn) and agent.alive()
    agent.stop()


def test_down_ends_the_agent_up_left(layout: up.Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    left = StandIn(layout)
    left.start()
    monkeypatch.setattr(up, "AgentProcess", StandIn)
    with up._agent(layout, keep=False) as agent:
        assert agent.adopted and agent.pid == left.pid
    assert not left.alive() and not layout.agent_pid.exists()
