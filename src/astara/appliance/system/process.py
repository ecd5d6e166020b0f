"""Daemons the agent owns (dnsmasq, bird): start, find again, signal, stop.

A daemon runs in its appliance's namespace, in the foreground as our child
(so we learn at once if it dies), in a session of its own (so Ctrl-C on the
agent's terminal does not reach it), and writes a pid file. The pid file is
how a restarted agent finds the daemons it started before: daemons outlive
the agent, so restarting the agent never interrupts DHCP, DNS or BGP.

The child is a plain ``subprocess.Popen`` reaped through a pidfd watched by
the event loop, not an asyncio subprocess: asyncio kills a child that still
runs when its transport is closed, which at the agent's exit would take DHCP
and BGP down with it.

A pid is trusted only if ``/proc/<pid>/cmdline`` still names our config
file, so a recycled pid is never signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from pathlib import Path

from astara.appliance.system.netns import Netns

log = logging.getLogger(__name__)


def install_child_watcher() -> None:
    """Watch children with pidfds: no thread per child, which matters at 1,000 appliances."""
    if hasattr(asyncio, "PidfdChildWatcher"):
        with contextlib.suppress(NotImplementedError, AttributeError, OSError):
            watcher = asyncio.PidfdChildWatcher()
            asyncio.set_child_watcher(watcher)
            with contextlib.suppress(RuntimeError):  # no running loop: attached when one starts
                watcher.attach_loop(asyncio.get_running_loop())


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # state is the field after the ")" that closes the command name
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


class Daemon:
    """One supervised daemon, identified by its pid file and a marker in its command line."""

    def __init__(
        self, *, name: str, argv: list[str], pid_file: Path, marker: str, netns: Netns
    ) -> None:
        self.name = name
        self.argv = argv
        self.pid_file = pid_file
        self.marker = marker
        self.netns = netns
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None

    def pid(self) -> int | None:
        """The daemon's pid if it is running, else None."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return None
        if self.marker not in cmdline or not _alive(pid):
            return None
        return pid

    async def start(self) -> int:
        """Start the daemon (it must not be running); return its pid once it is up.

        Raises RuntimeError if it exits at once (a bad config, a busy port).
        """
        self.pid_file.unlink(missing_ok=True)
        proc = subprocess.Popen(
            self.netns.command(self.argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._watch(proc)
        for _ in range(50):
            if proc.poll() is not None:
                self._unwatch()
                raise RuntimeError(f"{self.name} exited with {proc.returncode} at start")
            if self.pid_file.exists():
                break
            await asyncio.sleep(0.01)
        return proc.pid

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        """Reap ``proc`` as soon as it exits, without a thread and without killing it later."""
        self._unwatch()
        self._proc = proc
        self._pidfd = os.pidfd_open(proc.pid)
        asyncio.get_running_loop().add_reader(self._pidfd, self._reaped)

    def _reaped(self) -> None:
        proc = self._proc
        self._unwatch()
        if proc is not None:
            code = proc.wait()
            if code not in (0, -signal.SIGTERM):
                log.warning("%s in %s exited with %s", self.name, self.netns.label, code)

    def _unwatch(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def signal(self, sig: int) -> bool:
        """Send ``sig``; False if the daemon is not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, sig)
        return True

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the daemon if it runs (idempotent); SIGKILL after ``timeout``."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            for _ in range(int(timeout / 0.02)):
                if (self._proc is not None and self._proc.poll() is not None) or not _alive(pid):
                    break
                await asyncio.sleep(0.02)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=timeout)
        self._unwatch()
        self._proc = None
        self.pid_file.unlink(missing_ok=True)
