"""``astara demo``, the README's first command: the full topology, every check, nothing left.

The demo runs for real as a subprocess, isolated from a developer's ``astara
up`` by its flags: namespaces ``test-<run>-d-…`` (the outside namespace is
``test-<run>-d-demo-outside``), fabric links ``t<run>d-…``, its own management
bridge and ULA prefix, free ports for the network, admin and metadata APIs, a
state directory and a servers' directory in a ``test-<run>-…`` scratch
directory (so the session's leak check sees a leaked process by its command
line).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from astara.lab import vlan_supported
from tests.conftest import RUN, run_prefix

pytestmark = pytest.mark.netns

NETNS_PREFIX = f"{run_prefix()}-d-"
FABRIC_PREFIX = f"t{RUN}d-"
ROWS = (
    "DHCP:",
    "DNS:",
    "east-west:",
    "SNAT:",
    "floating IP:",
    "hairpin:",
    "metadata:",
    "IPv6:",
    "BGP:",
    "isolation:",
    "VLAN:",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _left() -> dict[str, list[str]]:
    """Namespaces, links and processes with this test's prefixes."""
    namespaces = [n for n in os.listdir("/run/netns") if n.startswith(NETNS_PREFIX)]
    namespaces += [n for n in os.listdir("/run/netns") if n.startswith(FABRIC_PREFIX)]
    links = [n for n in os.listdir("/sys/class/net") if n.startswith(f"t{RUN}d")]
    processes = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if NETNS_PREFIX in cmdline or FABRIC_PREFIX in cmdline:
                processes.append(cmdline.replace("\0", " "))
    return {
        k: v
        for k, v in {"namespaces": namespaces, "links": links, "processes": processes}.items()
        if v
    }


@pytest.fixture
def scratch() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix=f"{run_prefix()}-"))
    work.chmod(0o755)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _argv(scratch: Path, *extra: str) -> list[str]:
    mgmt = ipaddress.IPv6Network(f"fd00:a57d:{secrets.randbelow(0xFFFF):x}::/64")
    argv = [
        sys.executable,
        "-m",
        "astara.cli.main",
        "demo",
        "--url",
        f"http://127.0.0.1:{_free_port()}",
        "--state-dir",
        str(scratch / "up"),
        "--server-state-dir",
        str(scratch / "servers"),
        "--fabric-prefix",
        FABRIC_PREFIX,
        "--netns-prefix",
        NETNS_PREFIX,
        "--mgmt-bridge",
        f"t{RUN}dmgt",
        "--mgmt-prefix",
        str(mgmt),
        "--admin-port",
        str(_free_port()),
        "--metadata-port",
        str(_free_port()),
        *extra,
    ]
    return argv


ENV = {**os.environ, "COLUMNS": "200"}


def _demo(scratch: Path, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _argv(scratch, *extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=ENV,
    )


@pytest.mark.timeout(300)
def test_demo_passes_every_check_and_cleans_up(scratch: Path) -> None:
    assert _left() == {}, "a previous demo of this run is still there"
    done = _demo(scratch)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    rows = {row: line for line in out.splitlines() for row in ROWS if f"│ {row}" in line}
    assert set(rows) == set(ROWS), out
    vlan = vlan_supported(FABRIC_PREFIX)
    for row, line in rows.items():
        if row == "VLAN:" and not vlan:
            assert "not run" in line and "802.1Q" in line, line
        else:
            assert "│ pass" in line, line
    assert "FAIL" not in out
    assert "cleaned up" in out
    assert _left() == {}
    assert not (scratch / "up").exists()


@pytest.mark.timeout(300)
def test_keep_leaves_it_running_until_told_then_removes_it(scratch: Path) -> None:
    assert _left() == {}, "a previous demo of this run is still there"
    log = scratch / "demo.out"
    with log.open("w") as out:
        demo = subprocess.Popen(
            [*_argv(scratch, "--keep")],
            stdin=subprocess.DEVNULL,  # no terminal: it waits for a signal
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=ENV,
        )
    try:
        deadline = time.monotonic() + 240
        while "Press Enter" not in log.read_text():
            assert demo.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        # still there: the namespaces of the appliances, servers and outside
        assert len(_left().get("namespaces", [])) >= 3, _left()
        assert "Left running. What to try next:" in log.read_text()
        time.sleep(1)
        assert demo.poll() is None, "it did not wait"
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=120) == 0, log.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert "cleaned up" in log.read_text()
    assert _left() == {}
