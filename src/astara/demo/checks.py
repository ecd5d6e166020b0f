"""The demo's checks: each path proven with real packets, timed, as table rows.

A check passes, fails, or is *not run* with the reason (visible, not counted
as failed): the VLAN row on a kernel without 802.1Q, and the paths through the
external network when the demo uses an ``astara up`` it did not start.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from rich.console import Console
from rich.table import Table

from astara.demo.api import DemoError
from astara.demo.host import OUTSIDE_V4, Host, bgp_routes
from astara.demo.topology import Topology
from astara.lab import Lab, LabError
from astara.scenario import ASK_PEER, ECHO_PEER

PORT = 8080
NO_VLAN = "not run: this kernel has no 802.1Q VLAN support"
NOT_OURS = "not run: astara up was already running (no outside the demo made)"

Probe = Callable[[], tuple[bool, str]]


@dataclass
class Check:
    name: str
    ok: bool | None  # None: not run
    seconds: float
    detail: str


def timed(name: str, probe: Probe, *, retry_for: float = 0.0) -> Check:
    start = time.monotonic()
    ok, detail = False, ""
    while True:
        try:
            ok, detail = probe()
        except (LabError, DemoError, subprocess.SubprocessError, OSError, httpx.HTTPError) as exc:
            # the last line says why (a LabError's first is the command)
            ok, detail = False, (str(exc).strip().splitlines() or [""])[-1][:160]
        if ok or time.monotonic() - start >= retry_for:
            break
        time.sleep(0.2)
    return Check(name, ok, time.monotonic() - start, detail)


class Prover:
    """Runs commands in the servers' and outside's namespaces."""

    def __init__(self, lab: Lab, topo: Topology, host: Host | None, fabric_prefix: str) -> None:
        self.lab, self.topo, self.host, self.prefix = lab, topo, host, fabric_prefix

    def ns(self, server: str) -> str:
        return f"{self.prefix}vm-{server}"

    def run(self, server: str, argv: list[str], *, check: bool = True) -> str:
        return self.lab.run(self.ns(server), argv, check=check, timeout=20)

    def echo(self, ns: str, address: str = "0.0.0.0") -> None:
        self.lab.spawn(ns, [sys.executable, "-c", ECHO_PEER, address, str(PORT)])

    def ask(self, ns: str, address: str, timeout: float = 2.0) -> str:
        out = self.lab.run(
            ns, [sys.executable, "-c", ASK_PEER, address, str(PORT), str(timeout)], timeout=30
        )
        return out.strip()

    def ping(self, server: str, address: str) -> tuple[bool, str]:
        flag = ["-6"] if ":" in address else []
        out = self.run(server, ["ping", *flag, "-c1", "-W2", address], check=False)
        return "1 received" in out, f"{address} answers" if "1 received" in out else "no answer"


def run_checks(prover: Prover, topo: Topology, *, vlan: bool) -> list[Check]:  # noqa: PLR0915 - one probe per row, read top to bottom
    """Every check, in the table's order."""
    p, s = prover, topo.servers
    a1, a3, b1 = s["demo-a1"], s["demo-a3"], s["demo-b1"]
    external = p.host is not None and topo.external is not None
    for name in ("demo-a3", "demo-b1", "demo-b3"):
        p.echo(p.ns(name))
    if external:
        assert p.host is not None
        p.echo(p.host.outside, OUTSIDE_V4)

    def dhcp() -> tuple[bool, str]:
        wrong = []
        for server in s.values():
            out = p.run(server.name, ["ip", "-4", "-o", "address", "show", "dev", "eth0"])
            if f" {server.address}/" not in out:
                wrong.append(server.name)
        if wrong:
            return False, f"no lease on {', '.join(wrong)}"
        return True, f"{len(s)} servers leased, e.g. {a1.name} {a1.address}"

    resolve = "import socket,sys; print(socket.gethostbyname(sys.argv[1]))"

    def dns() -> tuple[bool, str]:
        got = p.run(a1.name, [sys.executable, "-c", resolve, a3.hostname], check=False).strip()
        return got == a3.address, f"{a1.name}: {a3.hostname} -> {got or 'nothing'}"

    def snat() -> tuple[bool, str]:
        router = topo.api("a").get("routers", topo.routers["a"]["id"])
        mine = [
            f["ip_address"]
            for f in router["external_gateway_info"]["external_fixed_ips"]
            if ":" not in f["ip_address"]
        ]
        seen = p.ask(p.ns(a1.name), OUTSIDE_V4)
        return seen in mine, f"outside saw {seen} (router A's external address)"

    def floating() -> tuple[bool, str]:
        assert p.host is not None
        seen = p.ask(p.host.outside, topo.floating["a"])
        return seen == OUTSIDE_V4, f"{topo.floating['a']} -> {a3.name}, which saw {seen}"

    def hairpin() -> tuple[bool, str]:
        seen = p.ask(p.ns(a1.name), topo.floating["a"])
        return not seen.startswith("error"), f"{a1.name} -> {topo.floating['a']}: saw {seen}"

    fetch = (
        "import urllib.request; print(urllib.request.urlopen("
        "'http://169.254.169.254/latest/meta-data/instance-id', timeout=5).read().decode())"
    )

    def metadata() -> tuple[bool, str]:
        got = p.run(a1.name, [sys.executable, "-c", fetch]).strip()
        return got == a1.server_id, f"instance-id {got or 'none'}"

    def slaac() -> tuple[bool, str]:
        out = p.run(
            a1.name, ["ip", "-6", "-o", "address", "show", "dev", "eth0", "scope", "global"]
        )
        found = [w.split("/")[0] for w in out.split() if w.startswith("2001:db8:a1:")]
        if not found:
            return False, "no SLAAC address yet"
        ok, _ = p.ping(a1.name, "2001:db8:a1::1")
        return ok, f"{found[0]}, router 2001:db8:a1::1 {'answers' if ok else 'silent'}"

    def bgp() -> tuple[bool, str]:
        assert p.host is not None
        routes = bgp_routes(p.host)
        want = ["2001:db8:a1::/64", "2001:db8:b1::/64"]
        have = [w for w in want if w in routes]
        return have == want, f"outside learnt {', '.join(have) or 'nothing yet'}"

    def isolation() -> tuple[bool, str]:
        seen = p.ask(p.ns(a1.name), b1.address, timeout=1)
        ok = seen.startswith("error")
        return ok, f"{a1.name} -> {b1.name} {b1.address}: " + ("refused/timed out" if ok else seen)

    def vlan_row() -> tuple[bool, str]:
        return p.ping("demo-av", "10.1.100.1")

    checks = [
        timed("DHCP: every server leases its port's address", dhcp, retry_for=10),
        timed("DNS: a server resolves another's name (router dnsmasq)", dns, retry_for=10),
        timed(
            "east-west: net a1 -> net a2 (one router)",
            lambda: p.ping(a1.name, a3.address),
            retry_for=10,
        ),
    ]
    for name, probe, retry in (
        ("SNAT: outside sees the router's external address", snat, 10.0),
        ("floating IP: outside reaches a server", floating, 10.0),
        ("hairpin: a server reaches its project's floating IP", hairpin, 10.0),
    ):
        checks.append(timed(name, probe, retry_for=retry) if external else _not_run(name))
    checks.append(timed("metadata: instance-id is the server's own", metadata, retry_for=10))
    checks.append(timed("IPv6: SLAAC address, router answers", slaac, retry_for=20))
    name = "BGP: outside learns the tenant IPv6 prefixes"
    checks.append(timed(name, bgp, retry_for=30) if external else _not_run(name))
    checks.append(timed("isolation: project A cannot reach project B", isolation))
    name = f"VLAN: network {topo.vlan_id} on physnet2 routed"
    if topo.vlan_attached:
        checks.append(timed(name, vlan_row, retry_for=10))
    else:
        checks.append(Check(name, None, 0.0, NO_VLAN if not vlan else NOT_OURS))
    return checks


def _not_run(name: str) -> Check:
    return Check(name, None, 0.0, NOT_OURS)


def print_table(console: Console, checks: list[Check]) -> None:
    table = Table(title="Astara demo: every path, proven")
    table.add_column("check")
    table.add_column("result")
    table.add_column("time", justify="right")
    table.add_column("detail")
    for check in checks:
        mark = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[yellow]not run[/]"}
        table.add_row(check.name, mark[check.ok], f"{check.seconds * 1000:.0f} ms", check.detail)
    console.print(table)
    ran = [c for c in checks if c.ok is not None]
    passed = sum(bool(c.ok) for c in ran)
    skipped = len(checks) - len(ran)
    console.print(
        f"{passed}/{len(ran)} checks passed" + (f", {skipped} not run" if skipped else "")
    )
