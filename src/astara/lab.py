"""A scratch lab of namespaces and veths for the demo and the dataplane tests.

Everything a Lab makes carries its prefix (``astara-demo-…``, ``test-…``) and
is removed by ``close()``: the processes it spawned (by pid), its namespaces,
its host-side links and its ``/etc/netns`` files. It only ever uses the
``ip`` command, so what it does can be replayed by hand.

Traffic stays inside what the lab creates: namespaces joined by veths, and
host-side veth ends that carry only addresses the lab assigns.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

NETNS_ETC = Path("/etc/netns")


class LabError(RuntimeError):
    """A lab command failed; the message has the command and what it printed."""


class Lab:
    """Namespaces, veths and processes under one prefix, all removed on ``close()``."""

    def __init__(self, prefix: str, *, link_tag: str | None = None) -> None:
        if len(prefix) > 24:
            raise ValueError("lab prefix must be at most 24 characters")
        self.prefix = prefix
        self.namespaces: list[str] = []
        self.host_links: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        # inode of every namespace made: a process still inside one after close() leaked
        self.netns_inodes: set[int] = set()
        self._ids = itertools.count()
        self._tag = link_tag or f"t{format(abs(hash(prefix)) % 0xFFFFF, '05x')}"
        if len(self._tag) > 11:
            raise ValueError("link tag must be at most 11 characters")

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ---------------------------------------------------------------
    def sh(self, argv: list[str], *, check: bool = True, timeout: float = 30) -> str:
        """Run a command on the host; return stdout; raise LabError if it fails."""
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise LabError(f"{' '.join(argv)}: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout.decode(errors="replace")

    def run(self, ns: str, argv: list[str], *, check: bool = True, timeout: float = 30) -> str:
        """Run a command inside namespace ``ns``."""
        return self.sh(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout)

    def spawn(
        self, ns: str | None, argv: list[str], *, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process (in ``ns``), stopped by ``close()``.

        Its stderr goes to ``log`` if given, else to a pipe nobody reads: give a
        log to anything that may write much.
        """
        full = argv if ns is None else ["ip", "netns", "exec", ns, *argv]
        if log is None:
            proc = subprocess.Popen(
                full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
            )
        else:
            with open(log, "ab") as sink:
                proc = subprocess.Popen(
                    full, stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True
                )
        self.processes.append(proc)
        return proc

    # -- topology -----------------------------------------------------------------
    def namespace(self, short: str) -> str:
        """Create ``<prefix>-<short>`` with loopback up and its own resolv.conf."""
        name = f"{self.prefix}-{short}"
        etc = NETNS_ETC / name
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("")
        self.namespaces.append(name)
        self.sh(["ip", "netns", "add", name])
        self.netns_inodes.add(os.stat(f"/run/netns/{name}").st_ino)
        self.run(name, ["ip", "link", "set", "lo", "up"])
        return name

    def host_name(self) -> str:
        """A fresh host-side interface name (at most 15 characters)."""
        return f"{self._tag}{next(self._ids)}"

    def veth(
        self,
        ns_a: str | None,
        if_a: str,
        ns_b: str | None,
        if_b: str,
        *,
        mac_a: str | None = None,
        mac_b: str | None = None,
    ) -> None:
        """Join ``ns_a:if_a`` to ``ns_b:if_b`` (None = the host, where the name is kept)."""
        tmp_a = if_a if ns_a is None else self.host_name()
        tmp_b = if_b if ns_b is None else self.host_name()
        self.sh(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b])
        for tmp, ns, name, mac in ((tmp_a, ns_a, if_a, mac_a), (tmp_b, ns_b, if_b, mac_b)):
            if ns is None:
                self.host_links.append(name)
                if mac:
                    self.sh(["ip", "link", "set", name, "address", mac])
                self.sh(["ip", "link", "set", name, "up"])
                continue
            move = ["ip", "link", "set", tmp, "netns", ns, "name", name]
            self.sh(move + (["address", mac] if mac else []))
            self.run(ns, ["ip", "link", "set", name, "up"])

    def address(self, ns: str | None, ifname: str, cidr: str) -> None:
        argv = ["ip", "address", "add", cidr, "dev", ifname]
        if ":" in cidr:
            argv.append("nodad")
        if ns is None:
            self.sh(argv)
        else:
            self.run(ns, argv)

    def route(self, ns: str, *spec: str) -> None:
        self.run(ns, ["ip", "route", "replace", *spec])

    def sysctl(self, ns: str, *settings: str) -> None:
        self.run(ns, ["sysctl", "-q", "-w", *settings])

    def vm(self, short: str) -> str:
        """A tenant 'VM': a namespace whose NIC ``eth0`` the caller plugs with ``veth``."""
        ns = self.namespace(short)
        self.sysctl(ns, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
        return ns

    def dhcp(self, ns: str, ifname: str = "eth0", timeout: float = 10) -> str:
        """Take an IPv4 lease with udhcpc (Debian's script applies it); return the address."""
        self.run(
            ns,
            [
                "udhcpc",
                "-i",
                ifname,
                "-f",
                "-q",
                "-n",
                "-t",
                "5",
                "-T",
                "1",
                "-s",
                "/etc/udhcpc/default.script",
            ],
            timeout=timeout,
        )
        out = self.run(ns, ["ip", "-4", "-o", "address", "show", "dev", ifname])
        for line in out.splitlines():
            return line.split()[3].split("/")[0]
        raise LabError(f"{ns}: no IPv4 address on {ifname} after DHCP")

    def wait_for(self, what: str, check: object, timeout: float = 10.0) -> None:
        """Poll ``check()`` until it returns true; raise LabError naming ``what`` on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if callable(check) and check():
                return
            time.sleep(0.05)
        raise LabError(f"timed out after {timeout}s waiting for {what}")

    # -- teardown -----------------------------------------------------------------
    def close(self) -> None:
        """Remove everything this lab made; safe to call twice."""
        for proc in self.processes:
            end_process(proc, group=True)
            if proc.stderr is not None:
                proc.stderr.close()
        self.processes.clear()
        for link in self.host_links:
            self.sh(["ip", "link", "del", link], check=False)
        self.host_links.clear()
        for ns in reversed(self.namespaces):
            self.sh(["ip", "netns", "del", ns], check=False)
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        self.namespaces.clear()


def kill_namespace(name: str, *, timeout: float = 10.0) -> list[int]:
    """Crash the appliance in namespace ``name`` the way a dying VM goes: abruptly, all at once.

    Every link in it but ``lo`` is deleted (a veth takes its peer with it,
    so its ports leave their bridges), every process running in it is
    SIGKILLed (by the pids ``ip netns pids`` lists: its dnsmasq, bird,
    haproxy, which an agent started for it), then the namespace's name is
    deleted. A socket another process holds in it (the agent's listener)
    keeps the kernel's namespace alive, but with no link it carries nothing.
    Returns the pids killed. Meant for fault tests and benchmarks only.
    """
    shown = subprocess.run(
        ["ip", "-j", "-n", name, "link", "show"],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    )
    for link in json.loads(shown.stdout or "[]"):
        ifname = str(link.get("ifname", ""))
        if ifname and ifname != "lo":
            subprocess.run(
                ["ip", "-n", name, "link", "del", ifname],
                capture_output=True,
                check=False,
                timeout=timeout,
            )
    listed = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, check=False, timeout=timeout
    )
    pids = [int(p) for p in listed.stdout.split() if p.isdigit()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=True, timeout=timeout)
    return pids


def vlan_supported(prefix: str = "astara-") -> bool:
    """Whether this kernel makes 802.1Q VLAN devices: tried on a scratch veth, then removed.

    The scratch links are ``<prefix>vq<pid>a``/``b`` and ``<prefix>vq<pid>v`` (at most
    15 characters: ``prefix`` is cut to fit); nothing carries traffic.
    """
    base = f"{prefix[:6]}vq{os.getpid() % 100000}"
    veth, peer, vlan = f"{base}a", f"{base}b", f"{base}v"

    def ip(*argv: str) -> bool:
        done = subprocess.run(["ip", *argv], capture_output=True, check=False, timeout=10)
        return done.returncode == 0

    if not ip("link", "add", veth, "type", "veth", "peer", "name", peer):
        return False
    try:
        made = ip("link", "add", "link", veth, "name", vlan, "type", "vlan", "id", "4000")
        if made:
            ip("link", "del", vlan)
        return made
    finally:
        ip("link", "del", veth)


def end_process(
    proc: subprocess.Popen[Any],
    *,
    sig: int = signal.SIGTERM,
    group: bool = False,
    timeout: float = 5.0,
) -> None:
    """End ``proc`` (started by us) by its pid: ``sig``, then SIGKILL after ``timeout`` s.

    ``group``: signal its process group (a process started in a session of its own,
    as ``Lab.spawn`` does). Nothing is sent to a process that already ended.
    """
    if proc.poll() is not None:
        return
    send = os.killpg if group else os.kill
    with contextlib.suppress(ProcessLookupError):
        send(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            send(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
