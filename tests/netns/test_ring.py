"""Three orchestrators on one tooz ring share the routers; one is SIGKILLed, then comes back.

One host, everything real: one appliance agent (``astara appliance serve
--empty``) shared by three ``astara orchestrator --coordination redis://…
--agent-socket …`` processes, an ``astara network-api`` publishing to
RabbitMQ (one queue, named for this run, the three orchestrators competing
consumers of it), the orchestrators' database on PostgreSQL (leases and
pending rows). Needs Redis on 127.0.0.1:6379, RabbitMQ on 127.0.0.1:5672
and PostgreSQL on 127.0.0.1:5432 (``ASTARA_TEST_PG``); fails when one is
not there.

- 300 routers: each leased by exactly one live member, all ACTIVE.
- A batch of new routers, and at once one orchestrator SIGKILLed: within
  5 s of the survivors noticing (tooz's membership timeout, 3 s), every
  router is leased by a survivor; within ``CONVERGED`` (5 s, the issue's
  target) every one is ACTIVE with its configuration saved by the agent; no namespace was made twice
  (its inode never changes), none leaked, none rebuilt or stopped.
- The killed one started again: the ring rebalances, it leases its share
  again, nothing is rebuilt (inodes unchanged).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from astara.lab import end_process
from astara.orchestrator.coordination import HashRing
from astara.orchestrator.neutron_reader import noauth_admin_headers
from astara.providers.naming import name_candidates
from tests.conftest import run_prefix, scratch_database
from tests.netns.test_orchestrator_alone import RABBIT, _api
from tests.netns.test_up import (
    ASTARA,
    BRIDGE,
    FABRIC_PREFIX,
    NETNS_PREFIX,
    _free_port,
    _links,
    _namespaces,
    _stop,
    _until,
)

pytestmark = pytest.mark.netns

REDIS = "redis://127.0.0.1:6379"
ROUTERS = int(os.environ.get("ASTARA_RING_ROUTERS", "300"))
BATCH = 30
"""Routers created right before the kill: some are booting on the one killed."""
MEMBERSHIP_TIMEOUT = 3.0
TAKEOVER = 5.0
"""Seconds after the survivors noticed the death by which all must be owned and ACTIVE."""
CONVERGED = float(os.environ.get("ASTARA_RING_CONVERGED", "5"))
"""Seconds after detection by which all must also be converged (the issue's target; on this
2-core VM ~2 s on a quiet machine, up to ~16 s when other heavy tests run beside it)."""
NETNS_DIR = Path("/run/netns")
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*members: ", re.MULTILINE)


def _redis_answers() -> None:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2):
            return
    except OSError as exc:
        pytest.fail(f"Redis is needed at {REDIS} (the tooz coordination backend): {exc}")


@dataclass
class Member:
    name: str
    argv: list[str]
    log: Path
    admin: str
    admin_token: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        readies = self.log.read_text().count("ready;") if self.log.exists() else 0
        with self.log.open("ab") as output:
            self.proc = subprocess.Popen(self.argv, stdout=output, stderr=subprocess.STDOUT)
        _until(
            f"{self.name} ready",
            lambda: self.log.read_text().count("ready;") > readies or self.proc.poll() is not None,  # type: ignore[union-attr]
            60,
            self.log,
        )
        assert self.proc.poll() is None, self.log.read_text()[-4000:]

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> int | None:
        """Stop it by its pid (SIGTERM, then SIGKILL); its exit code (None: not running)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        try:
            return _stop(proc)
        except subprocess.TimeoutExpired:
            return -9

    def history(self, router_id: str) -> list[str]:
        """The actions this member's journal holds for the router (oldest first)."""
        token = self.admin_token.read_text().strip()
        got = httpx.get(
            f"{self.admin}/v1/routers/{router_id}", headers={"X-Auth-Token": token}, timeout=10
        )
        if got.status_code == 404:
            return []
        got.raise_for_status()
        return [e.get("action") or "" for e in got.json().get("history", [])]


@dataclass
class RingLab:
    """The processes and names of one run; ``create``, ``leases``, ``active``, ``inodes``."""

    work: Path
    db_url: str
    url: str
    group: str
    members: list[Member] = field(default_factory=list)
    engine: sa.Engine | None = None

    # -- the network API ------------------------------------------------------------------------
    def create(self, count: int, prefix: str) -> list[str]:
        """``count`` routers made through the network API, 8 at once; their ids."""
        local = threading.local()

        def one(n: int) -> str:
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = httpx.Client(
                    base_url=self.url, headers=noauth_admin_headers(), timeout=30
                )
            got = client.post("/v2.0/routers", json={"router": {"name": f"{prefix}{n}"}})
            got.raise_for_status()
            return str(got.json()["router"]["id"])

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(count)))

    def statuses(self) -> dict[str, str]:
        got = httpx.get(
            f"{self.url}/v2.0/routers",
            params=[("fields", "id"), ("fields", "status")],
            headers=noauth_admin_headers(),
            timeout=30,
        )
        got.raise_for_status()
        return {r["id"]: r["status"] for r in got.json()["routers"]}

    def active(self, routers: list[str]) -> bool:
        """Every router ACTIVE in the network API and its appliance configured (the agent
        saved a configuration: these routers have no ports, so the first one is final)."""
        statuses = self.statuses()
        if not all(statuses.get(r) == "ACTIVE" for r in routers):
            return False
        saved = self.work / "appliance"
        return all((saved / self.namespace(r) / "config.json").exists() for r in routers)

    # -- the leases ------------------------------------------------------------------------------
    def leases(self) -> dict[str, tuple[str | None, int, bool]]:
        """router -> (owner, epoch, live) from the shared database's clock."""
        if self.engine is None:
            self.engine = sa.create_engine(self.db_url)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT router_id, owner, epoch,"
                    " expires_at > extract(epoch from clock_timestamp()) AS live"
                    " FROM astara_leases"
                )
            ).all()
        return {r.router_id: (r.owner, r.epoch, bool(r.live)) for r in rows}

    def owned_by(self, routers: list[str], members: set[str]) -> bool:
        """Every router has a live lease held by one of ``members``."""
        leases = self.leases()
        return all(
            (lease := leases.get(r)) is not None and lease[2] and lease[0] in members
            for r in routers
        )

    def owners(self) -> Counter[str | None]:
        return Counter(owner for owner, _, live in self.leases().values() if live)

    # -- the appliances --------------------------------------------------------------------------
    @staticmethod
    def namespace(router_id: str) -> str:
        return name_candidates(NETNS_PREFIX, router_id)[0]

    def inodes(self, routers: list[str]) -> dict[str, int]:
        found = {}
        for router_id in routers:
            with contextlib.suppress(FileNotFoundError):
                found[router_id] = (NETNS_DIR / self.namespace(router_id)).stat().st_ino
        return found

    def noticed(self, member: Member, after: float) -> float | None:
        """When (epoch s) ``member`` last logged a change of members after ``after``."""
        times = [
            datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            for t in _LOG_TIME.findall(member.log.read_text())
        ]
        later = [t for t in times if t >= after - 0.01]
        return min(later) if later else None


@contextlib.contextmanager
def ring_lab(count: int = 3) -> Iterator[RingLab]:
    """An agent, a network API and ``count`` orchestrators on one ring, all of this run;
    everything stopped by pid, the appliances removed (``astara down``) after."""
    _redis_answers()
    work = Path(tempfile.mkdtemp(prefix=f"{run_prefix()}-ring-"))
    work.chmod(0o755)
    mgmt = ipaddress.IPv6Network(f"fd00:a57e:{secrets.randbelow(0xFFFF):x}::/64")
    common = ["--fabric-prefix", FABRIC_PREFIX, "--netns-prefix", NETNS_PREFIX]
    common += ["--mgmt-bridge", BRIDGE, "--mgmt-prefix", str(mgmt)]
    token = work / "token"
    token.write_text(secrets.token_urlsafe(32) + "\n")
    token.chmod(0o600)
    sock = work / "agent.sock"
    (work / "appliance").mkdir(mode=0o755)
    agent_argv = [*ASTARA, "appliance", "serve", "--empty", "--control-socket", str(sock)]
    agent_argv += ["--state-dir", str(work / "appliance"), "--token-file", str(token)]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    api_argv = [*ASTARA, "network-api", "--port", str(port), "--bus-url", RABBIT]
    api_argv += ["--db", f"sqlite:///{work / 'network.db'}"]
    group = f"{run_prefix()}-ring"
    queue = f"{run_prefix()}-ring"
    agent: subprocess.Popen[bytes] | None = None
    lab: RingLab | None = None
    try:
        with scratch_database("postgresql", work, "ring") as db_url:
            lab = RingLab(work=work, db_url=db_url, url=url, group=group)
            with (work / "agent.log").open("ab") as output:
                agent = subprocess.Popen(agent_argv, stdout=output, stderr=subprocess.STDOUT)
            _until("the agent's socket", sock.exists, 30, work / "agent.log")
            with _api(api_argv, work / "api.log", url):
                for n in range(count):
                    name = f"{run_prefix()}-m{n}"
                    admin_port = _free_port()
                    argv = [*ASTARA, "orchestrator", *common, "--state-dir", str(work / name)]
                    argv += ["--network-url", url, "--admin-port", str(admin_port)]
                    argv += ["--metadata-port", "0", "--orchestrator-db", db_url]
                    argv += ["--bus-url", f"{RABBIT}?queue={queue}&durable=false"]
                    argv += ["--coordination", REDIS, "--member-id", name]
                    argv += ["--coordination-group", group]
                    argv += ["--membership-timeout", str(MEMBERSHIP_TIMEOUT)]
                    argv += ["--agent-socket", str(sock), "--agent-token-file", str(token)]
                    lab.members.append(
                        Member(
                            name,
                            argv,
                            work / f"{name}.log",
                            f"http://127.0.0.1:{admin_port}",
                            work / name / "admin-token",
                        )
                    )
                try:
                    for member in lab.members:
                        member.start()
                    yield lab
                finally:
                    codes = {}
                    for member in lab.members:
                        codes[member.name] = member.stop()
                    for member in lab.members:
                        assert codes.get(member.name) in (0, None), member.log.read_text()[-4000:]
                        assert "Traceback" not in member.log.read_text(), member.log.read_text()[
                            -4000:
                        ]
            if lab.engine is not None:
                lab.engine.dispose()
    finally:
        if agent is not None:
            end_process(agent, timeout=15)
        down = subprocess.run(
            [*ASTARA, "down", *common, "--state-dir", str(work / "down")],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        _delete_group(group)
        if os.environ.get("ASTARA_RING_KEEP_LOGS"):
            for log in work.glob("*.log"):
                shutil.copy(log, os.environ["ASTARA_RING_KEEP_LOGS"])
        shutil.rmtree(work, ignore_errors=True)
    assert down.returncode == 0, down.stderr
    assert not _namespaces(NETNS_PREFIX)
    assert not _namespaces(FABRIC_PREFIX)
    assert not _links()


def _delete_group(group: str) -> None:
    """The run's tooz group, gone from Redis (its members left or timed out)."""
    import redis

    client = redis.Redis.from_url(REDIS)
    try:
        client.delete(f"_tooz_group:{group}".encode())
        client.srem("_tooz_groups", group.encode())
    finally:
        client.close()


class InodeWatch:
    """Records the first inode of each router's namespace, every 50 ms, in a thread."""

    def __init__(self, lab: RingLab, routers: list[str]) -> None:
        self.lab = lab
        self.routers = routers
        self.first: dict[str, int] = {}
        self.changed: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> InodeWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.is_set():
            for router_id, inode in self.lab.inodes(self.routers).items():
                first = self.first.setdefault(router_id, inode)
                if first != inode:
                    self.changed[router_id] = (first, inode)
            self._stop.wait(0.05)


@dataclass
class Takeover:
    """What one kill measured (seconds)."""

    detection: float
    """From the SIGKILL to the first survivor logging the new members."""
    owned: float
    """From that detection to every router leased by a survivor."""
    takeover: float
    """From that detection to every router owned by a survivor and ACTIVE."""
    orphans: int
    """Routers the killed member held at the kill."""


def kill_one(lab: RingLab, routers: list[str], victim: Member) -> tuple[Takeover, list[str]]:
    """Create ``BATCH`` routers, SIGKILL ``victim`` while they boot; wait for the takeover."""
    survivors = {m.name for m in lab.members if m is not victim}
    batch_box: list[str] = []
    maker = threading.Thread(target=lambda: batch_box.extend(lab.create(BATCH, "batch")))
    maker.start()
    # kill once the victim has some batch router in hand (booting), or after 3 s
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        leases = lab.leases()
        if sum(1 for lease in leases.values() if lease[0] == victim.name) > len(routers) // 3:
            ring = HashRing({m.name for m in lab.members})
            fresh = [r for r in leases if r not in set(routers)]
            if any(ring.owner_of(r) == victim.name for r in fresh):
                break
        time.sleep(0.05)
    orphans = sum(1 for lease in lab.leases().values() if lease[0] == victim.name)
    killed = time.time()
    victim.kill()
    maker.join()
    every = routers + batch_box
    _until(
        "a survivor noticed",
        lambda: any(lab.noticed(m, killed) for m in lab.members if m.name in survivors),
        30,
        lab.members[-1].log,
    )
    noticed = min(
        t for m in lab.members if m.name in survivors and (t := lab.noticed(m, killed)) is not None
    )
    _until("all owned by the survivors", lambda: lab.owned_by(every, survivors), 60, victim.log)
    owned = time.time()
    _until(
        "all owned by the survivors and ACTIVE",
        lambda: lab.owned_by(every, survivors) and lab.active(every),
        60,
        lab.members[-1].log,
    )
    done = time.time()
    return Takeover(noticed - killed, owned - noticed, done - noticed, orphans), every


@pytest.mark.timeout(1500)
def test_three_orchestrators_share_the_routers_and_take_over_from_a_killed_one() -> None:
    with ring_lab() as lab:
        names = {m.name for m in lab.members}
        routers = lab.create(ROUTERS, "r")
        _until(
            f"{ROUTERS} routers ACTIVE",
            lambda: lab.active(routers),
            60 + ROUTERS,
            lab.members[0].log,
        )
        _until("each owned once", lambda: lab.owned_by(routers, names), 30, lab.members[0].log)
        owners = lab.owners()
        assert set(owners) == names, owners  # each member owns some
        assert sum(owners.values()) == len(routers)  # one live lease per router
        ring = HashRing(names)
        leases = lab.leases()
        assert all(leases[r][0] == ring.owner_of(r) for r in routers)
        before = lab.inodes(routers)
        missing = [r for r in routers if r not in before]
        assert not missing, (
            len(missing),
            missing[:3],
            sorted(_namespaces(NETNS_PREFIX))[:5],
            len(_namespaces(NETNS_PREFIX)),
            [lab.namespace(r) for r in missing[:3]],
        )

        victim = lab.members[0]
        victims = [r for r in routers if leases[r][0] == victim.name]
        with InodeWatch(lab, routers) as watch:
            measured, every = kill_one(lab, routers, victim)
            watch.routers = every
            time.sleep(0.2)
        print(f"takeover: {measured}")
        assert measured.detection <= MEMBERSHIP_TIMEOUT + 1.5, measured
        assert measured.owned <= TAKEOVER, measured
        assert measured.takeover <= CONVERGED, measured
        assert not watch.changed, watch.changed  # no namespace made twice
        assert lab.inodes(routers) == before
        present = _namespaces(NETNS_PREFIX)
        assert present == {lab.namespace(r) for r in every}  # none leaked, none missing
        survivors = lab.members[1:]
        for router_id in victims[:40] + every[len(routers) :]:
            actions = [a for m in survivors for a in m.history(router_id)]
            assert "REBUILD" not in actions and "STOP" not in actions, (router_id, actions)
            assert actions.count("BOOT") <= 1, (router_id, actions)

        victim.start()  # back: the ring gives it its share again, adopted, not rebuilt
        ring = HashRing(names)
        _until(
            "rebalanced",
            lambda: (
                all(lease[0] == ring.owner_of(r) and lease[2] for r, lease in lab.leases().items())
                and lab.active(every)
            ),
            30,
            victim.log,
        )
        assert lab.inodes(every) == {**watch.first, **before}
        assert set(lab.owners()) == names
        back = [r for r, lease in lab.leases().items() if lease[0] == victim.name]
        for router_id in back[:40]:
            actions = victim.history(router_id)
            assert not {"BOOT", "REBUILD", "STOP"} & set(actions), (router_id, actions)
