"""Orchestrator benchmarks (issue 4): an API change until traffic flows, against a real ``astara up``.

- P1: a change, until traffic flows [p50 <= 100 ms, p99 <= 300 ms, >= 50 trials each],
  of two kinds, reported separately and together:
  (a) a router interface added (``add_interface_to_router``) to a router whose gateway is
      on the external network, until a server on that network reaches ``outside``;
  (b) a floating IP associated (``update_ip(fip, port_id=…)``), until ``outside`` reaches
      the server through it;
- P2: a new router with a gateway and one interface, until the first NATed connection
  (server to ``outside``, seen there from the router's external address) [p99 <= 1 s];
- P4: an appliance killed (``astara.lab.kill_namespace``), until the server reaches
  ``outside`` again [<= 3 s, p50 and max]; each kill ``P4_SETTLE`` s after traffic was seen
  restored, so the trials are independent crashes, not a crash loop.

``astara up`` runs as a subprocess with its own state directory, API port,
management bridge and prefixes (``astara-bench-<run>-u-`` namespaces, ``ab<run>-``
fabric links and server namespaces, bridge ``ab<run>mgt``), and ``--uplink
physnet1=<host end of a veth>`` whose other end is the ``outside`` namespace on
203.0.113.1/24 (TEST-NET). Everything goes through openstacksdk. It is stopped by
its pid and ``astara down`` runs with the same flags, whatever happened.

How "traffic flows" is seen: a prober process (one per namespace, started once, so
its start-up is never measured) gets a command on stdin, says it started (then t0 is
taken and the API is called), and opens a new non-blocking TCP connection to a
listener every 10 ms until one completes; it reports the CLOCK_MONOTONIC time of the
first completed handshake. The probing namespaces retry ARP every 10 ms
(``retrans_time_ms``), so the prober's own neighbour back-off (1 s by default) is not
what gets measured; before P1a and P2 trials their neighbour cache is flushed (a
server that never talked to the gateway), before P4 it is not (a running VM).

A trial that does not converge within its timeout is a failure: counted at its
timeout (a lower bound) in the percentiles and kept with the tail of ``astara up``'s
log in the JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openstack

from astara.lab import Lab, end_process, kill_namespace
from astara.providers.naming import name_candidates
from bench.figure import Figure

# moved to bench.harness (shared with bench.throughput); still importable from here
from bench.harness import (
    ASTARA,  # noqa: F401
    OUTSIDE_ADDRESS,
    TrialError,
    Up,
    connect,
    external_network,
    private_network,
    testbed,
)
from bench.harness import astara_up as _astara_up  # noqa: F401
from bench.harness import fast_arp as _fast_arp
from bench.harness import free_port as _free_port  # noqa: F401
from bench.harness import namespaces as _namespaces
from bench.harness import sweep as _sweep  # noqa: F401

OUTSIDE_PORT = 8080
SERVER_PORT = 8081
P1_TARGETS = (100.0, 300.0)
P1_TIMEOUT = 10.0
#: failed trials in a row after which a figure's remaining trials are not run (and fail)
GIVE_UP = 3
P2_TIMEOUT = 60.0
P4_TIMEOUT = 30.0
#: seconds a recovered appliance runs (several health periods) before the next P4 kill
P4_SETTLE = 10.0

PROBER = r"""
import json, selectors, socket, sys, time

def up(host, port, timeout, interval, reply):
    sel = selectors.DefaultSelector()
    deadline = time.monotonic() + timeout
    pending = {}
    next_try = 0.0
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                return {"ok": False}
            if now >= next_try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    s.connect((host, port))
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
                    s = None
                if s is not None:
                    sel.register(s, selectors.EVENT_WRITE)
                    pending[s] = now
                next_try = now + interval
            wait = max(0.0, min(next_try, deadline) - time.monotonic())
            for key, _ in sel.select(wait):
                s = key.fileobj
                sel.unregister(s)
                pending.pop(s)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    s.close()
                    continue
                t = time.monotonic()
                text = ""
                if reply:
                    s.setblocking(True)
                    s.settimeout(2)
                    try:
                        text = s.recv(200).decode()
                    except OSError:
                        s.close()
                        continue
                s.close()
                return {"ok": True, "t": t, "reply": text}
            now = time.monotonic()
            for s, started in list(pending.items()):
                if now - started > 1.0:
                    sel.unregister(s)
                    pending.pop(s)
                    s.close()
    finally:
        for s in pending:
            s.close()

def down(host, port, timeout, attempt):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=attempt).close()
        except OSError:
            return {"ok": True, "t": time.monotonic()}
        time.sleep(0.05)
    return {"ok": False}

for line in sys.stdin:
    cmd = json.loads(line)
    print(json.dumps({"started": time.monotonic()}), flush=True)
    if cmd["cmd"] == "up":
        out = up(cmd["host"], cmd["port"], cmd["timeout"], cmd["interval"], cmd["reply"])
    else:
        out = down(cmd["host"], cmd["port"], cmd["timeout"], cmd["attempt"])
    print(json.dumps(out), flush=True)
"""

LISTENER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])), backlog=512)
while True:
    conn, peer = server.accept()
    try:
        conn.sendall(peer[0].encode())
    except OSError:
        pass
    conn.close()
"""


@dataclass
class SampledFigure(Figure):
    """A figure with its raw samples (ms) and every trial's record, for the JSON."""

    samples: list[float] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        out["samples_ms"] = [round(s, 3) for s in self.samples]
        out["trials"] = self.trials
        return out


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# -- probes ---------------------------------------------------------------------------
class Prober:
    """The PROBER script running in one namespace, driven over its stdin; ended by pid."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-u", "-c", PROBER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pending: float | None = None  # the timeout of a command not yet answered
        self.buffer = b""

    def _read(self, timeout: float) -> dict[str, Any]:
        """The next line the prober wrote, read straight from its pipe (no buffer hides one)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                raise TrialError(f"prober in {self.netns} said nothing (exit {self.proc.poll()})")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def start(self, **cmd: Any) -> None:
        """Send a command; return once the prober has started on it."""
        if self.pending is not None:  # a failed trial left an answer behind: skip it
            self.result(self.pending)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()
        self._read(10)
        self.pending = float(cmd["timeout"])

    def result(self, timeout: float) -> dict[str, Any]:
        self.pending = None
        return self._read(timeout + 10)

    def reach(self, host: str, port: int, timeout: float, *, reply: bool = False) -> None:
        """Start probing until ``host:port`` answers (collect with ``result``)."""
        self.start(cmd="up", host=host, port=port, timeout=timeout, interval=0.01, reply=reply)

    def until_unreachable(self, host: str, port: int, timeout: float) -> bool:
        self.start(cmd="down", host=host, port=port, timeout=timeout, attempt=0.3)
        return bool(self.result(timeout)["ok"])

    def close(self) -> None:
        end_process(self.proc, group=True)


def _listen(lab: Lab, netns: str, host: str, port: int) -> None:
    proc = lab.spawn(netns, [sys.executable, "-c", LISTENER, host, str(port)])
    lab.wait_for(
        f"a listener in {netns}",
        lambda: (
            proc.poll() is None
            and bool(lab.run(netns, ["ss", "-Hltn", "sport", "=", f":{port}"]).strip())
        ),
        timeout=10,
    )


def _flush_neighbours(netns: str) -> None:
    subprocess.run(["ip", "-n", netns, "neigh", "flush", "dev", "eth0"], check=False, timeout=10)


# -- astara up ------------------------------------------------------------------------
# -- trials ---------------------------------------------------------------------------
def _trials(
    label: str,
    count: int,
    timeout: float,
    trial: Callable[[int], dict[str, Any]],
    up: Up,
) -> tuple[list[float], list[dict[str, Any]]]:
    """Run ``trial`` ``count`` times; a failure counts as ``timeout`` and keeps the log tail."""
    samples: list[float] = []
    records: list[dict[str, Any]] = []
    in_a_row = 0
    for i in range(count):
        if in_a_row >= GIVE_UP:
            records.append({"trial": i, "ms": None, "error": f"not run: {GIVE_UP} failed in a row"})
            samples.append(timeout * 1000)
            continue
        try:
            record = trial(i)
        except (TrialError, openstack.exceptions.SDKException, subprocess.SubprocessError) as exc:
            print(f"bench: {label} trial {i} failed: {exc}", file=sys.stderr)
            record = {"ms": None, "error": str(exc), "log_tail": up.tail()}
            samples.append(timeout * 1000)
            in_a_row += 1
        else:
            samples.append(record["ms"])
            in_a_row = 0
        records.append({"trial": i, **record})
    return samples, records


def _failures(records: list[dict[str, Any]], timeout: float) -> str:
    failed = sum(1 for r in records if r["ms"] is None)
    if not failed:
        return ""
    return (
        f"; **{failed} trial(s) failed** (not converged within {timeout:.0f} s, or the router not"
        f" ACTIVE before it; counted as {timeout:.0f} s; errors and log tails in the JSON)"
    )


#: what limits P1 when it misses (py-spy of astara up, timing of Router.push: README)
P1_LIMIT = (
    "Limit: a change is one look of the orchestrator: ~6 network-API reads through httpx "
    "(~3.5 ms of client CPU each) on the event loop that also serves the network API in "
    "astara up, then the appliance's apply: a new subnet ~74 ms per push (its nft transaction "
    "waits an RCU grace period, ~16 ms; dnsmasq restarts for the new range), traffic flowing "
    "after ~30 ms of it (decision 0010). Fix: the network API in its own process, a view of "
    "the network fed by the notifications instead of reads, dnsmasq taking a new range "
    "without a restart."
)


def _p_figures(
    name: str, samples: list[float], records: list[dict[str, Any]], what: str, timeout: float
) -> list[Figure]:
    p50, p99 = statistics.median(samples), _percentile(samples, 0.99)
    notes = f"{len(samples)} trials, {what}; max {max(samples):.1f} ms" + _failures(
        records, timeout
    )
    figures: list[Figure] = [
        SampledFigure(f"{name}, p50", p50, "ms", P1_TARGETS[0], notes, samples, records),
        SampledFigure(f"{name}, p99", p99, "ms", P1_TARGETS[1], notes, [], []),
    ]
    for figure in figures:
        if not figure.passed:
            figure.notes += ". " + P1_LIMIT
    return figures


@dataclass
class World:
    """What the figures share: the API, the external network, the main router."""

    up: Up
    lab: Lab
    sdk: openstack.connection.Connection
    outside: str
    public_id: str
    router: Any
    external: str
    probers: dict[str, Prober] = field(default_factory=dict)

    def prober(self, netns: str) -> Prober:
        if netns not in self.probers:
            self.probers[netns] = Prober(netns)
        return self.probers[netns]

    def private(self, name: str, octet: int) -> tuple[Any, Any]:
        return private_network(self.sdk, name, octet)

    def active(self, router_id: str, timeout: float) -> None:
        self.up.until(
            "router ACTIVE",
            lambda: self.sdk.network.get_router(router_id).status == "ACTIVE",
            timeout,
        )


def _result(prober: Prober, t0: float, timeout: float, what: str) -> dict[str, Any]:
    answer = prober.result(timeout)
    if not answer["ok"]:
        raise TrialError(f"{what}: not within {timeout:.0f} s")
    return answer | {"ms": (answer["t"] - t0) * 1000}


def _undo(world: World, undo: Callable[[], None]) -> dict[str, Any]:
    """Undo a P1 change between trials. A failure here does not void the trial's sample (the
    change did converge); it is kept in the record, and the next trial's precondition (the
    router ACTIVE) is what fails if the router did not survive it."""
    try:
        undo()
    except (TrialError, openstack.exceptions.SDKException) as exc:
        print(f"bench: undoing a P1 change failed: {exc}", file=sys.stderr)
        return {"undo_error": str(exc), "log_tail": world.up.tail()}
    return {}


def _p1a(
    world: World, router: Any, vm: str, subnet: Any, trials: int
) -> tuple[list[float], list[Any]]:
    prober = world.prober(vm)
    sdk = world.sdk

    def undo() -> None:
        sdk.network.remove_interface_from_router(router, subnet=subnet.id)
        if not prober.until_unreachable(OUTSIDE_ADDRESS, OUTSIDE_PORT, P1_TIMEOUT):
            raise TrialError("outside still reachable after the interface was removed")

    def trial(_: int) -> dict[str, Any]:
        world.active(router.id, P1_TIMEOUT)  # the precondition: the router is ACTIVE
        _flush_neighbours(vm)
        prober.reach(OUTSIDE_ADDRESS, OUTSIDE_PORT, P1_TIMEOUT)
        t0 = time.monotonic()
        sdk.network.add_interface_to_router(router, subnet=subnet.id)
        api_ms = (time.monotonic() - t0) * 1000
        try:
            answer = _result(prober, t0, P1_TIMEOUT, "server -> outside after the interface add")
        finally:
            undone = _undo(world, undo)
        return {"ms": answer["ms"], "api_ms": api_ms, **undone}

    return _trials("P1a", trials, P1_TIMEOUT, trial, world.up)


def _p1b(world: World, port_id: str, trials: int) -> tuple[list[float], list[Any]]:
    prober = world.prober(world.outside)
    sdk = world.sdk
    fip = sdk.network.create_ip(floating_network_id=world.public_id)
    floating = fip.floating_ip_address

    def undo() -> None:
        sdk.network.update_ip(fip, port_id=None)
        if not prober.until_unreachable(floating, SERVER_PORT, P1_TIMEOUT):
            raise TrialError("the floating IP still reachable after disassociation")

    def trial(_: int) -> dict[str, Any]:
        world.active(world.router.id, P1_TIMEOUT)  # the precondition: the router is ACTIVE
        subprocess.run(
            ["ip", "-n", world.outside, "neigh", "del", floating, "dev", "eth0"],
            capture_output=True,
            check=False,
        )
        prober.reach(floating, SERVER_PORT, P1_TIMEOUT)
        t0 = time.monotonic()
        sdk.network.update_ip(fip, port_id=port_id)
        api_ms = (time.monotonic() - t0) * 1000
        try:
            answer = _result(prober, t0, P1_TIMEOUT, "outside -> floating IP after association")
        finally:
            undone = _undo(world, undo)
        return {"ms": answer["ms"], "api_ms": api_ms, **undone}

    try:
        return _trials("P1b", trials, P1_TIMEOUT, trial, world.up)
    finally:
        sdk.network.delete_ip(fip)


def _p2(world: World, vm: str, subnet: Any, trials: int) -> tuple[list[float], list[Any]]:
    prober = world.prober(vm)
    sdk = world.sdk

    def trial(i: int) -> dict[str, Any]:
        _flush_neighbours(vm)
        prober.reach(OUTSIDE_ADDRESS, OUTSIDE_PORT, P2_TIMEOUT, reply=True)
        t0 = time.monotonic()
        router = sdk.network.create_router(
            name=f"p2-{i}", external_gateway_info={"network_id": world.public_id}
        )
        try:
            sdk.network.add_interface_to_router(router, subnet=subnet.id)
            api_ms = (time.monotonic() - t0) * 1000
            external = router.external_gateway_info["external_fixed_ips"][0]["ip_address"]
            answer = _result(prober, t0, P2_TIMEOUT, "first NATed connection")
            if answer["reply"] != external:
                raise TrialError(f"outside saw {answer['reply']!r}, not the router's {external}")
        finally:
            netns = (
                world.up.appliance(router.id)
                or name_candidates(world.up.netns_prefix, router.id)[0]
            )
            with contextlib.suppress(openstack.exceptions.SDKException):
                sdk.network.remove_interface_from_router(router, subnet=subnet.id)
            sdk.network.delete_router(router)
            world.up.until(
                "the appliance destroyed",
                lambda: netns not in _namespaces(world.up.netns_prefix),
                P2_TIMEOUT,
            )
        return {"ms": answer["ms"], "api_ms": api_ms}

    return _trials("P2", trials, P2_TIMEOUT, trial, world.up)


def _p4(world: World, vm: str, trials: int) -> tuple[list[float], list[Any]]:
    prober = world.prober(vm)
    router = world.router

    def trial(_: int) -> dict[str, Any]:
        world.active(router.id, P4_TIMEOUT)
        prober.reach(OUTSIDE_ADDRESS, OUTSIDE_PORT, P4_TIMEOUT)
        _result(prober, time.monotonic(), P4_TIMEOUT, "traffic before the kill")
        # independent crashes, not a crash loop: the previous recovery is P4_SETTLE s old
        time.sleep(P4_SETTLE)
        netns = world.up.appliance(router.id)
        if netns is None:
            raise TrialError("no appliance namespace to kill")
        t0 = time.monotonic()
        kill_namespace(netns)
        kill_ms = (time.monotonic() - t0) * 1000
        prober.reach(OUTSIDE_ADDRESS, OUTSIDE_PORT, P4_TIMEOUT)
        answer = _result(prober, t0, P4_TIMEOUT, "traffic restored after the kill")
        return {"ms": answer["ms"], "kill_ms": kill_ms}

    return _trials("P4", trials, P4_TIMEOUT, trial, world.up)


def _setup(up: Up, lab: Lab, outside: str) -> World:
    sdk = connect(up.url)
    public = external_network(sdk)
    router = sdk.network.create_router(name="main", external_gateway_info={"network_id": public.id})
    external = router.external_gateway_info["external_fixed_ips"][0]["ip_address"]
    return World(up, lab, sdk, outside, public.id, router, external)


def run_orchestrator_benchmarks(
    p1_trials: int = 50, p2_trials: int = 10, p4_trials: int = 5
) -> list[Figure]:
    figures: list[Figure] = []
    started = time.monotonic()

    def listener(lab: Lab, outside: str) -> None:
        _listen(lab, outside, OUTSIDE_ADDRESS, OUTSIDE_PORT)

    with testbed(before_up=listener) as bed:
        up = bed.up
        world: World | None = None
        try:
            world = _setup(up, bed.lab, bed.outside)
            figures = _measure(world, p1_trials, p2_trials, p4_trials)
        except BaseException:
            print(f"bench: astara up said:\n{up.tail()}", file=sys.stderr)
            raise
        finally:
            for prober in world.probers.values() if world else ():
                prober.close()
    print(f"bench: orchestrator figures took {time.monotonic() - started:.0f} s", file=sys.stderr)
    return figures


def _measure(world: World, p1_trials: int, p2_trials: int, p4_trials: int) -> list[Figure]:
    up, sdk, lab = world.up, world.sdk, world.lab
    # B: on the main router for good (floating IP, appliance kill); A: on router_a per P1a trial;
    # C: attached to each P2 router
    _, subnet_a = world.private("a", 71)
    net_b, subnet_b = world.private("b", 72)
    net_c, subnet_c = world.private("c", 73)
    sdk.network.add_interface_to_router(world.router, subnet=subnet_b.id)
    # P1a has a router of its own (gateway only, between trials): whatever its trials do
    # to it, the main router stays as the other figures need it
    router_a = sdk.network.create_router(
        name="p1a", external_gateway_info={"network_id": world.public_id}
    )
    world.active(world.router.id, 60)
    world.active(router_a.id, 60)
    vm_a = up.server("a", subnet_a.network_id, "10.71.0.10")
    vm_b = up.server("b", net_b.id, "10.72.0.10")
    vm_c = up.server("c", net_c.id, "10.73.0.10")
    for vm in (vm_a, vm_b, vm_c):
        _fast_arp(lab, vm["namespace"])
    _listen(lab, vm_b["namespace"], "0.0.0.0", SERVER_PORT)
    # the external path works before anything is timed
    probe = world.prober(vm_b["namespace"])
    probe.reach(OUTSIDE_ADDRESS, OUTSIDE_PORT, 60)
    _result(probe, time.monotonic(), 60, "server b -> outside before the trials")

    a_samples, a_records = _p1a(world, router_a, vm_a["namespace"], subnet_a, p1_trials)
    b_samples, b_records = _p1b(world, vm_b["port_id"], p1_trials)
    p2_samples, p2_records = _p2(world, vm_c["namespace"], subnet_c, p2_trials)
    p4_samples, p4_records = _p4(world, vm_b["namespace"], p4_trials)

    figures = _p_figures(
        "P1a interface add -> traffic",
        a_samples,
        a_records,
        "add_interface_to_router until the server's TCP connect to outside completes",
        P1_TIMEOUT,
    )
    figures += _p_figures(
        "P1b floating IP associate -> traffic",
        b_samples,
        b_records,
        "update_ip(port_id) until outside's TCP connect to the floating IP completes",
        P1_TIMEOUT,
    )
    figures += _p_figures(
        "P1 both kinds -> traffic",
        a_samples + b_samples,
        [],
        "P1a and P1b together (raw samples under each)",
        P1_TIMEOUT,
    )
    p2_notes = (
        f"{len(p2_samples)} trials: create_router (gateway) + add_interface_to_router until "
        "outside accepts a connection from the router's external address; "
        f"p50 {statistics.median(p2_samples):.1f} ms, max {max(p2_samples):.1f} ms"
        + _failures(p2_records, P2_TIMEOUT)
    )
    p4_notes = (
        f"{len(p4_samples)} trials: kill_namespace(appliance) until the server's TCP connect to "
        "outside completes again (t0 before the kill; each kill "
        f"{P4_SETTLE:.0f} s after the previous recovery)" + _failures(p4_records, P4_TIMEOUT)
    )
    figures += [
        SampledFigure(
            "P2 new router -> first NATed packet, p99",
            _percentile(p2_samples, 0.99),
            "ms",
            1000,
            p2_notes,
            p2_samples,
            p2_records,
        ),
        SampledFigure(
            "P4 appliance killed -> traffic restored, p50",
            statistics.median(p4_samples),
            "ms",
            3000,
            p4_notes,
            p4_samples,
            p4_records,
        ),
        SampledFigure(
            "P4 appliance killed -> traffic restored, max",
            max(p4_samples),
            "ms",
            3000,
            p4_notes,
            [],
            [],
        ),
    ]
    return figures
