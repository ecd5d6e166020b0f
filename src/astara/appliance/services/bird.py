"""bird2 in one appliance's namespace: IPv6 router advertisements and the BGP uplink.

Owns one bird process per appliance and, in ``state_dir`` (shared with the
other services, so every name starts with ``bird``): ``bird.conf`` (the text
bird runs), ``bird.ctl`` (its control socket), ``bird.pid``, ``bird.log`` and
``bird.log.old``, and the short-lived scratch file ``bird.check.conf``.
Driven by ``astara.appliance.router`` through the ``Service`` protocol.

Invariants:
- bird runs exactly when the plan gives it something to do (internal IPv6 or
  BGP); otherwise it is stopped and its files are gone;
- ``bird.conf`` is replaced only after ``bird -p`` accepted the new text, and
  a changed text is loaded with ``birdc configure``: bird is never restarted
  for a change, so the BGP session and the RA schedule carry on;
- ``bird.conf`` is what bird runs: it is written just before ``birdc configure``
  (or the start) and put back if that fails, so the same plan twice is
  recognised from the file alone, also by a restarted agent;
- bird outlives the agent; a new agent finds it again through ``bird.pid``
  (checked against ``/proc``, see ``Daemon``) instead of starting a second.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from astara.appliance.errors import ApplyError, CommandError
from astara.appliance.plan import BgpPlan, PlannedNetwork, RouterPlan, same_networks
from astara.appliance.render.bird import BGP_PROTOCOL, render_bird
from astara.appliance.system.files import read_text, write_atomic
from astara.appliance.system.netns import Netns
from astara.appliance.system.process import Daemon

STEP = "bird"
_MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


class Bird:
    """Starts, reconfigures, inspects and stops the appliance's bird; see the module docstring."""

    def __init__(self, *, netns: Netns, state_dir: Path) -> None:
        self._netns = netns
        self._state_dir = state_dir
        self._rendered: (
            tuple[tuple[tuple[PlannedNetwork, ...], BgpPlan | None], str | None] | None
        ) = None
        self.conf_path = state_dir / "bird.conf"
        self.socket_path = state_dir / "bird.ctl"
        self.pid_path = state_dir / "bird.pid"
        self.log_path = state_dir / "bird.log"
        if len(str(self.socket_path).encode()) > _MAX_SOCKET_PATH:
            raise ValueError(f"control socket path too long for bird: {self.socket_path}")
        self._daemon = Daemon(
            name="bird",
            argv=[
                "bird",
                "-f",
                "-c",
                str(self.conf_path),
                "-s",
                str(self.socket_path),
                "-P",
                str(self.pid_path),
            ],
            pid_file=self.pid_path,
            marker=str(self.conf_path),
            netns=netns,
        )

    async def check(self, plan: RouterPlan) -> None:
        """Have ``bird -p`` parse the config for ``plan``; change nothing.

        Raises ApplyError with bird's message if it rejects the text.
        """
        text = self._render(plan)
        # what bird already runs was checked when it was loaded
        if text is not None and text != read_text(self.conf_path):
            await self._check_text(text)

    async def apply(self, plan: RouterPlan) -> bool:
        """Make bird run the config for ``plan``; True if anything changed. Idempotent.

        Nothing to do: stop bird. Not running (a bird left by an earlier agent
        counts as running, found through ``bird.pid``): start it. Changed text:
        ``birdc configure``. Same text while running: touch nothing. Raises ApplyError if bird rejects the text,
        fails to start or to reconfigure; ``bird.conf`` then holds the previous
        text again and a running bird keeps its previous config.
        """
        text = self._render(plan)
        if text is None:
            present = self.pid() is not None or self.conf_path.exists()
            await self.stop()
            return present
        previous = read_text(self.conf_path)
        running = self.pid() is not None
        if running and text == previous:
            return False
        if text != previous:
            await self._check_text(text)
            write_atomic(self.conf_path, text)
        try:
            if running:
                await self._birdc(["configure"])
            else:
                await self._start()
        except ApplyError:
            self._put_back(previous)
            raise
        return True

    def pid(self) -> int | None:
        """bird's pid if it runs (ours or adopted through its pid file), else None."""
        return self._daemon.pid()

    async def stop(self) -> None:
        """Stop bird (SIGTERM: BGP peers get a Cease, RAs a zero lifetime); remove its files.

        Idempotent.
        """
        await self._daemon.stop()
        for path in (
            self.conf_path,
            self.socket_path,
            self.pid_path,
            self.log_path,
            self.log_path.with_name(f"{self.log_path.name}.old"),
            self._scratch_path,
        ):
            path.unlink(missing_ok=True)

    async def bgp_state(self) -> str | None:
        """The BGP session state ("Established", "Active", "Connect", ...), for diagnostics.

        None if bird does not run or has no BGP session. Never raises for a
        bird that cannot answer.
        """
        if self.pid() is None:
            return None
        try:
            out = await self._birdc(["show", "protocols", "all", BGP_PROTOCOL])
        except ApplyError:
            return None
        for line in out.splitlines():
            key, _, value = line.strip().partition(":")
            if key == "BGP state":
                return value.strip() or None
        return None

    # -- internals ----------------------------------------------------------------
    @property
    def _scratch_path(self) -> Path:
        return self._state_dir / "bird.check.conf"

    def _render(self, plan: RouterPlan) -> str | None:
        # The text depends on the networks and the BGP session only; unchanged
        # networks keep their planned objects from push to push, so the same
        # objects and the same BGP plan mean the same text (the memo holds them).
        key = (plan.networks, plan.bgp)
        memo = self._rendered
        if memo is None or memo[0][1] != key[1] or not same_networks(memo[0][0], key[0]):
            memo = self._rendered = (key, render_bird(plan, log_file=self.log_path))
        return memo[1]

    async def _check_text(self, text: str) -> None:
        self._state_dir.mkdir(parents=True, exist_ok=True)
        scratch = self._scratch_path
        scratch.write_text(text)
        try:
            await self._netns.run(["bird", "-p", "-c", str(scratch)])
        except CommandError as exc:
            raise ApplyError(STEP, f"bird rejected the config: {exc.output.strip()}") from exc
        finally:
            scratch.unlink(missing_ok=True)

    async def _start(self) -> None:
        try:
            await self._daemon.start()
        except (RuntimeError, OSError) as exc:
            raise ApplyError(STEP, f"bird did not start: {exc}") from exc

    async def _birdc(self, args: list[str], timeout: float = 10.0) -> str:
        """Run one birdc command; its output, or ApplyError with what it printed."""
        # birdc prints bird's refusals on stdout, so both streams are kept together
        argv = self._netns.command(["birdc", "-s", str(self.socket_path), *args])
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise ApplyError(STEP, f"birdc {' '.join(args)}: no answer in {timeout}s") from None
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise ApplyError(STEP, f"birdc {' '.join(args)}: {_without_banner(text)}")
        return text

    def _put_back(self, previous: str | None) -> None:
        if previous is None:
            self.conf_path.unlink(missing_ok=True)
        else:
            write_atomic(self.conf_path, previous)


def _without_banner(text: str) -> str:
    """birdc's output without its "BIRD x.y.z ready." greeting."""
    lines = [line for line in text.splitlines() if not line.startswith("BIRD ")]
    return " ".join(line.strip() for line in lines if line.strip()) or "no output"
