"""Tenant workloads for demos and tests: network namespaces that play VMs, plugged by the fabric.

A *server* named NAME (``[a-z0-9-]``, 1-32 characters, no dash at either end)
owns exactly these things, every one named from its prefix and its name:

- the namespace ``<prefix>vm-<NAME>``, loopback up, IPv6 DAD off, and in it
  the NIC ``eth0``: the port's veth end, with the port's MAC and MTU, plugged
  by the fabric into the network's bridge (``Fabric.ensure_network`` first,
  which is idempotent; the network itself is never removed here);
- ``/etc/netns/<ns>/resolv.conf``, which ``ip netns exec`` binds over
  ``/etc/resolv.conf``: it exists *before* any DHCP client runs, so nothing
  a lease brings can reach the host's own resolver file;
- its state directory ``<state_dir>/<NAME>/`` (default
  ``/run/astara/servers/<NAME>/``): ``server.json`` (the record: name, ids,
  network, mode, namespace, DHCP client pid), and in DHCP mode the client's
  pid file, hook script, log and ``lease`` (the last lease, ``key=value``);
- in DHCP mode, one ``udhcpc`` (busybox) in the namespace, started in a
  session of its own through ``setsid --fork`` so it outlives the command
  that started it and is never that command's child. It is signalled only
  by the pid it wrote, and only after ``/proc/<pid>/cmdline`` is seen to be
  ``udhcpc`` with this server's pid file.

Invariants. The record is written before anything else is made and removed
last, so a server with any piece left in the kernel has a record and
``delete`` finds every piece; a ``create`` that fails removes what it made
before raising. ``delete`` is idempotent and also clears what the name alone
designates (namespace, ``/etc/netns`` entry, state directory). Nothing
without the prefix is touched. There is no HTTP client here: the caller
gives the port (id, MAC, MTU), the network (a ``NetworkSpec``) and, in fixed
mode, the addresses, gateways and DNS servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import shlex
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from astara.fabric import Fabric, NetworkSpec

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/run/astara/servers")
NETNS_RUN_DIR = Path("/run/netns")
NETNS_ETC = Path("/etc/netns")
NIC = "eth0"
RECORD = "server.json"
RECORD_VERSION = 1
MAX_NAME = 32
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_PREFIX = re.compile(r"^[A-Za-z0-9_.\-]{1,24}$")
#: the environment of every command run here: no caller's PATH surprises
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
#: discover 5 times a second apart, then pause 3 s, forever: a lease comes
#: within seconds of a DHCP server (a router) starting to serve the network
_UDHCPC_TIMING = ("-t", "5", "-T", "1", "-A", "3")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


# -- errors ---------------------------------------------------------------------------
class WorkloadError(Exception):
    """A server operation that cannot go on; ``str()`` is the one line to show."""


class WorkloadInvalidError(WorkloadError):
    """A bad name, prefix or argument; nothing was changed for it."""


class WorkloadNotFoundError(WorkloadError):
    """No server of this name (under this prefix) is recorded."""


class WorkloadExistsError(WorkloadError):
    """The name is taken: by a recorded server, or by a namespace nobody recorded."""


class WorkloadTimeoutError(WorkloadError):
    """The server did not get an address in time."""


# -- values ---------------------------------------------------------------------------
class Mode(StrEnum):
    """How a server's NIC gets its address."""

    DHCP = "dhcp"  # udhcpc in the namespace, applying whatever lease comes
    FIXED = "fixed"  # configured here, once, from the caller's addresses


@dataclass(frozen=True)
class FixedConfig:
    """Fixed mode: the NIC's addresses (with prefix length), default gateways and DNS."""

    addresses: tuple[IPInterface, ...]
    gateways: tuple[IPAddress, ...] = ()
    dns: tuple[IPAddress, ...] = ()

    def __post_init__(self) -> None:
        if not self.addresses:
            raise WorkloadInvalidError("fixed mode needs at least one address")
        versions = [gateway.version for gateway in self.gateways]
        if len(versions) != len(set(versions)):
            raise WorkloadInvalidError("at most one default gateway per IP version")


@dataclass(frozen=True)
class ServerSpec:
    """What ``Workloads.create`` makes: a server on ``network``, through port ``port_id``.

    ``fixed`` None is DHCP mode. ``server_id`` is the caller's id for the
    server (the port's ``device_id``), kept in the record.
    """

    name: str
    port_id: str
    mac: str
    mtu: int
    network: NetworkSpec
    server_id: str = ""
    fixed: FixedConfig | None = None


@dataclass(frozen=True)
class Server:
    """A server's record (``server.json``): what was made, whatever the kernel says now.

    ``state`` is ``creating`` until ``create`` finished, then ``active``.
    ``addresses``, ``gateways`` and ``dns`` are the fixed configuration (empty
    in DHCP mode); ``pid`` is the DHCP client's.
    """

    name: str
    server_id: str
    netns: str
    port_id: str
    network_id: str
    mac: str
    mtu: int
    mode: Mode
    state: str = "creating"
    addresses: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    pid: int | None = None
    created_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Server:
        if data.get("version") != RECORD_VERSION:
            raise ValueError(f"record version {data.get('version')!r} is not {RECORD_VERSION}")
        fields = {key: value for key, value in data.items() if key != "version"}
        for key in ("addresses", "gateways", "dns"):
            fields[key] = tuple(fields.get(key) or ())
        fields["mode"] = Mode(fields["mode"])
        return cls(**fields)


@dataclass(frozen=True)
class ServerState:
    """A server's record and what is there now.

    ``status`` is ACTIVE (namespace, NIC and, in DHCP mode, a running client),
    BUILD (a ``create`` in progress, or one that died half-way) or ERROR
    (``problems`` say what is missing). ``addresses`` are the NIC's global
    addresses (CIDR), ``gateways`` its default routes' next hops, ``dns`` the
    name servers of its resolv.conf, ``lease`` the last DHCP lease.
    """

    server: Server
    status: str
    problems: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    client_pid: int | None = None
    lease: Mapping[str, str] | None = None


# -- helpers --------------------------------------------------------------------------
def check_name(name: str) -> str:
    if len(name) > MAX_NAME or not _NAME.match(name):
        raise WorkloadInvalidError(
            f"server name {name!r} must be 1-{MAX_NAME} characters of a-z, 0-9 and '-',"
            " not starting or ending with '-'"
        )
    return name


async def _run(argv: Sequence[str], *, timeout: float = 30.0) -> str:
    """Run a command to completion; its stdout; WorkloadError with its stderr if it fails."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_ENV,
        cwd="/",
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise WorkloadError(f"{shlex.join(argv)}: no answer within {timeout:g}s") from None
    if proc.returncode != 0:
        reason = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise WorkloadError(f"{shlex.join(argv)}: {reason}")
    return out.decode(errors="replace")


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie has left its namespace: it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _is_client(pid: int, pid_file: Path) -> bool:
    """``pid`` is the udhcpc this server started: its argv names udhcpc and our pid file."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return os.path.basename(argv[0]) == "udhcpc" and str(pid_file) in argv and _alive(pid)


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _resolv_text(dns: Sequence[str]) -> str:
    return "".join(f"nameserver {server}\n" for server in dns)


def _hook(resolv: Path, lease: Path) -> str:
    """udhcpc's event script: applies a lease to the NIC, its resolv.conf and ``lease``.

    Writes resolv.conf by its /etc/netns path, in place (never the host's
    /etc/resolv.conf, whatever the mount namespace it runs in).
    """
    return f"""#!/bin/sh
# udhcpc hook written by astara.network.workloads: applies a lease to $interface
RESOLV={shlex.quote(str(resolv))}
LEASE={shlex.quote(str(lease))}
case "$1" in
deconfig)
    ip link set dev "$interface" up
    ip -4 address flush dev "$interface"
    ip -4 route flush dev "$interface"
    rm -f "$LEASE"
    ;;
bound|renew)
    if ! ip -4 -o address show dev "$interface" | grep -q " inet $ip/$mask "; then
        ip -4 address flush dev "$interface"
        ip -4 address add "$ip/$mask" ${{broadcast:+broadcast "$broadcast"}} dev "$interface"
    fi
    gateway="${{router%% *}}"
    if [ -n "$gateway" ]; then
        onlink=""
        [ "$mask" = 32 ] && onlink=onlink
        ip -4 route replace default via "$gateway" dev "$interface" $onlink
    else
        ip -4 route flush exact 0.0.0.0/0 dev "$interface"
    fi
    {{
        [ -n "$domain" ] && echo "search $domain"
        for server in $dns; do echo "nameserver $server"; done
    }} > "$RESOLV"
    {{
        echo "ip=$ip"
        echo "mask=$mask"
        echo "router=$gateway"
        echo "dns=$dns"
        echo "domain=$domain"
        echo "lease=$lease"
        echo "serverid=$serverid"
        echo "mtu=$mtu"
        echo "bound=$(date +%s)"
    }} > "$LEASE.tmp" && mv -f "$LEASE.tmp" "$LEASE"
    ;;
leasefail|nak)
    echo "udhcpc: $1 ${{message:-}}" >&2
    ;;
esac
exit 0
"""


# -- the workloads --------------------------------------------------------------------
class Workloads:
    """The servers of one prefix, recorded under one state directory.

    Keeps nothing in memory: every call reads the records and the kernel, so
    another process (a second CLI call, a restarted service) sees the same
    servers. The fabric is the caller's, used for ``ensure_network``, ``plug``
    and ``unplug`` only.
    """

    def __init__(
        self,
        *,
        fabric: Fabric,
        prefix: str = "astara-",
        state_dir: Path | str = DEFAULT_STATE_DIR,
    ) -> None:
        if not _PREFIX.match(prefix):
            raise WorkloadInvalidError(
                f"prefix {prefix!r} must be 1-24 letters, digits, '_', '.' or '-'"
            )
        self.fabric = fabric
        self.prefix = prefix
        self.state_dir = Path(state_dir)

    # -- names ----------------------------------------------------------------------
    def netns_of(self, name: str) -> str:
        """The namespace of server ``name``: ``<prefix>vm-<name>``."""
        return f"{self.prefix}vm-{check_name(name)}"

    def directory_of(self, name: str) -> Path:
        return self.state_dir / check_name(name)

    def exec_argv(self, name: str, command: Sequence[str]) -> list[str]:
        """The argv that runs ``command`` inside server ``name`` (its resolv.conf bound)."""
        if not command:
            raise WorkloadInvalidError("give a command to run in the server")
        return ["ip", "netns", "exec", self.netns_of(name), *command]

    # -- records ----------------------------------------------------------------------
    def record(self, name: str) -> Server | None:
        """The record of server ``name`` under this prefix, or None."""
        path = self.directory_of(name) / RECORD
        try:
            server = Server.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise WorkloadError(f"the record {path} is unreadable: {exc}") from exc
        if server.netns != self.netns_of(name):
            return None  # another prefix's server sharing the state directory
        return server

    def _write(self, server: Server) -> None:
        path = self.directory_of(server.name) / RECORD
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(server.to_json(), indent=2, sort_keys=True) + "\n")
        os.replace(scratch, path)

    def names(self) -> list[str]:
        """The names of the recorded servers of this prefix, sorted."""
        try:
            entries = sorted(self.state_dir.iterdir())
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            if not _NAME.match(entry.name) or len(entry.name) > MAX_NAME:
                continue
            try:
                if self.record(entry.name) is not None:
                    found.append(entry.name)
            except WorkloadError as exc:
                log.warning("skipping %s: %s", entry, exc)
        return found

    # -- create ------------------------------------------------------------------------
    async def create(self, spec: ServerSpec, *, wait_for_address: float | None = None) -> Server:
        """Make server ``spec.name``; return its record once its NIC is plugged and configured.

        DHCP mode returns once the client runs; ``wait_for_address`` (seconds)
        waits for the lease too. Raises WorkloadExistsError (the name is taken),
        WorkloadTimeoutError (no lease in time), FabricError (the fabric refused
        the network or the port) or WorkloadError; what was made is removed first.
        """
        ns = self.netns_of(spec.name)
        directory = self.directory_of(spec.name)
        if (NETNS_RUN_DIR / ns).exists() and self.record(spec.name) is None:
            raise WorkloadExistsError(
                f"namespace {ns} exists but no server {spec.name!r} is recorded in"
                f" {self.state_dir}: delete the server to remove it"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            raise WorkloadExistsError(f"a server named {spec.name!r} exists") from None
        fixed = spec.fixed
        server = Server(
            name=spec.name,
            server_id=spec.server_id,
            netns=ns,
            port_id=spec.port_id,
            network_id=spec.network.network_id,
            mac=spec.mac,
            mtu=spec.mtu,
            mode=Mode.DHCP if fixed is None else Mode.FIXED,
            addresses=tuple(str(a) for a in fixed.addresses) if fixed else (),
            gateways=tuple(str(g) for g in fixed.gateways) if fixed else (),
            dns=tuple(str(d) for d in fixed.dns) if fixed else (),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        try:
            self._write(server)
            await self.fabric.ensure_network(spec.network)
            await self._namespace(ns, server.dns)
            await self.fabric.plug(
                network_id=spec.network.network_id,
                port_id=spec.port_id,
                mac=spec.mac,
                mtu=spec.mtu,
                netns=ns,
                ifname=NIC,
            )
            pid = None
            if fixed is not None:
                await self._configure(ns, fixed)
            else:
                pid = await self._start_client(server, directory)
            server = replace(server, state="active", pid=pid)
            self._write(server)
            if wait_for_address is not None:
                await self.wait_for_address(spec.name, wait_for_address)
        except BaseException as exc:
            try:
                await self.delete(spec.name)
            except Exception as cleanup:  # noqa: BLE001 - reported with the first error
                exc.add_note(f"removing the half-made server {spec.name!r} failed too: {cleanup}")
            raise
        return server

    async def _namespace(self, ns: str, dns: Sequence[str]) -> None:
        """The namespace, its resolv.conf made first, loopback up, DAD off."""
        etc = NETNS_ETC / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(_resolv_text(dns))
        await _run(["ip", "netns", "add", ns])
        await _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        await _run(
            [
                *("ip", "netns", "exec", ns, "sysctl", "-q", "-w"),
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ]
        )

    async def _configure(self, ns: str, fixed: FixedConfig) -> None:
        for address in fixed.addresses:
            extra = ["nodad"] if address.version == 6 else []
            await _run(["ip", "-n", ns, "address", "add", str(address), "dev", NIC, *extra])
        for gateway in fixed.gateways:
            onlink = [] if any(gateway in a.network for a in fixed.addresses) else ["onlink"]
            family = f"-{gateway.version}"
            route = ("route", "replace", "default", "via", str(gateway), "dev", NIC)
            await _run(["ip", "-n", ns, family, *route, *onlink])

    async def _start_client(self, server: Server, directory: Path) -> int:
        """Start udhcpc in the server's namespace, in a session of its own; its pid."""
        if shutil.which("udhcpc", path=_ENV["PATH"]) is None:
            raise WorkloadError("udhcpc is not installed (Debian package udhcpc; see setup.sh)")
        pid_file = directory / "udhcpc.pid"
        script = directory / "udhcpc.script"
        script.write_text(_hook(NETNS_ETC / server.netns / "resolv.conf", directory / "lease"))
        script.chmod(0o700)
        argv = [
            *("setsid", "--fork", "ip", "netns", "exec", server.netns, "udhcpc", "-f"),
            *("-i", NIC, "-s", str(script), "-p", str(pid_file), *_UDHCPC_TIMING),
            *("-x", f"hostname:{server.name}"),
        ]
        log_path = directory / "udhcpc.log"
        with log_path.open("ab") as sink:
            starter = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink, env=_ENV, cwd="/"
            )
            if await starter.wait() != 0:
                raise WorkloadError(f"could not start udhcpc: {self._tail(log_path)}")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pid = _read_pid(pid_file)
            if pid is not None and _is_client(pid, pid_file):
                return pid
            await asyncio.sleep(0.02)
        raise WorkloadError(f"udhcpc did not start in {server.netns}: {self._tail(log_path)}")

    @staticmethod
    def _tail(path: Path) -> str:
        try:
            lines = path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " / ".join(lines[-3:]) or "nothing logged"

    async def wait_for_address(self, name: str, timeout: float) -> tuple[str, ...]:
        """Wait until the server's NIC has an IPv4 address (DHCP: from a lease); return them."""
        deadline = time.monotonic() + timeout
        directory = self.directory_of(name)
        while True:
            state = await self.get(name)
            if state.server.mode is Mode.FIXED:
                return state.addresses
            v4 = [a for a in state.addresses if ipaddress.ip_interface(a).version == 4]
            if v4 and (directory / "lease").exists():
                return state.addresses
            if state.client_pid is None:
                raise WorkloadError(
                    f"the DHCP client of server {name!r} is not running:"
                    f" {self._tail(directory / 'udhcpc.log')}"
                )
            if time.monotonic() >= deadline:
                raise WorkloadTimeoutError(
                    f"server {name!r} got no DHCP lease within {timeout:g}s: does a DHCP"
                    f" server (a router) serve network {state.server.network_id}?"
                )
            await asyncio.sleep(0.1)

    # -- read ---------------------------------------------------------------------------
    async def get(self, name: str) -> ServerState:
        """Server ``name``: its record and what is there now; WorkloadNotFoundError if none."""
        server = self.record(name)
        if server is None:
            raise WorkloadNotFoundError(f"no server named {name!r}")
        return await self._inspect(server)

    async def list(self) -> list[ServerState]:
        """Every recorded server of this prefix, by name."""
        found = []
        for name in self.names():
            server = self.record(name)
            if server is not None:
                found.append(await self._inspect(server))
        return found

    async def _inspect(self, server: Server) -> ServerState:
        problems: list[str] = []
        directory = self.directory_of(server.name)
        client = None
        if server.mode is Mode.DHCP:
            pid = server.pid or _read_pid(directory / "udhcpc.pid")
            if pid is not None and _is_client(pid, directory / "udhcpc.pid"):
                client = pid
            else:
                problems.append("the DHCP client is not running")
        addresses: tuple[str, ...] = ()
        gateways: tuple[str, ...] = ()
        if not (NETNS_RUN_DIR / server.netns).exists():
            problems.insert(0, f"namespace {server.netns} is missing")
        else:
            try:
                addresses, gateways = await self._nic_state(server.netns)
            except WorkloadError:
                problems.insert(0, f"{server.netns} has no {NIC}")
        try:
            resolv = (NETNS_ETC / server.netns / "resolv.conf").read_text()
        except OSError:
            resolv = ""
        dns = tuple(
            line.split()[1]
            for line in resolv.splitlines()
            if line.startswith("nameserver") and len(line.split()) > 1
        )
        status = "BUILD" if server.state == "creating" else "ERROR" if problems else "ACTIVE"
        return ServerState(
            server=server,
            status=status,
            problems=tuple(problems),
            addresses=addresses,
            gateways=gateways,
            dns=dns,
            client_pid=client,
            lease=self._lease(directory / "lease") if server.mode is Mode.DHCP else None,
        )

    @staticmethod
    async def _nic_state(ns: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        shown = json.loads(await _run(["ip", "-n", ns, "-j", "address", "show", "dev", NIC]))
        addresses = tuple(
            f"{info['local']}/{info['prefixlen']}"
            for link in shown
            for info in link.get("addr_info", ())
            if info.get("scope") == "global"
        )
        gateways = []
        for family in ("-4", "-6"):
            routes = json.loads(await _run(["ip", "-n", ns, family, "-j", "route", "show"]))
            gateways += [
                r["gateway"] for r in routes if r.get("dst") == "default" and "gateway" in r
            ]
        return addresses, tuple(gateways)

    @staticmethod
    def _lease(path: Path) -> dict[str, str] | None:
        try:
            text = path.read_text()
        except OSError:
            return None
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    # -- delete ------------------------------------------------------------------------
    async def delete(self, name: str) -> Server | None:
        """Remove server ``name`` and all it owns; its record, or None if none was kept.

        Idempotent: stops the DHCP client (by its verified pid), unplugs the
        port, deletes the namespace and ``/etc/netns/<ns>``, and removes the
        state directory last.
        """
        ns = self.netns_of(name)
        directory = self.directory_of(name)
        server = self.record(name)
        if server is None and (directory / RECORD).exists():
            raise WorkloadNotFoundError(
                f"server {name!r} in {self.state_dir} belongs to another prefix than {self.prefix!r}"
            )
        await self._stop_client(directory / "udhcpc.pid", server.pid if server else None)
        if server is not None:
            await self.fabric.unplug(port_id=server.port_id)
        if (NETNS_RUN_DIR / ns).exists():
            await _run(["ip", "netns", "delete", ns])
        shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        shutil.rmtree(directory, ignore_errors=True)
        if directory.exists():
            raise WorkloadError(f"could not remove {directory}")
        return server

    @staticmethod
    async def _stop_client(pid_file: Path, recorded: int | None, timeout: float = 5.0) -> None:
        """SIGTERM (then SIGKILL) the server's udhcpc: only a pid whose cmdline is ours."""
        for pid in {p for p in (recorded, _read_pid(pid_file)) if p is not None}:
            if not _is_client(pid, pid_file):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if _alive(pid) and _is_client(pid, pid_file):
                log.warning("udhcpc %d ignored SIGTERM; killing it", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
