"""``astara demo``, the README's first command, runs every check and leaves nothing behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

from astara.scenario import astara_executable


def _processes() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "astara-demo" in cmdline:
                found.append(cmdline.replace("\0", " "))
    return found


def _ours() -> tuple[str, str]:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return (
        "\n".join(n for n in namespaces.stdout.splitlines() if n.startswith("astara-demo")),
        "\n".join(line for line in links.stdout.splitlines() if "astdemo" in line),
    )


def test_demo_passes_every_check_and_cleans_up() -> None:
    assert _ours() == ("", ""), "a previous demo is still running"
    done = subprocess.run(
        [astara_executable(), "demo"], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "13/13 checks passed" in done.stdout
    assert "FAIL" not in done.stdout
    assert _ours() == ("", "")
    assert _processes() == []
