"""DHCP and DNS for one appliance: one dnsmasq in its namespace, converged by diff.

Called by ``astara.appliance.router`` (check, apply, stop), one call at a time
per appliance. Owns ``<state_dir>/dnsmasq/`` and everything in it (the conf,
the DHCP hosts and options files, the names file, the lease file, the pid
file, a digest of what the running dnsmasq has loaded) and the dnsmasq process
started with that conf; ``stop()`` removes all of them.

Invariants:
- at most one dnsmasq per appliance. A restarted agent finds the running one
  through its pid file (``Daemon.pid`` checks the pid still runs our conf) and
  adopts it; it never starts a second.
- what dnsmasq runs with passed ``dnsmasq --test`` first (the hosts and
  options lines too, inlined, because ``--test`` does not read those files).
- a change to the hosts, options or names files is a SIGHUP (dnsmasq re-reads
  them, keeps its pid and its leases); only a change of the main conf restarts
  it; the same plan twice touches nothing.
- the ``loaded`` digest is written only after dnsmasq has been started or
  signalled with the files it describes, and removed before acting, so an
  agent that dies half-way restarts dnsmasq on its next apply rather than
  trusting files the daemon never read.
- dnsmasq drops root for its unprivileged user (``nobody`` on Debian) and
  re-reads files as that user: the directory is 0755 and the files 0644, and
  ``state_dir``'s parents must be searchable by others.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import signal
import stat
import tempfile
from pathlib import Path

from astara.appliance.errors import ApplyError, CommandError
from astara.appliance.plan import PlannedNetwork, RouterPlan, same_networks
from astara.appliance.render.dnsmasq import DnsmasqFiles, DnsmasqPaths, render_dnsmasq
from astara.appliance.system.files import read_text, write_atomic
from astara.appliance.system.netns import Netns
from astara.appliance.system.process import Daemon

log = logging.getLogger(__name__)

STEP = "dnsmasq"
_ERROR_LINE = re.compile(r"^(?:dnsmasq: )?(?P<reason>.*) at line (?P<line>\d+) of \S+$")


class Dnsmasq:
    """The dnsmasq of one appliance (namespace ``netns``), its files under ``state_dir``."""

    def __init__(self, *, netns: Netns, state_dir: Path) -> None:
        self.netns = netns
        self.state_dir = state_dir
        self.directory = state_dir / "dnsmasq"
        self.paths = DnsmasqPaths.in_dir(self.directory)
        self._loaded = self.directory / "loaded"
        self._rendered: tuple[tuple[PlannedNetwork, ...], DnsmasqFiles | None] | None = None
        conf_arg = f"--conf-file={self.paths.conf}"
        self._daemon = Daemon(
            name="dnsmasq",
            argv=["dnsmasq", "--keep-in-foreground", conf_arg],
            pid_file=self.paths.pid,
            marker=conf_arg,
            netns=netns,
        )

    def _render(self, plan: RouterPlan) -> DnsmasqFiles | None:
        # The files depend on the internal networks only. Unchanged networks keep
        # their planned objects from push to push (plan.build_plan), so the same
        # objects mean the same files: a big router is not rendered again for,
        # say, a floating-IP change. The memo holds the objects, so no id is reused.
        internals = plan.internals
        if self._rendered is None or not same_networks(self._rendered[0], internals):
            self._rendered = (internals, render_dnsmasq(plan, self.paths))
        return self._rendered[1]

    def pid(self) -> int | None:
        """The pid of this appliance's dnsmasq (ours or adopted), or None."""
        return self._daemon.pid()

    async def check(self, plan: RouterPlan) -> None:
        """Have ``dnsmasq --test`` judge what ``plan`` renders; raise ApplyError if refused.

        Writes only a scratch directory, removed before returning.
        """
        files = self._render(plan)
        if files is None:
            return
        loaded = f"{_digest(files.conf)} {_digest(_data(files))}\n"
        if read_text(self._loaded) == loaded and self.pid() is not None:
            return  # what dnsmasq already runs was tested when it was loaded
        await self._test(files)

    async def apply(self, plan: RouterPlan) -> bool:
        """Converge dnsmasq on ``plan``; True if anything changed. Idempotent.

        Raises ApplyError if dnsmasq refuses the files or does not start; the
        caller then applies the previous plan again, which restarts dnsmasq.
        """
        files = self._render(plan)
        if files is None:
            return await self._remove()
        conf_digest, data_digest = _digest(files.conf), _digest(_data(files))
        loaded = read_text(self._loaded)
        pid = self.pid()
        if pid is not None and loaded == f"{conf_digest} {data_digest}\n":
            await asyncio.to_thread(self._write, files)  # repairs files removed behind our back
            return False
        await self._test(files)
        self._loaded.unlink(missing_ok=True)
        await asyncio.to_thread(self._write, files)
        if pid is None:
            await self._start()
        elif loaded is None or loaded.split()[0] != conf_digest:
            log.info("%s: dnsmasq conf changed, restarting", self.netns.label)
            await self._daemon.stop()
            await self._start()
        elif self._daemon.signal(signal.SIGHUP):
            log.info("%s: dnsmasq reloads hosts and options (SIGHUP)", self.netns.label)
        else:
            await self._start()  # it died between pid() and the signal
        write_atomic(self._loaded, f"{conf_digest} {data_digest}\n")
        return True

    async def stop(self) -> None:
        """Stop dnsmasq and remove its files and leases; idempotent."""
        await self._remove()

    # -- internals ------------------------------------------------------------------
    async def _start(self) -> None:
        try:
            pid = await self._daemon.start()
        except RuntimeError as exc:
            raise ApplyError(STEP, f"did not start: {exc}") from exc
        log.info("%s: dnsmasq started, pid %d", self.netns.label, pid)

    async def _remove(self) -> bool:
        """Stop the daemon and delete our directory; True if either existed."""
        was_running = self.pid() is not None
        await self._daemon.stop()
        return await asyncio.to_thread(self._delete_files) or was_running

    def _write(self, files: DnsmasqFiles) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)  # dnsmasq reads the files after dropping root
        _check_searchable(self.state_dir)
        paths = self.paths
        for path, text in (
            (paths.hosts, files.hosts),
            (paths.opts, files.opts),
            (paths.addn_hosts, files.addn_hosts),
            (paths.conf, files.conf),
        ):
            write_atomic(path, text)

    def _delete_files(self) -> bool:
        if not self.directory.exists():
            return False
        for path in self.directory.iterdir():
            path.unlink()
        self.directory.rmdir()
        return True

    async def _test(self, files: DnsmasqFiles) -> None:
        """Run ``dnsmasq --test`` on a scratch copy of ``files`` inside the namespace."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".dnsmasq-check-", dir=self.state_dir) as tmp:
            conf = Path(tmp) / "check.conf"
            scratch = _conf_for_test(files, self.paths, DnsmasqPaths.in_dir(Path(tmp)))
            await asyncio.to_thread(conf.write_text, scratch)
            try:
                await self.netns.run(["dnsmasq", "--test", f"--conf-file={conf}"], timeout=10)
            except CommandError as exc:
                raise ApplyError(STEP, _reason(exc, scratch)) from exc


def _check_searchable(directory: Path) -> None:
    """Raise ApplyError unless every directory down to ``directory`` is o+x.

    dnsmasq reads its hosts, options and names files (at start too) as its
    unprivileged user; through a 0700 parent it would run with no reservation
    and no name, and say so only in its log.
    """
    for path in (directory, *directory.parents):
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            raise ApplyError(
                STEP,
                f"{path} (mode {stat.S_IMODE(mode):o}) is not searchable by others; dnsmasq "
                "reads its files as an unprivileged user, so state_dir and its parents need o+x",
            )


def _conf_for_test(files: DnsmasqFiles, real: DnsmasqPaths, scratch: DnsmasqPaths) -> str:
    """The conf pointed at scratch paths, with the hosts and options lines inlined.

    ``dnsmasq --test`` parses only configuration files; a line of the hosts
    file is a ``dhcp-host`` value and a line of the options file a
    ``dhcp-option`` value, so inlining them has the same lines checked.
    """
    conf = files.conf
    for old, new in zip(_path_values(real), _path_values(scratch), strict=True):
        conf = conf.replace(f"={old}\n", f"={new}\n")
    inline = [f"dhcp-host={line}" for line in _values(files.hosts)]
    inline += [f"dhcp-option={line}" for line in _values(files.opts)]
    return conf + "".join(f"{line}\n" for line in inline)


def _path_values(paths: DnsmasqPaths) -> tuple[Path, ...]:
    return (paths.pid, paths.leases, paths.hosts, paths.opts, paths.addn_hosts)


def _values(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def _data(files: DnsmasqFiles) -> str:
    return "\0".join((files.hosts, files.opts, files.addn_hosts))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _reason(exc: CommandError, conf: str) -> str:
    """dnsmasq's complaint, with the offending line quoted instead of its number."""
    message = exc.output.strip().splitlines()[-1] if exc.output.strip() else str(exc)
    match = _ERROR_LINE.match(message)
    if match is None:
        return message.removeprefix("dnsmasq: ")
    lines = conf.splitlines()
    number = int(match["line"])
    quoted = lines[number - 1] if 0 < number <= len(lines) else f"line {number}"
    return f"{match['reason']}: {quoted}"
