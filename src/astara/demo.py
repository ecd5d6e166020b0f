"""``astara demo``: an appliance at work in scratch namespaces, every path checked.

Builds the one-router scenario (``astara.scenario``), starts an agent for it,
pushes one configuration through the appliance API exactly as the
orchestrator does, then proves each path with real packets and prints a table
of checks with timings. Everything is removed at the end (or left running
with ``--keep`` until Enter is pressed). Exit status 0 only if every check passed.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from astara import scenario as sc
from astara.lab import Lab, LabError


@dataclass
class Check:
    name: str
    ok: bool
    seconds: float
    detail: str


def _timed(name: str, probe: Callable[[], tuple[bool, str]], *, retry_for: float = 0.0) -> Check:
    start = time.monotonic()
    ok, detail = False, ""
    while True:
        try:
            ok, detail = probe()
        except (LabError, subprocess.SubprocessError, OSError, httpx.HTTPError) as exc:
            ok, detail = False, str(exc).splitlines()[0][:120]
        if ok or time.monotonic() - start >= retry_for:
            break
        time.sleep(0.1)
    return Check(name, ok, time.monotonic() - start, detail)


def _checks(
    s: sc.RouterScenario, client: httpx.Client, metadata: sc.FakeMetadata, bgp: Path
) -> list[Check]:
    lab = s.lab
    resolve = "import socket,sys; print(socket.gethostbyname(sys.argv[1]))"
    fetch = (
        "import urllib.request; print(urllib.request.urlopen("
        "'http://169.254.169.254/latest/meta-data/instance-id', timeout=5).read().decode())"
    )
    external = sc.EXTERNAL_V4.split("/")[0]

    def slaac() -> tuple[bool, str]:
        out = lab.run(
            s.vm1, ["ip", "-6", "-o", "address", "show", "dev", "eth0", "scope", "global"]
        )
        found = [w for w in out.split() if w.startswith("2001:db8:1:")]
        return bool(found), found[0] if found else "no address yet"

    def dhcp(vm: str, want: str) -> tuple[bool, str]:
        got = lab.dhcp(vm)
        return got == want, got

    def peer(ns: str, target: str, want: str) -> tuple[bool, str]:
        seen = s.ask_peer(ns, target, 8080)
        return seen == want, f"outside saw {seen}" if ns != s.outside else f"vm2 saw {seen}"

    return [
        _timed("DHCP: vm1 gets its reserved address", lambda: dhcp(s.vm1, "10.0.1.10")),
        _timed("DHCP: vm2 gets its reserved address", lambda: dhcp(s.vm2, "10.0.2.10")),
        _timed(
            "DNS: vm1 resolves vm2 by name",
            lambda: _eq(lab.run(s.vm1, ["python3", "-c", resolve, "vm2"]).strip(), "10.0.2.10"),
        ),
        _timed(
            "east-west: vm1 pings vm2 across subnets",
            lambda: _has(
                lab.run(s.vm1, ["ping", "-c1", "-W2", "10.0.2.10"], check=False), "1 received"
            ),
        ),
        _timed(
            "SNAT: vm1 reaches outside as the router", lambda: peer(s.vm1, sc.GATEWAY_V4, external)
        ),
        _timed(
            "floating IP: outside reaches vm2",
            lambda: peer(s.outside, sc.FLOATING_IP, sc.GATEWAY_V4),
        ),
        _timed(
            "hairpin: vm1 reaches vm2's floating IP",
            lambda: _ok_not_error(s.ask_peer(s.vm1, sc.FLOATING_IP, 8080)),
        ),
        _timed(
            "metadata: vm1 reads 169.254.169.254",
            lambda: _eq(
                lab.run(s.vm1, ["python3", "-c", fetch]).strip(), sc.FakeMetadata.answer.decode()
            ),
        ),
        _timed(
            "metadata: instance identity forwarded",
            lambda: _eq(_last_header(metadata, "X-Instance-ID"), "dev-vm1"),
        ),
        _timed("IPv6: vm1 autoconfigures by SLAAC", slaac, retry_for=20),
        _timed(
            "BGP: outside learns the tenant prefix",
            lambda: _has(s.bgp_routes(bgp), sc.TENANT_V6),
            retry_for=20,
        ),
        _timed(
            "health: /v1/status/ reports v4",
            lambda: _eq(str(client.get("/v1/status/").json()["v4"]), "True"),
        ),
        _timed(
            "isolation: outside cannot reach vm1's private address",
            lambda: _ok_error(s.ask_peer(s.outside, "10.0.1.10", 8080, timeout=1)),
        ),
    ]


def _last_header(metadata: sc.FakeMetadata, name: str) -> str:
    return metadata.requests[-1].get(name, "") if metadata.requests else ""


def _eq(got: str, want: str) -> tuple[bool, str]:
    return got == want, got


def _has(text: str, needle: str) -> tuple[bool, str]:
    return needle in text, needle if needle in text else "not yet"


def _ok_not_error(answer: str) -> tuple[bool, str]:
    return not answer.startswith("error"), answer


def _ok_error(answer: str) -> tuple[bool, str]:
    return answer.startswith("error"), "refused/timed out" if answer.startswith("error") else answer


def run_demo(*, keep: bool, console: Console | None = None) -> int:
    """Build, prove, print, clean up. Returns the process exit status."""
    console = console or Console()
    workdir = Path(tempfile.mkdtemp(prefix="astara-demo-"))
    workdir.chmod(0o755)  # dnsmasq reads its files after dropping root
    token = secrets.token_urlsafe(24)
    token_file = workdir / "token"
    token_file.write_text(token)
    try:
        return _run_in_lab(workdir, token, token_file, keep=keep, console=console)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_in_lab(
    workdir: Path, token: str, token_file: Path, *, keep: bool, console: Console
) -> int:
    with Lab("astara-demo", link_tag="astdemo") as lab:
        console.print(
            "[bold]Astara demo[/]: one appliance, two tenant networks, a pretend internet"
        )
        s = sc.build(lab, workdir / "scenario")
        metadata = sc.FakeMetadata(str(s.mgmt_host))
        agent = lab.spawn(None, sc.agent_command(s, token_file=token_file))
        client = httpx.Client(
            base_url=f"http://[{s.mgmt_router}]:5000",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        try:
            sc.wait_for_api(client, agent)
            bgp = s.start_bgp_peer()
            s.start_echo_peer(s.outside, sc.GATEWAY_V4, 8080)
            s.start_echo_peer(s.vm2, "0.0.0.0", 8080)
            s.start_echo_peer(s.vm1, "0.0.0.0", 8080)
            start = time.monotonic()
            response = client.put("/v1/system/config/", json=s.config(metadata_port=metadata.port))
            applied = time.monotonic() - start
            if response.status_code != 200:
                console.print(f"[red]the appliance refused the configuration:[/] {response.text}")
                return 1
            console.print(f"configuration applied in {applied * 1000:.0f} ms; checking every path")
            checks = _checks(s, client, metadata, bgp)
            _print(console, checks)
            if keep:
                _pause(console, s)
            return 0 if all(c.ok for c in checks) else 1
        finally:
            client.close()
            metadata.close()
            s.drop_appliance()
            console.print("cleaned up: namespaces, links and processes removed")


def _print(console: Console, checks: list[Check]) -> None:
    table = Table(title="Astara appliance: what one PUT did")
    table.add_column("check")
    table.add_column("result")
    table.add_column("time", justify="right")
    table.add_column("detail")
    for check in checks:
        mark = "[green]pass[/]" if check.ok else "[red]FAIL[/]"
        table.add_row(check.name, mark, f"{check.seconds * 1000:.0f} ms", check.detail)
    console.print(table)
    failed = sum(not c.ok for c in checks)
    console.print(f"{len(checks) - failed}/{len(checks)} checks passed")


def _pause(console: Console, s: sc.RouterScenario) -> None:
    console.print(
        f"\nLeft running. Try:\n  ip netns exec {s.vm1} ping 10.0.2.10\n"
        f"  ip netns exec {s.router} nft list ruleset\n"
        f"  curl -H 'Authorization: Bearer <token in {s.workdir.parent}/token>' "
        f"http://[{s.mgmt_router}]:5000/v1/system/interfaces\n"
        "Press Enter to clean up."
    )
    with contextlib.suppress(EOFError):
        sys.stdin.readline()
