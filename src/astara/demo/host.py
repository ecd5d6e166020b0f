"""The demo's host side: its own ``astara up``, the ``outside`` namespace and its BGP peer.

``outside`` plays the internet on TEST-NET addresses (203.0.113.1/24,
2001:db8:ffff::1/64), joined by a veth whose host end is ``astara up``'s
``physnet1`` uplink. On a kernel with 802.1Q a second veth (both ends on the
host, carrying nothing) is ``physnet2``, the VLAN network's uplink. bird2 in
``outside`` peers with the routers (AS ``OUTSIDE_ASN``); its config and control
socket live in the demo's scratch directory. Everything is made through a
``Lab``, so it is named with the given prefixes and removed by its ``close()``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from astara.demo.api import DemoError
from astara.lab import Lab, end_process

OUTSIDE_V4 = "203.0.113.1"
OUTSIDE_V6 = "2001:db8:ffff::1"
EXTERNAL_V4 = "203.0.113.0/24"
EXTERNAL_V6 = "2001:db8:ffff::/64"
ROUTER_ASN = 64513
OUTSIDE_ASN = 64512
READY_TIMEOUT = 60.0


@dataclass
class Options:
    """What names and ports the demo (and the ``astara up`` it starts) use."""

    keep: bool = False
    url: str = "http://127.0.0.1:9696"
    state_dir: Path = Path("/var/lib/astara-demo")
    server_state_dir: Path | None = None
    fabric_prefix: str = "astara-"
    netns_prefix: str = "astara-"
    mgmt_bridge: str = "astara-mgt"
    mgmt_prefix: str | None = None
    admin_port: int = 44250
    metadata_port: int = 9697
    timeout: float = 60.0
    #: the demo's scratch directory (logs, bird's files); made by the runner
    workdir: Path = field(default_factory=lambda: Path("/tmp"))

    @property
    def host_port(self) -> tuple[str, int]:
        rest = self.url.split("://", 1)[-1].rstrip("/")
        host, _, port = rest.rpartition(":")
        return (host or "127.0.0.1"), int(port or 9696)

    def common_flags(self) -> list[str]:
        """The flags ``astara up`` and ``astara down`` share."""
        flags = [
            "--state-dir",
            str(self.state_dir),
            "--fabric-prefix",
            self.fabric_prefix,
            "--netns-prefix",
            self.netns_prefix,
            "--mgmt-bridge",
            self.mgmt_bridge,
        ]
        if self.mgmt_prefix:
            flags += ["--mgmt-prefix", self.mgmt_prefix]
        return flags


def astara_argv() -> list[str]:
    return [sys.executable, "-m", "astara.cli.main"]


@dataclass
class Host:
    """The outside namespace, the uplinks and (when the demo started it) ``astara up``."""

    lab: Lab
    outside: str
    uplinks: dict[str, str]
    up: subprocess.Popen[bytes] | None = None
    up_log: Path | None = None
    bird_socket: Path | None = None
    bird: subprocess.Popen[bytes] | None = None

    def uplink_flags(self) -> list[str]:
        return [
            f for physnet, nic in self.uplinks.items() for f in ("--uplink", f"{physnet}={nic}")
        ]


def make_outside(lab: Lab, *, vlan: bool) -> Host:
    """``outside`` on physnet1's veth, and physnet2's veth when the kernel has 802.1Q."""
    outside = lab.namespace("outside")
    nic = lab.host_name()
    lab.veth(None, nic, outside, "eth0")
    lab.address(outside, "eth0", f"{OUTSIDE_V4}/24")
    lab.address(outside, "eth0", f"{OUTSIDE_V6}/64")
    uplinks = {"physnet1": nic}
    if vlan:
        trunk, far = lab.host_name(), lab.host_name()
        lab.veth(None, trunk, None, far)
        uplinks["physnet2"] = trunk
    return Host(lab=lab, outside=outside, uplinks=uplinks)


def start_up(host: Host, opts: Options) -> None:
    """``astara up`` with the demo's flags, in its own session; wait until it is ready."""
    address, port = opts.host_port
    argv = [
        *astara_argv(),
        "up",
        *opts.common_flags(),
        *host.uplink_flags(),
        "--host",
        address,
        "--port",
        str(port),
        "--admin-port",
        str(opts.admin_port),
        "--metadata-port",
        str(opts.metadata_port),
        "--asn",
        str(ROUTER_ASN),
        "--neighbor-asn",
        str(OUTSIDE_ASN),
    ]
    log = opts.workdir / "up.log"
    host.up_log = log
    with log.open("ab") as output:
        host.up = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while "ready;" not in _text(log):
        if host.up.poll() is not None:
            raise DemoError(f"astara up exited with {host.up.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise DemoError(f"astara up was not ready within {READY_TIMEOUT:.0f} s; see {log}")
        time.sleep(0.1)


def stop_up(host: Host) -> None:
    """SIGTERM to ``astara up`` by its pid; SIGKILL if it does not stop."""
    if host.up is not None:
        end_process(host.up, timeout=30)


def down(host: Host, opts: Options) -> str:
    """``astara down`` with the flags ``up`` had; its error output ('' if it succeeded)."""
    done = subprocess.run(
        [*astara_argv(), "down", *opts.common_flags(), *host.uplink_flags()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return "" if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


def start_bgp_peer(host: Host, workdir: Path, neighbors: list[str]) -> None:
    """bird2 in ``outside``, one BGP session per router's external IPv6 address."""
    conf = workdir / "outside-bird.conf"
    sock = workdir / "outside-bird.ctl"
    sessions = "".join(
        textwrap.dedent(
            f"""
            protocol bgp router{i} {{
                local {OUTSIDE_V6} as {OUTSIDE_ASN};
                neighbor {address} as {ROUTER_ASN};
                connect delay time 1;
                connect retry time 1;
                error wait time 1, 5;
                ipv6 {{ import all; export none; }};
            }}
            """
        )
        for i, address in enumerate(neighbors)
    )
    conf.write_text(f"router id {OUTSIDE_V4};\nprotocol device {{ scan time 10; }}\n{sessions}")
    host.bird = host.lab.spawn(
        host.outside,
        ["bird", "-f", "-c", str(conf), "-s", str(sock), "-P", str(workdir / "outside-bird.pid")],
        log=workdir / "outside-bird.log",
    )
    host.bird_socket = sock


def bgp_routes(host: Host) -> str:
    if host.bird_socket is None:
        return ""
    return host.lab.run(
        host.outside, ["birdc", "-s", str(host.bird_socket), "show", "route"], check=False
    )


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(_text(path).splitlines()[-lines:])
