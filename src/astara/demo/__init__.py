"""``astara demo``: the whole of Astara on this host, built through its API, every path proven.

``run_demo`` starts ``astara up`` (unless a network API already answers at
``--url``: that one is used and left running), with an ``outside`` namespace
playing the internet on TEST-NET addresses as its ``physnet1`` uplink and a
BGP peer there; builds two projects' networks, routers, servers and floating
IPs through the API (``topology``), shows convergence with a progress bar
(routers ACTIVE, servers leased), proves each path (``checks``) and prints the
table. Then everything is removed — servers, ``astara up`` (SIGTERM by its
pid, then ``astara down`` with the same flags), ``outside`` and the veths —
also on failure and Ctrl-C; ``--keep`` leaves it running and says what to try
until Enter (or Ctrl-C, or SIGTERM) is pressed, then removes it the same way.
Exit status 0 only if no check failed.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from astara.demo import topology as tp
from astara.demo.api import Api, DemoError, answers
from astara.demo.checks import Prover, print_table, run_checks
from astara.demo.host import Host, Options, down, make_outside, start_bgp_peer, start_up, stop_up
from astara.fabric import FabricError
from astara.lab import Lab, LabError, vlan_supported
from astara.network.workloads import WorkloadError

__all__ = ["Options", "run_demo"]

EXPECTED = (DemoError, LabError, FabricError, WorkloadError, OSError)


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(opts: Options, console: Console | None = None) -> int:
    """Build, prove, print, clean up. Returns the process exit status."""
    console = console or Console()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    previous = signal.signal(signal.SIGTERM, _terminate)
    opts.workdir = Path(tempfile.mkdtemp(prefix=f"{opts.netns_prefix}demo-"))
    opts.workdir.chmod(0o755)
    try:
        return _run(opts, console)
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(opts.workdir, ignore_errors=True)


def _run(opts: Options, console: Console) -> int:
    own = not answers(opts.url)
    vlan = vlan_supported(opts.fabric_prefix)
    lab = Lab(f"{opts.netns_prefix}demo", link_tag=f"{opts.fabric_prefix[:9]}d")
    host: Host | None = None
    topo = tp.Topology(url=opts.url)
    status = 1
    try:
        console.print(
            "[bold]Astara demo[/]: two projects, routers, servers, floating IPs, a pretend internet"
        )
        if not vlan:
            console.print("this kernel has no 802.1Q VLAN support: the VLAN network is not plugged")
        if own:
            host = make_outside(lab, vlan=vlan)
            start = time.monotonic()
            start_up(host, opts)
            console.print(
                f"astara up started in {time.monotonic() - start:.1f} s"
                f" (pid {host.up.pid if host.up else '?'}, log {host.up_log})"
            )
        else:
            console.print(f"using the astara up already answering at {opts.url} (left running)")
        uplinks = host.uplinks if host else {}
        start = time.monotonic()
        tp.build(topo, opts, external=own, vlan=vlan)
        tp.create_servers(topo, opts, uplinks)
        if own and host is not None:
            _floating_ips(topo)
            neighbours = _router_v6_addresses(topo)
            start_bgp_peer(host, opts.workdir, neighbours)
        _converge(topo, opts, uplinks, console, host)
        console.print(
            f"built and converged in {time.monotonic() - start:.1f} s; checking every path"
        )
        prover = Prover(lab, topo, host, opts.fabric_prefix)
        checks = run_checks(prover, topo, vlan=vlan)
        print_table(console, checks)
        status = 0 if not any(c.ok is False for c in checks) else 1
        if opts.keep:
            _next_steps(console, opts, topo)
            _wait_for_the_user(console)
        return status
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: cleaning up")
        return 130
    except EXPECTED as exc:
        console.print(f"[red]astara demo:[/] {exc}")
        for note in getattr(exc, "__notes__", ()):
            console.print(f"[red]astara demo:[/] {note}")
        return 1
    finally:
        _clean(opts=opts, topo=topo, host=host, lab=lab, own=own, console=console)


def _wait_for_the_user(console: Console) -> None:
    """With ``--keep``: everything stays until Enter, Ctrl-C or SIGTERM, then is removed."""
    console.print("\n[bold]Press Enter (or Ctrl-C) to remove it all.[/]")
    try:
        try:
            input()
        except EOFError:  # no terminal: wait for a signal
            while True:
                signal.pause()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (see _terminate)
        pass


def _floating_ips(topo: tp.Topology) -> None:
    """One floating IP per project, on its third server (on the project's second network)."""
    assert topo.external is not None
    for key in tp.PROJECTS:
        server = topo.servers[f"demo-{key}3"]
        api = topo.api(key)
        try:
            fip = api.create(
                "floatingips",
                floating_network_id=topo.external["id"],
                port_id=server.port["id"],
            )
        finally:
            api.close()
        topo.floating[key] = fip["floating_ip_address"]
        topo.floating_server[key] = server.name


def _router_v6_addresses(topo: tp.Topology) -> list[str]:
    found = []
    for key, router in topo.routers.items():
        api = topo.api(key)
        try:
            info = api.get("routers", router["id"])["external_gateway_info"] or {}
        finally:
            api.close()
        found += [
            f["ip_address"] for f in info.get("external_fixed_ips", []) if ":" in f["ip_address"]
        ]
    return found


def _converge(
    topo: tp.Topology, opts: Options, uplinks: dict[str, str], console: Console, host: Host | None
) -> None:
    """The progress bar: routers ACTIVE, servers leased; DemoError naming the laggard."""
    deadline = time.monotonic() + opts.timeout
    where = f"see {opts.state_dir}/agent.log" + (
        f" and {host.up_log}" if host and host.up_log else ""
    )
    statuses: dict[str, str] = {}
    leased: set[str] = set()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        routers = progress.add_task("routers ACTIVE   ", total=len(topo.routers))
        servers = progress.add_task("servers leased   ", total=len(topo.servers))
        while True:
            admin = Api(opts.url)
            try:
                for router in topo.routers.values():
                    statuses[router["name"]] = admin.get("routers", router["id"])["status"]
            finally:
                admin.close()
            if len(leased) < len(topo.servers):
                leased = tp.leased(topo, opts, uplinks)
            active = sum(s == "ACTIVE" for s in statuses.values())
            progress.update(routers, completed=active)
            progress.update(servers, completed=len(leased))
            if active == len(statuses) and len(leased) == len(topo.servers):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.3)
    lagging = [f"router {n} is {s}" for n, s in statuses.items() if s != "ACTIVE"]
    if lagging:
        raise DemoError(
            f"routers did not become ACTIVE within {opts.timeout:.0f} s: {', '.join(lagging)} — {where}"
        )
    missing = sorted(set(topo.servers) - leased)
    raise DemoError(
        f"servers got no DHCP lease within {opts.timeout:.0f} s: {', '.join(missing)} — {where}"
    )


def _clean(
    *, opts: Options, topo: tp.Topology, host: Host | None, lab: Lab, own: bool, console: Console
) -> None:
    problems: list[str] = []
    uplinks = host.uplinks if host else {}
    with contextlib.suppress(KeyboardInterrupt):
        try:
            if topo.servers:
                problems += tp.delete_servers(topo, opts, uplinks)
        except EXPECTED as exc:
            problems.append(f"servers: {exc}")
        if own and host is not None:
            stop_up(host)
            said = down(host, opts)
            if said:
                problems.append(f"astara down: {said}")
        else:
            for step in reversed(topo.undo):
                try:
                    step()
                except EXPECTED as exc:
                    problems.append(str(exc))
    lab.close()
    for problem in problems:
        console.print(f"[red]cleanup:[/] {problem}")
    console.print("cleaned up: servers, routers, astara up, outside and its links removed")


def _next_steps(console: Console, opts: Options, topo: tp.Topology) -> None:
    url = opts.url
    admin = f"--admin-url http://127.0.0.1:{opts.admin_port} --admin-token-file {opts.state_dir}/admin-token"
    server_flags = []
    if opts.fabric_prefix != "astara-":
        server_flags.append(f"--fabric-prefix {opts.fabric_prefix}")
    if opts.server_state_dir:
        server_flags.append(f"--state-dir {opts.server_state_dir}")
    sflags = " ".join(server_flags)
    a1 = topo.servers.get("demo-a1")
    lines = [
        "",
        "[bold]Left running. What to try next:[/]",
        f"  openstack --os-auth-type none --os-endpoint {url} network list",
        f"  curl -s -H 'X-Project-Id: {tp.PROJECTS['a']}' {url}/v2.0/routers",
        f"  astara router list {admin}",
        f"  astara server list {sflags}".rstrip(),
    ]
    if a1 is not None:
        lines.append(
            f"  astara server exec {sflags + ' ' if sflags else ''}demo-a1 -- ping -c2 {topo.servers['demo-a3'].address}"
        )
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
