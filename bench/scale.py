"""Scale benchmarks (issue 5): 1,000 routers on one host under a real ``astara up``.

- P6 density: ``routers`` routers (default 1,000), each with a gateway on the external
  network and one internal IPv4 network whose subnet has DHCP (so each appliance runs its
  dnsmasq), created through the network API (openstacksdk, ``IN_FLIGHT`` routers at once);
  - the time from the first API call until every router is ACTIVE (its appliance
    configured and verified by the orchestrator);
  - memory per router [<= 10 MB]: the PSS (and RSS, in the notes) of ``astara up``, its
    agent and every process under them (dnsmasq, bird), after minus before, / routers;
  - CPU of the control plane idle with health checks every 5 s [<= 20 % of one core]:
    utime+stime (and the reaped children's) of ``astara up`` and every process under it,
    over ``CPU_WINDOW`` s once the routers have settled.
- P3 orchestrator restart: a ping every 10 ms from a server behind one router to
  ``outside`` through SNAT; ``astara up`` is stopped (SIGTERM, by its pid; appliances keep
  running) and started again with the same flags; the time from the new start until the
  new orchestrator has verified every appliance (its ``astara_routers{state="ACTIVE"}``
  gauge, from the admin API's ``/metrics``, reaches ``routers``) [<= 20 s], and the
  pings lost meanwhile [0].

External addresses: the router whose server is pinged has its gateway on 203.0.113.0/24
(TEST-NET-3, ``outside`` is .1); 1,000 gateways do not fit in the TEST-NET /24s, so the
others have an IPv6 gateway only, on a second subnet of the same external network in the
documentation prefix, 2001:db8:5ca1::/64, whose gateway ::1 is ``outside`` too (so every
appliance's gateway answers, as in a real deployment; no address outside TEST-NET and
the documentation prefix is ever used). Tenant networks are VXLAN, 10.100.0.0/24 on.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openstack

from astara.lab import Lab, end_process
from bench.figure import Figure
from bench.harness import (
    OUTSIDE_ADDRESS,
    TrialError,
    Up,
    connect,
    external_network,
    fast_arp,
    testbed,
)

ROUTERS = 1000
#: routers being created through the API at once
IN_FLIGHT = 16
HEALTH_PERIOD = 5.0
#: what limits P3 when it misses
P3_LIMIT = (
    "Limit (not profiled at 1,000 since the agent outlives astara up, decision 0016): no "
    "configuration is re-applied any more; the new orchestrator lists every namespace (one "
    "ip process each), reads the whole network view at once, adopts every appliance (one "
    "agent request each) and verifies each (its configuration read back and compared), all "
    "on the one event loop that also serves the network API in astara up. Fix: the network "
    "API in its own process; the namespaces read in-process."
)
#: what limits P6's CPU figure when it misses: see the parts in the notes
CPU_LIMIT = (
    "Limit: the parts above. Known costs: the agent answers each status probe by checking "
    "the default gateways and runs one ping process when its neighbour table has no entry "
    "for one (in 'agent reaped'); the orchestrator probes every appliance with a request of "
    "its own each period. Fix: the gateway check in-process (an ICMP socket in the "
    "namespace) or a verdict kept for the health period; probes batched per period."
)
#: seconds of CPU sampling (P6)
CPU_WINDOW = 60.0
#: seconds the routers run once all are ACTIVE before memory and CPU are measured
SETTLE = 20.0
BIG_CIDR = "2001:db8:5ca1::/64"
BIG_GATEWAY = "2001:db8:5ca1::1"
ACTIVE_TIMEOUT = 900.0
RESTART_TIMEOUT = 300.0
#: the ping's interval (s), and how long it runs before the stop and after the verification
PING_INTERVAL = 0.01
PING_MARGIN = 3.0
#: seconds of profile (``BENCH_SCALE_PROFILE``)
PROFILE_SECONDS = 40
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
ADMIN_HEADERS = {"X-Project-Id": "admin", "X-Roles": "admin,member,reader"}


# -- processes -----------------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, of every process now."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _tree(root: int) -> list[int]:
    """``root`` and every process under it."""
    children = _children()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB, from ``smaps_rollup``; (0, 0) if it is gone."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        return 0, 0
    return rss, pss


@dataclass
class Footprint:
    """The memory of ``astara up``'s process tree, in kB, by command name."""

    rss: dict[str, int]
    pss: dict[str, int]
    count: dict[str, int]

    @property
    def total_rss(self) -> int:
        return sum(self.rss.values())

    @property
    def total_pss(self) -> int:
        return sum(self.pss.values())


def _footprint(root: int, agent: int | None) -> Footprint:
    rss: dict[str, int] = {}
    pss: dict[str, int] = {}
    count: dict[str, int] = {}
    for pid in _tree(root):
        name = "up" if pid == root else "agent" if pid == agent else _comm(pid)
        r, p = _memory(pid)
        rss[name] = rss.get(name, 0) + r
        pss[name] = pss.get(name, 0) + p
        count[name] = count.get(name, 0) + 1
    return Footprint(rss, pss, count)


def _cpu_ticks(root: int, agent: int | None = None) -> dict[str, int]:
    """utime+stime of ``root`` and every live process under it, by part ("up", "agent", or
    the command), and cutime+cstime (children reaped: ``ip``, ``ping``…) as "<part> reaped"."""
    parts: dict[str, int] = {}
    for pid in _tree(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            name = "up" if pid == root else "agent" if pid == agent else _comm(pid)
            parts[name] = parts.get(name, 0) + int(fields[11]) + int(fields[12])
            reaped = int(fields[13]) + int(fields[14])
            if reaped:
                parts[f"{name} reaped"] = parts.get(f"{name} reaped", 0) + reaped
    return parts


def _agent_pid(up: Up) -> int | None:
    """The agent: the child of ``astara up`` running ``appliance serve``."""
    for pid in _children().get(up.proc.pid, []):
        with contextlib.suppress(OSError):
            if b"appliance\0serve" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    return None


def _fds(pid: int | None) -> int:
    if pid is None:
        return -1
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# -- the routers -----------------------------------------------------------------------------
@dataclass
class Made:
    router_id: str
    network_id: str
    subnet_id: str


def _create(
    url: str, count: int, public_id: str, gateways: tuple[str, str], in_flight: int
) -> tuple[list[Made], float]:
    """``count`` routers (router 0 on ``gateways[0]``, the others on ``gateways[1]``),
    ``in_flight`` at once; the routers and the API time (s)."""
    local = threading.local()
    vni = 1_000_000 + secrets.randbelow(14_000_000)

    def sdk() -> openstack.connection.Connection:
        if not hasattr(local, "sdk"):
            local.sdk = connect(url)
        return local.sdk

    def one(i: int) -> Made:
        conn = sdk()
        network = conn.network.create_network(
            name=f"scale-{i}", provider_network_type="vxlan", provider_segmentation_id=vni + i
        )
        octets = f"{100 + i // 256}.{i % 256}"
        subnet = conn.network.create_subnet(
            network_id=network.id,
            cidr=f"10.{octets}.0/24",
            ip_version=4,
            gateway_ip=f"10.{octets}.1",
            is_dhcp_enabled=True,
        )
        router = conn.network.create_router(
            name=f"scale-{i}",
            external_gateway_info={
                "network_id": public_id,
                "external_fixed_ips": [{"subnet_id": gateways[0 if i == 0 else 1]}],
            },
        )
        conn.network.add_interface_to_router(router, subnet=subnet.id)
        return Made(router.id, network.id, subnet.id)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        made = list(pool.map(one, range(count)))
    return made, time.monotonic() - started


def _statuses(url: str) -> dict[str, str]:
    response = httpx.get(
        url + "/v2.0/routers",
        params=[("fields", "id"), ("fields", "status")],
        headers=ADMIN_HEADERS,
        timeout=30,
    )
    response.raise_for_status()
    return {r["id"]: r["status"] for r in response.json()["routers"]}


def _workers(up: Up) -> tuple[int, int]:
    """(running, queued) reconciles of the orchestrator, from its admin API."""
    token = (Path(up.flags[1]) / "admin-token").read_text().strip()
    response = httpx.get(
        f"http://127.0.0.1:{_admin_port(up)}/v1/workers",
        headers={"X-Auth-Token": token},
        timeout=10,
    )
    response.raise_for_status()
    workers = response.json()["workers"]
    return sum(len(w["running"]) for w in workers), sum(w["queued"] for w in workers)


def _configured(up: Up, ids: list[str]) -> tuple[bool, str]:
    """Every router of ``ids`` configured: the orchestrator verified them all (its
    ``astara_routers{state="ACTIVE"}``) with nothing running or queued, the API says
    ACTIVE for each, and every appliance runs its dnsmasq. (A new router is ACTIVE in the
    API before the orchestrator saw it, as in Neutron: the status alone says nothing.)"""
    verified = _verified(_admin_port(up))
    running, queued = _workers(up)
    count = len(ids)
    if verified < count or running or queued:  # the cheap looks first: listing is not free
        return False, f"{verified} verified, {running} running, {queued} queued (of {count})"
    statuses = _statuses(up.url)
    active = sum(1 for r in ids if statuses.get(r) == "ACTIVE")
    agent = _agent_pid(up)
    dnsmasq = sum(1 for p in _tree(agent) if _comm(p) == "dnsmasq") if agent else 0
    done = verified >= count and running == queued == 0 and active == count and dnsmasq >= count
    what = (
        f"{verified} verified, {running} running, {queued} queued, {active} ACTIVE in the API, "
        f"{dnsmasq} dnsmasq (of {count})"
    )
    return done, what


def _until_configured(up: Up, ids: list[str], timeout: float) -> float:
    """Seconds until ``_configured`` (polled every 0.5 s; its answers in the log)."""
    started = time.monotonic()
    last = ""
    while True:
        done, what = _configured(up, ids)
        if done:
            return time.monotonic() - started
        if what != last and time.monotonic() - started > 0:
            print(f"bench: scale: {what}", file=sys.stderr)
            last = what
        if up.proc.poll() is not None:
            raise TrialError(f"astara up exited ({up.proc.returncode})")
        if time.monotonic() - started > timeout:
            raise TrialError(f"not configured after {timeout:.0f} s: {what}")
        time.sleep(0.5)


# -- P3 --------------------------------------------------------------------------------------
def _admin_port(up: Up) -> int:
    return int(up.argv[up.argv.index("--admin-port") + 1])


def _verified(port: int) -> int:
    """``astara_routers{state="ACTIVE"}`` of the orchestrator on ``port``; -1 if none answers."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return -1
    found = re.search(r'^astara_routers\{state="ACTIVE"\} ([0-9.e+]+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def _ping(netns: str, log: Path, host: str = OUTSIDE_ADDRESS) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", netns, "ping", "-n", "-i", str(PING_INTERVAL), "-W", "1", host],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _ping_result(proc: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    """Stop the ping (SIGINT to it, by pid): sent, received, the longest run of lost seqs."""
    end_process(proc, sig=signal.SIGINT, group=True, timeout=10)
    text = log.read_text(errors="replace")
    summary = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    if summary is None:
        raise TrialError(f"ping said no summary: {text[-500:]}")
    seqs = sorted({int(s) for s in re.findall(r"icmp_seq=(\d+)", text)})
    gap = max((b - a - 1 for a, b in itertools.pairwise(seqs)), default=0)
    return {"sent": int(summary.group(1)), "received": int(summary.group(2)), "gap": gap}


def _wait(what: str, check: Callable[[], bool], timeout: float, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TrialError(f"{what}: not within {timeout:.0f} s")
        time.sleep(step)


def _restart(up: Up, count: int, vm: str, work: Path) -> dict[str, Any]:
    """P3: ping running, ``astara up`` stopped and started again; the record."""
    log = work / "ping.log"
    ping = _ping(vm, log)
    profiler: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(PING_MARGIN)
        t_stop = time.monotonic()
        up.proc.send_signal(signal.SIGTERM)
        up.proc.wait(timeout=60)
        stop_s = time.monotonic() - t_stop
        up.log = work / "up-restarted.log"
        with up.log.open("wb") as output:
            t0 = time.monotonic()
            up.proc = subprocess.Popen(up.argv, stdout=output, stderr=subprocess.STDOUT)
        port = _admin_port(up)
        profiler = _profile(up.proc.pid, "restart")
        ready_s: float | None = None
        first_s: float | None = None
        while True:
            now = time.monotonic() - t0
            if ready_s is None and "ready;" in up.log.read_text(errors="replace"):
                ready_s = now
            verified = _verified(port)
            if first_s is None and verified > 0:
                first_s = now
            if verified >= count:
                break
            if up.proc.poll() is not None:
                raise TrialError(f"astara up exited after the restart ({up.proc.returncode})")
            if now > RESTART_TIMEOUT:
                raise TrialError(f"{verified}/{count} verified after {RESTART_TIMEOUT:.0f} s")
            time.sleep(0.1)
        verified_s = time.monotonic() - t0
        time.sleep(PING_MARGIN)
    finally:
        pinged = _ping_result(ping, log)
        if profiler is not None:
            profiler.wait(timeout=120)
    return {
        "verified_s": verified_s,
        "stop_s": stop_s,
        "ready_s": ready_s,
        "first_verified_s": first_s,
        **pinged,
    }


def _profile(pid: int, what: str) -> subprocess.Popen[bytes] | None:
    """With ``BENCH_SCALE_PROFILE=<dir>``: ``py-spy record`` of ``pid`` and its Python
    children for ``PROFILE_SECONDS``, collapsed stacks into ``<dir>/<what>.txt``."""
    where = os.environ.get("BENCH_SCALE_PROFILE")
    if not where:
        return None
    spy = Path(sys.executable).parent / "py-spy"
    argv = [str(spy), "record", "-d", str(PROFILE_SECONDS), "-f", "raw", "--subprocesses"]
    argv += ["--nonblocking", "-o", f"{where}/{what}.txt", "--pid", str(pid)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _keep_logs(up: Up, work: Path) -> None:
    """With ``BENCH_SCALE_KEEP=<dir>``: the logs, copied there before the teardown."""
    where = os.environ.get("BENCH_SCALE_KEEP")
    if not where:
        return
    for log in [*work.glob("*.log"), Path(up.flags[1]) / "agent.log"]:
        with contextlib.suppress(OSError):
            shutil.copy(log, Path(where) / log.name)


# -- the run ----------------------------------------------------------------------------------
def _outside_big(lab: Lab, outside: str) -> None:
    lab.address(outside, "eth0", f"{BIG_GATEWAY}/{BIG_CIDR.split('/')[1]}")


#: the kernel's neighbour tables (ARP, NDP) are one per family for every namespace; their
#: default hard limit (gc_thresh3 = 1024 entries) is overflowed by 1,000 appliances (each has
#: the host and its gateway as neighbours, the host has each of them): connections to the
#: appliances then wait seconds for a neighbour ("neighbor table overflow" in dmesg). The
#: run raises them as a deployment of that size must, and puts them back after.
NEIGH_THRESHOLDS = {"gc_thresh1": 4096, "gc_thresh2": 16384, "gc_thresh3": 32768}


@contextlib.contextmanager
def _neighbour_tables() -> Iterator[dict[str, int]]:
    """The thresholds raised (never lowered) for the block, then put back as they were."""
    before: dict[str, int] = {}
    for family in ("ipv4", "ipv6"):
        for name, value in NEIGH_THRESHOLDS.items():
            path = Path(f"/proc/sys/net/{family}/neigh/default/{name}")
            before[str(path)] = int(path.read_text())
            if before[str(path)] < value:
                path.write_text(str(value))
    try:
        yield before
    finally:
        for path, value in before.items():
            Path(path).write_text(str(value))


def run_scale_benchmarks(routers: int = ROUTERS, in_flight: int = IN_FLIGHT) -> list[Figure]:
    started = time.monotonic()
    figures: list[Figure] = []
    record: dict[str, Any] = {"routers": routers, "in_flight": in_flight}
    with (
        _neighbour_tables(),
        testbed(
            before_up=_outside_big,
            up_flags=("--health-period", f"{HEALTH_PERIOD:g}"),
            down_timeout=600,
        ) as bed,
    ):
        up, lab = bed.up, bed.lab
        try:
            figures = _measure(bed.work, up, lab, routers, in_flight, record)
        except BaseException:
            print(f"bench: scale: astara up said:\n{up.tail()}", file=sys.stderr)
            raise
        finally:
            _keep_logs(up, bed.work)
            teardown = time.monotonic()
    record["teardown_s"] = round(time.monotonic() - teardown, 1)
    leaks = list(bed.leftovers)
    run = bed.run
    dnsmasq = subprocess.run(
        ["pgrep", "-af", f"astara-bench-{run}-"], capture_output=True, text=True, check=False
    ).stdout.split("\n")
    leaks += [f"process {line}" for line in dnsmasq if line.strip()]
    record["leaks"] = leaks
    record["total_s"] = round(time.monotonic() - started, 1)
    thresholds = "/".join(str(v) for v in NEIGH_THRESHOLDS.values())
    note = f"; neighbour tables' gc_thresh1/2/3 raised to {thresholds} for the run"
    note += f"; run {record['total_s']:.0f} s (teardown {record['teardown_s']:.0f} s)" + (
        f"; **left behind: {', '.join(leaks)}**" if leaks else "; nothing left behind"
    )
    for figure in figures:
        figure.notes += note
    print(f"bench: scale: {record}", file=sys.stderr)
    return figures


def _measure(
    work: Path, up: Up, lab: Lab, routers: int, in_flight: int, record: dict[str, Any]
) -> list[Figure]:
    sdk = connect(up.url)
    agent = _agent_pid(up)
    time.sleep(2)
    before = _footprint(up.proc.pid, agent)
    public = external_network(sdk)
    big = sdk.network.create_subnet(
        network_id=public.id,
        cidr=BIG_CIDR,
        ip_version=6,
        gateway_ip=BIG_GATEWAY,
        is_dhcp_enabled=False,
    )
    small = next(s for s in sdk.network.subnets(network_id=public.id) if s.id != big.id)
    t0 = time.monotonic()
    made, api_s = _create(up.url, routers, public.id, (small.id, big.id), in_flight)
    print(f"bench: scale: {routers} routers made through the API in {api_s:.1f} s", file=sys.stderr)
    _until_configured(up, [m.router_id for m in made], ACTIVE_TIMEOUT)
    create_s = time.monotonic() - t0
    record |= {"api_s": round(api_s, 1), "create_s": round(create_s, 1)}
    print(f"bench: scale: all ACTIVE after {create_s:.1f} s", file=sys.stderr)

    time.sleep(SETTLE)
    agent = _agent_pid(up)
    idle_profile = _profile(up.proc.pid, "idle")
    ticks0, c0 = _cpu_ticks(up.proc.pid, agent), time.monotonic()
    time.sleep(CPU_WINDOW)
    ticks1, c1 = _cpu_ticks(up.proc.pid, agent), time.monotonic()
    by_part = {
        name: (ticks1[name] - ticks0.get(name, 0)) / CLOCK_TICK / (c1 - c0) * 100 for name in ticks1
    }
    cpu = sum(by_part.values())
    cpu_parts = ", ".join(
        f"{name} {share:.1f} %"
        for name, share in sorted(by_part.items(), key=lambda item: -item[1])
        if share >= 0.05
    )
    after = _footprint(up.proc.pid, agent)
    if idle_profile is not None:
        idle_profile.wait(timeout=120)
    fds = {"agent": _fds(agent), "up": _fds(up.proc.pid)}
    record |= {
        "cpu_percent": round(cpu, 2),
        "cpu_by_part": {name: round(share, 2) for name, share in by_part.items()},
        "fds": fds,
        "before": before.__dict__,
        "after": after.__dict__,
    }
    per_pss = (after.total_pss - before.total_pss) / routers / 1024
    per_rss = (after.total_rss - before.total_rss) / routers / 1024
    parts = ", ".join(
        f"{name} x{after.count[name]} {(after.pss[name] - before.pss.get(name, 0)) / 1024:.0f}"
        for name in sorted(after.pss)
    )
    dnsmasq = after.count.get("dnsmasq", 0)

    vm = up.server("p3", made[0].network_id, "10.100.0.10")
    fast_arp(lab, vm["namespace"])
    _wait(
        "the server reaching outside",
        lambda: (
            subprocess.run(
                ["ip", "netns", "exec", vm["namespace"], "ping", "-c1", "-W1", OUTSIDE_ADDRESS],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        ),
        60,
    )
    p3 = _restart(up, routers, vm["namespace"], work)
    record["p3"] = p3
    print(f"bench: scale: P3 {p3}", file=sys.stderr)

    lost = p3["sent"] - p3["received"]
    fd_note = f"open fds: agent {fds['agent']}, astara up {fds['up']} (ulimit -n 20000)"
    return [
        Figure(
            "P6 create routers -> all ACTIVE",
            create_s,
            "s",
            float("inf"),
            f"{routers} routers (gateway + one DHCP subnet each), {in_flight} in flight through "
            f"openstacksdk (4 calls each); the API calls took {api_s:.0f} s; no target",
        ),
        Figure(
            "P6 memory per router (PSS)",
            per_pss,
            "MB",
            10,
            f"{routers} routers: PSS of astara up + agent + every dnsmasq/bird under them, after "
            f"minus before, / {routers}; RSS {per_rss:.1f} MB per router; growth by process "
            f"(MB PSS): {parts}; {dnsmasq} dnsmasq; {fd_note}",
        ),
        Figure(
            "P6 CPU, health checks every 5 s",
            cpu,
            "% of one core",
            20,
            f"{routers} routers settled ({SETTLE:.0f} s after all ACTIVE), --health-period "
            f"{HEALTH_PERIOD:g}: CPU of the whole control plane (astara up with its network API, "
            f"orchestrator, agent, dnsmasq/bird and reaped children) over {CPU_WINDOW:.0f} s, "
            f"idle but for the health checks; by part: {cpu_parts}"
            + ("" if cpu <= 20 else ". " + CPU_LIMIT),
        ),
        Figure(
            "P3 orchestrator restart -> all verified",
            p3["verified_s"],
            "s",
            20,
            f"{routers} routers: astara up SIGTERMed (stopped in {p3['stop_s']:.1f} s) and "
            "started again with the same flags; from the new start until its "
            f'astara_routers{{state="ACTIVE"}} (admin /metrics) is {routers}; "ready" after '
            f"{p3['ready_s'] or float('nan'):.1f} s, first verified after "
            f"{p3['first_verified_s'] or float('nan'):.1f} s"
            + ("" if p3["verified_s"] <= 20 else ". " + P3_LIMIT),
        ),
        Figure(
            "P3 pings lost during the restart",
            lost,
            "pings",
            0,
            f"ping -i {PING_INTERVAL} from a server behind router 0 to outside through SNAT, "
            f"{PING_MARGIN:.0f} s before the stop until {PING_MARGIN:.0f} s after all were "
            f"verified: {p3['sent']} sent, {p3['received']} answered, longest gap "
            f"{p3['gap']} seqs",
        ),
    ]
