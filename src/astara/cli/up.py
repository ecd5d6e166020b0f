"""``astara up`` and ``astara down``: the whole control plane of one host, in one process.

``astara up`` runs, on one event loop:

- the network API (uvicorn ``Server.serve()`` as a task, ``127.0.0.1:9696``
  by default; SQLite at ``<state dir>/network.db``);
- the embedded bus, shared by the network API (which publishes) and the
  orchestrator (which subscribes);
- the appliance agent, as a process ``astara appliance serve --empty``
  with its control socket ``<state dir>/agent.sock``, its state under
  ``<state dir>/appliance`` and a generated token ``<state dir>/token``
  (log: ``<state dir>/agent.log``), recorded in ``<state dir>/agent.pid``;
  left running on exit and adopted by the next ``up`` (decision 0016);
- the netns provider and the L2 fabric (links prefixed ``--fabric-prefix``,
  VXLAN on a loopback underlay, flat and VLAN networks on the host NICs
  ``--uplink PHYSNET=NIC`` names, as ``astara server`` makes them, so routers
  and servers plug onto the same bridges);
- the orchestrator (``astara.orchestrator.runner``);
- the metadata service on the management bridge's host address, port 9697.

SIGINT/SIGTERM stop it cleanly. Appliances (namespaces, their dnsmasq) and
the agent keep running, by design: the next ``astara up`` adopts them, without
re-applying a configuration. The agent is supervised: if it dies it is started
again and every appliance re-adopted (their traffic never depended on it, so
nothing is rebuilt).

``astara orchestrator`` is the same without the network API: it reconciles
against ``--network-url`` (an ``astara network-api`` or a real Neutron) and
reads notifications from ``--bus-url`` (RabbitMQ; the embedded bus cannot
cross processes). ``--bus-url rabbit://…`` on ``up`` publishes the network
API's notifications to RabbitMQ too, for any oslo consumer.

Both take ``--config FILE``: their flags from the file's ``[up]`` or
``[orchestrator]`` table (``astara.cli.config_file``); flags given win.

``astara down`` (run after ``up`` stopped, with the same flags) removes what
``up`` made: every appliance namespace the provider lists (through the agent
``up`` left, or a temporary one, so that their dnsmasq/bird are stopped; then
the agent is ended), the management
bridge, every fabric network with the fabric prefix (bridges and VXLAN
devices, servers' ports too), and the state directory (the database, the
token, the agent's state). Servers made by ``astara server`` keep their own
namespaces: delete them first with ``astara server delete``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import sqlalchemy
import uvicorn

from astara.appliance.system.files import write_atomic
from astara.bus.base import Bus, InvalidBusUrlError
from astara.bus.transports import bus_from_url
from astara.cli.config_file import add_config_option
from astara.cli.fabric_options import FabricOptionError, add_fabric_options, fabric_from_args
from astara.lab import end_process
from astara.network.server import build_app
from astara.network.service import NetworkService
from astara.orchestrator.admin import DEFAULT_PORT as ADMIN_PORT
from astara.orchestrator.admin import create_admin_app
from astara.orchestrator.appliance_client import ApplianceClient
from astara.orchestrator.control_store import ControlStore
from astara.orchestrator.coordination import (
    DEFAULT_GROUP,
    DEFAULT_MEMBERSHIP_TIMEOUT,
    ToozMembership,
)
from astara.orchestrator.health import DEFAULT_PERIOD
from astara.orchestrator.logcontext import ResourceFilter
from astara.orchestrator.metadata import DEFAULT_PORT as METADATA_PORT
from astara.orchestrator.metadata import HttpInstanceLookup, create_metadata_app
from astara.orchestrator.neutron_reader import neutron_client, noauth_admin_headers
from astara.orchestrator.ownership import DEFAULT_TTL, LeaseStore, Ownership
from astara.orchestrator.pending import PendingStore
from astara.orchestrator.queueing import DEFAULT_CONCURRENCY
from astara.orchestrator.reconcile import DEFAULT_BOOT_TIMEOUT, DEFAULT_MAX_FAILURES
from astara.orchestrator.runner import Orchestrator, OrchestratorSettings, netns_present
from astara.providers.agent_control import AgentControl
from astara.providers.base import Instance
from astara.providers.netns import NetnsProvider
from astara.settings import NetworkSettings

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/var/lib/astara")
DEFAULT_MGMT_PREFIX = "fdca:3ba5:a17a:acda::/64"
AGENT_START_TIMEOUT = 20.0
SUPERVISE_PERIOD = 0.5
"""Seconds between two looks at the agent process."""
DOWN_CONCURRENCY = 8
"""Appliances ``astara down`` removes at once."""


@dataclass(frozen=True)
class Layout:
    """Where ``up`` keeps its files, under the state directory."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "network.db"

    @property
    def token(self) -> Path:
        return self.root / "token"

    @property
    def control(self) -> Path:
        return self.root / "agent.sock"

    @property
    def agent_state(self) -> Path:
        return self.root / "appliance"

    @property
    def agent_log(self) -> Path:
        return self.root / "agent.log"

    @property
    def agent_pid(self) -> Path:
        return self.root / "agent.pid"

    @property
    def admin_token(self) -> Path:
        return self.root / "admin-token"

    @property
    def orchestrator_db(self) -> Path:
        return self.root / "orchestrator.db"


# -- registration ----------------------------------------------------------------------
def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"database, token, agent state (default {DEFAULT_STATE_DIR})",
    )
    common.add_argument(
        "--fabric-prefix",
        default="astara-",
        help="prefix of the fabric's links, as astara server's (default astara-)",
    )
    common.add_argument(
        "--netns-prefix", default="astara-", help="prefix of appliance namespaces (default astara-)"
    )
    common.add_argument(
        "--mgmt-bridge", default="astara-mgt", help="the management bridge (default astara-mgt)"
    )
    common.add_argument(
        "--mgmt-prefix",
        default=DEFAULT_MGMT_PREFIX,
        help=f"the management network, an IPv6 /64 (default {DEFAULT_MGMT_PREFIX})",
    )
    add_fabric_options(common)
    return common


def _shard(text: str) -> tuple[int, int]:
    """``I/N`` as (I, N), with 0 <= I < N."""
    index, _, count = text.partition("/")
    try:
        shard, shards = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N (e.g. 0/2)") from None
    if shards < 1 or not 0 <= shard < shards:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= I < N")
    return shard, shards


def _orchestrator_options() -> argparse.ArgumentParser:
    """The flags ``up`` and ``orchestrator`` share: how the orchestrator runs."""
    opts = argparse.ArgumentParser(add_help=False)
    add_config_option(opts)
    opts.add_argument(
        "--metadata-port",
        type=int,
        default=METADATA_PORT,
        help=f"the metadata service's port on the management bridge ({METADATA_PORT}; 0: none)",
    )
    opts.add_argument(
        "--boot-timeout",
        type=float,
        default=DEFAULT_BOOT_TIMEOUT,
        help=f"seconds an appliance may stay silent after it booted ({DEFAULT_BOOT_TIMEOUT:.0f})",
    )
    opts.add_argument(
        "--max-failures",
        type=int,
        default=DEFAULT_MAX_FAILURES,
        help=f"failures in a row after which a router is ERROR ({DEFAULT_MAX_FAILURES})",
    )
    opts.add_argument(
        "--health-period",
        type=float,
        default=DEFAULT_PERIOD,
        help=f"seconds between two health probes of every appliance ({DEFAULT_PERIOD:.0f})",
    )
    opts.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"reconciles in flight at once ({DEFAULT_CONCURRENCY})",
    )
    opts.add_argument(
        "--admin-port",
        type=int,
        default=ADMIN_PORT,
        help=f"the orchestrator's admin API port on 127.0.0.1 ({ADMIN_PORT}; 0: none)",
    )
    opts.add_argument(
        "--asn",
        type=int,
        default=None,
        help="the routers' BGP AS number: each router with an external IPv6 gateway advertises"
        " its tenant IPv6 prefixes to that gateway (needs --neighbor-asn; default: no BGP)",
    )
    opts.add_argument(
        "--neighbor-asn",
        type=int,
        default=None,
        help="the AS number of the external IPv6 gateway the routers peer with (with --asn)",
    )
    opts.add_argument(
        "--orchestrator-db",
        default=None,
        help="the orchestrator's database, a SQLAlchemy URL"
        " (default sqlite:///<state dir>/orchestrator.db)",
    )
    return opts


def _coordination_options(parser: argparse.ArgumentParser) -> None:
    """Several orchestrators (issue 6): the ring, the leases, one shared agent."""
    parser.add_argument(
        "--coordination",
        default=None,
        metavar="URL",
        help="join the orchestrators' tooz group at URL (redis://127.0.0.1:6379; etcd3+http://"
        " or zookeeper:// too) and reconcile only the routers the hash ring gives this one,"
        " fenced by leases in --orchestrator-db, which they must share (default: alone, all)",
    )
    parser.add_argument(
        "--member-id", default=None, help="this orchestrator's member id (default hostname-pid)"
    )
    parser.add_argument(
        "--coordination-group",
        default=DEFAULT_GROUP,
        help=f"the tooz group of the orchestrators ({DEFAULT_GROUP})",
    )
    parser.add_argument(
        "--membership-timeout",
        type=float,
        default=DEFAULT_MEMBERSHIP_TIMEOUT,
        help="seconds of silence after which a member is dropped from the ring"
        f" ({DEFAULT_MEMBERSHIP_TIMEOUT:.0f}; Redis; etcd and ZooKeeper: ?timeout= in the URL)",
    )
    parser.add_argument(
        "--lease-ttl",
        type=float,
        default=DEFAULT_TTL,
        help=f"seconds a router's lease lasts after its last renewal ({DEFAULT_TTL:.0f})",
    )
    parser.add_argument(
        "--agent-socket",
        type=Path,
        default=None,
        help="use the appliance agent already serving this control socket (several"
        " orchestrators on one host share one; not started or stopped here)"
        " instead of starting one in --state-dir",
    )
    parser.add_argument(
        "--agent-token-file",
        type=Path,
        default=None,
        help="the token of the agent of --agent-socket (default: 'token' next to the socket)",
    )


def register(parts: Any) -> None:
    common = _common()
    orchestrator = _orchestrator_options()
    up = parts.add_parser(
        "up",
        parents=[common, orchestrator],
        help="run the network API, the orchestrator and the appliance agent of this host",
    )
    up.add_argument("--host", default="127.0.0.1", help="the network API's address")
    up.add_argument("--port", type=int, default=9696, help="the network API's port (9696)")
    up.add_argument(
        "--network-db",
        default=None,
        help="the network API's database, a SQLAlchemy URL"
        " (default sqlite:///<state dir>/network.db)",
    )
    up.add_argument(
        "--bus-url",
        default="embedded://",
        help="where notifications travel: embedded:// (in this process, the default)"
        " or rabbit://user:pass@host:5672/ (any oslo consumer can read them)",
    )
    up.set_defaults(handler=_up, serve_network=True)
    alone = parts.add_parser(
        "orchestrator",
        parents=[common, orchestrator],
        help="run the orchestrator and the appliance agent against a network API and a bus",
    )
    alone.add_argument(
        "--network-url",
        default="http://127.0.0.1:9696",
        help="the Neutron API to reconcile against (default http://127.0.0.1:9696)",
    )
    alone.add_argument(
        "--bus-url",
        default=None,
        help="the notifications' bus: rabbit://user:pass@host:5672/ (Neutron's or astara"
        " network-api's RabbitMQ)",
    )
    alone.add_argument(
        "--shard",
        type=_shard,
        default=(0, 1),
        metavar="I/N",
        help="reconcile only the routers of shard I of N (by a stable hash of the router id),"
        " for N processes on one host, each with its own --state-dir, --admin-port,"
        " --metadata-port and ?queue= (default 0/1: all of them)",
    )
    _coordination_options(alone)
    alone.set_defaults(handler=_up, serve_network=False)
    down = parts.add_parser(
        "down", parents=[common], help="remove the appliances, bridges and state of astara up"
    )
    down.set_defaults(handler=_down)


def _token_file(path: Path) -> str:
    """The token in ``path``, generated first (mode 0600) if the file does not exist.

    Hex, not URL-safe base64: a token starting with ``-`` could not be given as
    ``--admin-token TOKEN`` (argparse takes it for an option; 1 token in 64 did)."""
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32) + "\n")
    return path.read_text().strip()


# -- the agent subprocess --------------------------------------------------------------
def _code_stamp() -> str:
    """A fingerprint of the installed astara code: an agent left running by an older
    install is replaced rather than adopted."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted(root.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (ticks since boot), None if it is gone or a zombie:
    with the pid it names one process for good (a pid alone is reused)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


class AgentProcess:
    """``astara appliance serve --empty`` on the layout's socket: outlives ``astara up``.

    The agent is data plane (each appliance's API and metadata proxy), so it is
    started in a session of its own and left running when ``up`` stops; the next
    ``up`` adopts it (``<state dir>/agent.pid`` names it by pid and start time),
    and its appliances are not re-applied (decision 0016). One left by another
    install of astara is ended and a new one started. ``astara down`` ends it.
    ``supervise`` restarts it when it dies and hands the orchestrator a call to
    re-adopt the appliances (a new agent serves nothing until told): their
    traffic never depended on the agent, so nothing is rebuilt.
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.proc: subprocess.Popen[bytes] | None = None
        #: the agent's (pid, start time): ``proc``'s, or the adopted one's
        self.running: tuple[int, int] | None = None
        #: it was running before this ``up``; ``served``: this ``up`` got to serve with it
        self.adopted = False
        self.served = False
        self.control = AgentControl(layout.control)
        self.token_file = layout.token
        self.restarts = 0
        self._stamp = _code_stamp()

    @property
    def pid(self) -> int | None:
        return self.running[0] if self.running else None

    def _argv(self) -> list[str]:
        layout = self.layout
        return [
            sys.executable,
            "-m",
            "astara.cli.main",
            "appliance",
            "serve",
            "--empty",
            "--control-socket",
            str(layout.control),
            "--state-dir",
            str(layout.agent_state),
            "--token-file",
            str(layout.token),
        ]

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start it (in a session of its own); the caller waits for its control socket."""
        layout = self.layout
        _token_file(layout.token)
        layout.agent_state.mkdir(mode=0o755, parents=True, exist_ok=True)
        layout.agent_state.chmod(0o755)  # dnsmasq reads its files there after dropping root
        layout.control.unlink(missing_ok=True)
        with layout.agent_log.open("ab") as output:
            self.proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of up's terminal does not reach it
            )
        started = _start_time(self.proc.pid)
        self.running = (self.proc.pid, started) if started is not None else None
        self.adopted = False
        if started is not None:
            record = {"pid": self.proc.pid, "start": started, "code": self._stamp}
            write_atomic(layout.agent_pid, json.dumps(record) + "\n", 0o644)
        return self.proc

    def _recorded(self) -> tuple[int, int, str] | None:
        """The agent ``agent.pid`` names, if that very process still runs."""
        try:
            record = json.loads(self.layout.agent_pid.read_text())
            pid, start, code = int(record["pid"]), int(record["start"]), str(record["code"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if _start_time(pid) != start:
            return None
        return pid, start, code

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.running is not None and _start_time(self.running[0]) == self.running[1]

    def ready(self) -> bool:
        """Its control socket is there."""
        return self.layout.control.exists()

    def start(self) -> None:
        """Adopt the agent a previous ``up`` left running, else start one and wait
        (blocking) until it listens; SystemExit if it does not."""
        found = self._recorded()
        if found is not None and found[2] == self._stamp and self.ready():
            self.running, self.adopted = (found[0], found[1]), True
            log.info("adopted the appliance agent (pid %d) left running", found[0])
            return
        if found is not None:
            log.warning(
                "the appliance agent (pid %d) left running is of another install of astara"
                " (or lost its socket): ending it and starting a new one",
                found[0],
            )
            self.running = (found[0], found[1])
            self.stop()
        proc = self.spawn()
        deadline = time.monotonic() + AGENT_START_TIMEOUT
        while not self.ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"astara: the appliance agent did not start; see {self.layout.agent_log}"
                )
            time.sleep(0.05)

    async def supervise(self, readopt: Callable[[], Awaitable[object]]) -> None:
        """Restart the agent whenever it dies, then ``readopt``; runs until cancelled."""
        while True:
            await asyncio.sleep(SUPERVISE_PERIOD)
            if self.alive():
                continue
            exited = self.proc.returncode if self.proc is not None else "an unknown status"
            log.error(
                "the appliance agent (pid %s) exited with %s; restarting it (see %s)",
                self.pid,
                exited,
                self.layout.agent_log,
            )
            proc = self.spawn()
            deadline = time.monotonic() + AGENT_START_TIMEOUT
            while not self.ready():
                if proc.poll() is not None or time.monotonic() > deadline:
                    break  # the next turn sees it dead and tries again
                await asyncio.sleep(0.05)
            else:
                self.restarts += 1
                try:
                    await readopt()
                except Exception:
                    log.exception("re-adopting the appliances failed; the reconciles will retry")

    def stop(self) -> None:
        """End it by its pid (SIGTERM, SIGKILL after 15 s) and forget it."""
        if self.proc is not None:
            end_process(self.proc, timeout=15)
        elif self.running is not None:
            _end_adopted(*self.running, timeout=15)
        self.proc, self.running = None, None
        self.layout.agent_pid.unlink(missing_ok=True)


def _end_adopted(pid: int, start: int, *, timeout: float) -> None:
    """End a process we did not start in this run but know by (pid, start time): SIGTERM,
    then SIGKILL after ``timeout`` s; nothing is sent once that process is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if _start_time(pid) != start:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while _start_time(pid) == start and time.monotonic() < deadline:
            time.sleep(0.05)


class ExternalAgent:
    """An agent someone else runs (``--agent-socket``): never started or stopped here.

    ``supervise`` re-adopts every appliance when the socket is made anew (the agent
    restarted, serving nothing), as ``AgentProcess`` does for its own.
    """

    def __init__(self, socket: Path, token_file: Path) -> None:
        self.socket = socket
        self.token_file = token_file
        self.control = AgentControl(socket)
        self.restarts = 0
        self.served = False

    def _inode(self) -> int | None:
        try:
            return self.socket.stat().st_ino
        except OSError:
            return None

    def check(self) -> None:
        """SystemExit unless the socket and the token are there."""
        if self._inode() is None:
            raise SystemExit(f"astara: no appliance agent at {self.socket} (--agent-socket)")
        if not self.token_file.is_file():
            raise SystemExit(f"astara: no agent token at {self.token_file} (--agent-token-file)")

    async def supervise(self, readopt: Callable[[], Awaitable[object]]) -> None:
        """Re-adopt when the agent's socket is new (it restarted); runs until cancelled."""
        seen = self._inode()
        while True:
            await asyncio.sleep(SUPERVISE_PERIOD)
            now = self._inode()
            if now is None or now == seen:
                continue
            seen = now
            self.restarts += 1
            log.warning("the appliance agent at %s restarted: re-adopting", self.socket)
            try:
                await readopt()
            except Exception:
                log.exception("re-adopting the appliances failed; the reconciles will retry")

    def stop(self) -> None:
        return None


@contextlib.contextmanager
def _agent_for(args: argparse.Namespace, layout: Layout) -> Iterator[AgentProcess | ExternalAgent]:
    """The agent of ``--agent-socket`` if given, else one started in the state directory."""
    socket = getattr(args, "agent_socket", None)
    if socket is None:
        with _agent(layout, keep=True) as agent:
            yield agent
        return
    external = ExternalAgent(socket, args.agent_token_file or socket.parent / "token")
    external.check()
    yield external


@contextlib.contextmanager
def _agent(layout: Layout, *, keep: bool) -> Iterator[AgentProcess]:
    """The agent (adopted or started) for the block; after it, ended by its pid (``down``),
    or with ``keep`` (``up``) left running for the next ``up`` to adopt — unless this one
    started it and failed before it served (then nothing is left behind)."""
    agent = AgentProcess(layout)
    try:
        agent.start()
        yield agent
    finally:
        if not keep or not (agent.adopted or agent.served):
            agent.stop()


def _provider(args: argparse.Namespace, agent: AgentControl) -> NetnsProvider:
    try:
        fabric = fabric_from_args(args)
    except FabricOptionError as exc:
        raise SystemExit(f"astara: {exc}") from None
    return NetnsProvider(
        fabric=fabric,
        agent=agent,
        prefix=args.netns_prefix,
        mgmt_bridge=args.mgmt_bridge,
        mgmt_prefix=args.mgmt_prefix,
    )


async def _ip(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "ip", *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {err.decode(errors='replace').strip()}")


async def _management_bridge(provider: NetnsProvider) -> None:
    """The management bridge with the host's address, as the provider makes it (idempotent)."""
    bridge = provider.mgmt_bridge
    if not Path("/sys/class/net", bridge).exists():
        try:
            await _ip("link", "add", bridge, "type", "bridge")
        except RuntimeError:
            if not Path("/sys/class/net", bridge).exists():
                raise  # else another orchestrator of this host made it meanwhile
    await _ip("link", "set", bridge, "up")
    await _ip("-6", "addr", "replace", str(provider.host_address), "dev", bridge, "nodad")


# -- up ------------------------------------------------------------------------------------
class _Server(uvicorn.Server):
    """A uvicorn server that leaves the signals to ``up`` (it serves several on one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def _served(app: Any, name: str, **where: Any) -> AsyncIterator[uvicorn.Server]:
    """``app`` served by uvicorn as a task until the block ends."""
    config = uvicorn.Config(app, log_level="warning", log_config=None, **where)
    server = _Server(config)
    task = asyncio.create_task(server.serve(), name=name)
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError(f"{name} stopped while starting")
            await asyncio.sleep(0.05)
        yield server
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)


def _control_store(url: str) -> ControlStore:
    """The orchestrator's debug modes in the database at ``url``; SystemExit if it cannot open."""
    try:
        return ControlStore(url)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        raise SystemExit(f"astara: the orchestrator database {url}: {exc}") from None


async def _serve_admin(
    stack: contextlib.AsyncExitStack, port: int, token: Path, orchestrator: Orchestrator
) -> None:
    """The admin API on 127.0.0.1:``port`` until ``stack`` closes; its token in ``token``."""
    app = create_admin_app(orchestrator.operations, _token_file(token))
    await stack.enter_async_context(_served(app, "admin-api", host="127.0.0.1", port=port))
    print(f"admin API      http://127.0.0.1:{port}  (token {token})", flush=True)


def _bus(url: str) -> Bus:
    try:
        return bus_from_url(url)
    except InvalidBusUrlError as exc:
        raise SystemExit(f"astara: --bus-url: {exc}") from None


async def _run_up(
    args: argparse.Namespace, layout: Layout, agent: AgentProcess | ExternalAgent
) -> None:
    """``up`` (network API, orchestrator, agent) or ``orchestrator`` (no network API)."""
    control = _control_store(args.orchestrator_db or f"sqlite:///{layout.orchestrator_db}")
    # one engine (migrated once) for every store of the orchestrator's database
    pending = PendingStore(engine=control.engine)  # issue 6: acknowledged once recorded there
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bus = _bus(args.bus_url)
    provider = _provider(args, agent.control)
    service: NetworkService | None = None
    if args.serve_network:
        settings = NetworkSettings(
            host=args.host,
            port=args.port,
            db_url=args.network_db or f"sqlite:///{layout.database}",
            bus_url=args.bus_url,
        )
        app, service = build_app(settings, bus=bus)
        url = f"http://{args.host}:{args.port}"
    else:
        url = args.network_url.rstrip("/")
    appliance = ApplianceClient(token=agent.token_file.read_text().strip())
    ownership = _ownership(args, control.engine)
    metadata_client = neutron_client(url=url, headers=noauth_admin_headers())
    try:
        async with contextlib.AsyncExitStack() as stack:
            if service is not None:
                await stack.enter_async_context(
                    _served(app, "network-api", host=args.host, port=args.port)
                )
                database = _redacted(settings.db_url) if args.network_db else layout.database
                print(f"network API    {url}  (database {database})", flush=True)
            else:
                print(f"network API    {url}  (read as admin)", flush=True)
            print(f"bus            {_redacted(args.bus_url)}", flush=True)
            metadata: tuple[ipaddress.IPv6Address, int] | None = None
            orchestrator = Orchestrator(
                bus=bus,
                network_url=url,
                provider=provider,
                appliance=appliance,
                presence=netns_present,
                control=control,
                pending=pending,
                settings=_settings(args, provider),
                adopt=provider.adopt,
                ownership=ownership,
            )
            await _join(ownership, args)
            if args.metadata_port:
                metadata = await _serve_metadata(
                    stack, args.metadata_port, provider, orchestrator, metadata_client
                )
            _banner(args, layout, provider, metadata)
            if args.admin_port:
                await _serve_admin(stack, args.admin_port, layout.admin_token, orchestrator)
            print("ready; Ctrl-C stops (appliances and their agent keep running)", flush=True)
            await _run_until(stop, orchestrator, agent)
    finally:
        await metadata_client.aclose()
        await appliance.aclose()
        await bus.close()
        provider.fabric.close()
        if service is not None:
            service.db.close()
        pending.close()
        _close_leases(ownership)
        control.close()  # last: the others use its engine
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    print("stopped", flush=True)


def _settings(args: argparse.Namespace, provider: NetnsProvider) -> OrchestratorSettings:
    shard, shards = getattr(args, "shard", (0, 1))
    return OrchestratorSettings(
        shard_index=shard,
        shards=shards,
        management_prefixlen=provider.mgmt_prefix.prefixlen,
        boot_timeout=args.boot_timeout,
        max_failures=args.max_failures,
        health_period=args.health_period,
        concurrency=args.concurrency,
        metadata=(provider.host_address.ip, args.metadata_port) if args.metadata_port else None,
        asn=args.asn,
        neighbor_asn=args.neighbor_asn,
    )


def _ownership(args: argparse.Namespace, database: sqlalchemy.Engine) -> Ownership | None:
    """The ring and the leases with ``--coordination``; None: this orchestrator owns all."""
    url = getattr(args, "coordination", None)
    if url is None:
        return None
    if args.shard != (0, 1):
        raise SystemExit("astara: --shard and --coordination do not go together")
    try:
        membership = ToozMembership(
            url,
            member_id=args.member_id,
            group=args.coordination_group,
            timeout=args.membership_timeout,
        )
        leases = LeaseStore(database, member=membership.member_id, ttl=args.lease_ttl)
    except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError) as exc:
        raise SystemExit(f"astara: --coordination {url}: {exc}") from None
    return Ownership(membership=membership, leases=leases)


def _close_leases(ownership: Ownership | None) -> None:
    if ownership is not None:
        ownership.leases.close()


async def _join(ownership: Ownership | None, args: argparse.Namespace) -> None:
    """Join the group now, so that an unreachable backend stops the start with its reason."""
    if ownership is None:
        return
    try:
        await ownership.start()
    except Exception as exc:  # noqa: BLE001 - tooz raises many kinds: all mean the same here
        raise SystemExit(
            f"astara: cannot join the coordination group at {_redacted(args.coordination)}: {exc}"
        ) from None
    print(
        f"coordination   {_redacted(args.coordination)} group {args.coordination_group}"
        f" as {ownership.member_id} (leases in the orchestrator database)",
        flush=True,
    )


async def _run_until(
    stop: asyncio.Event, orchestrator: Orchestrator, agent: AgentProcess | ExternalAgent
) -> None:
    """Run the orchestrator, the agent's supervisor with it, until ``stop`` (or it ends)."""
    agent.served = True
    running = asyncio.create_task(orchestrator.run(), name="orchestrator")
    supervising = asyncio.create_task(
        agent.supervise(orchestrator.readopt), name="agent-supervisor"
    )
    stopping = asyncio.create_task(stop.wait(), name="stop")
    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    supervising.cancel()
    await asyncio.gather(supervising, stopping, return_exceptions=True)
    await orchestrator.close()
    await running


async def _serve_metadata(
    stack: contextlib.AsyncExitStack,
    port: int,
    provider: NetnsProvider,
    orchestrator: Orchestrator,
    client: httpx.AsyncClient,
) -> tuple[ipaddress.IPv6Address, int]:
    """The metadata service on the management bridge's host address until ``stack`` closes."""
    await _management_bridge(provider)
    where = (provider.host_address.ip, port)
    app = create_metadata_app(
        lookup=HttpInstanceLookup(client=client),
        appliances=lambda peer: peer in orchestrator.appliance_addresses(),
        nova=None,
        secret=None,
    )
    await stack.enter_async_context(_served(app, "metadata", host=str(where[0]), port=port))
    return where


def _banner(
    args: argparse.Namespace,
    layout: Layout,
    provider: NetnsProvider,
    metadata: tuple[ipaddress.IPv6Address, int] | None,
) -> None:
    print(f"appliance agent {layout.control}  (log {layout.agent_log})", flush=True)
    print(
        f"appliances     namespaces {args.netns_prefix}*, management bridge"
        f" {args.mgmt_bridge} ({provider.host_address}), fabric links"
        f" {args.fabric_prefix}*",
        flush=True,
    )
    uplinks = provider.fabric.layout.uplinks
    if uplinks:
        bound = ", ".join(f"{physnet}={nic}" for physnet, nic in sorted(uplinks.items()))
        print(f"uplinks        {bound}", flush=True)
    if metadata is not None:
        print(f"metadata       http://[{metadata[0]}]:{metadata[1]}", flush=True)
    shard, shards = getattr(args, "shard", (0, 1))
    if shards > 1:
        print(f"shard          {shard}/{shards} (the routers of this shard only)", flush=True)


def _redacted(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _quiet_httpx() -> None:
    """One line per HTTP request is for debugging only."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(resource)s] %(message)s"


def structured_logs(handlers: Iterable[logging.Handler] | None = None) -> None:
    """Every root handler's (or ``handlers``') lines carry the resource reconciled (``-``: none)."""
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        if not any(isinstance(f, ResourceFilter) for f in handler.filters):
            handler.addFilter(ResourceFilter())
        handler.setFormatter(logging.Formatter(LOG_FORMAT))


def _check_bus(args: argparse.Namespace) -> None:
    """SystemExit with the reason if the bus URL cannot serve this command."""
    if args.bus_url is None:
        raise SystemExit(
            "astara: astara orchestrator needs --bus-url rabbit://... (or in --config)"
        )
    if not args.serve_network and args.bus_url.lower().startswith("embedded:"):
        raise SystemExit(
            "astara: the embedded bus lives inside one process: astara orchestrator needs the"
            " network API's RabbitMQ (--bus-url rabbit://...); astara up runs both in one"
        )
    _bus(args.bus_url)  # a bad URL is refused before anything starts


def _check_bgp(args: argparse.Namespace) -> None:
    """SystemExit with the reason if ``--asn`` and ``--neighbor-asn`` do not go together."""
    if (args.asn is None) != (args.neighbor_asn is None):
        raise SystemExit("astara: --asn and --neighbor-asn go together: give both or neither")
    for flag, value in (("--asn", args.asn), ("--neighbor-asn", args.neighbor_asn)):
        if value is not None and not 1 <= value <= 4_294_967_295:
            raise SystemExit(f"astara: {flag} {value}: an AS number is 1..4294967295")


def _up(args: argparse.Namespace) -> int:
    _check_bus(args)
    _check_bgp(args)
    if os.geteuid() != 0:
        print(f"astara: astara {args.command} needs root (namespaces, bridges)", file=sys.stderr)
        return 1
    _quiet_httpx()
    structured_logs()
    _check_neighbour_tables()
    layout = Layout(args.state_dir)
    layout.root.mkdir(mode=0o755, parents=True, exist_ok=True)
    layout.root.chmod(0o755)
    with _agent_for(args, layout) as agent:
        asyncio.run(_run_up(args, layout, agent))
    return 0


#: below this hard limit of the kernel's neighbour tables, a few hundred appliances overflow them
NEIGHBOUR_TABLE_MINIMUM = 4096


def _check_neighbour_tables(proc: Path = Path("/proc/sys/net")) -> list[str]:
    """Warn (and return the families) whose neighbour table limit is too small for many
    appliances: every namespace shares it (docs/operators.md, "Many routers on one host")."""
    small = []
    for family in ("ipv4", "ipv6"):
        try:
            limit = int((proc / family / "neigh/default/gc_thresh3").read_text())
        except (OSError, ValueError):
            continue
        if limit < NEIGHBOUR_TABLE_MINIMUM:
            small.append(f"{family} {limit}")
    if small:
        log.warning(
            "the kernel's neighbour tables hold at most %s entries, shared by every appliance:"
            " past a few hundred routers they overflow; raise net.<ipv4|ipv6>.neigh.default."
            "gc_thresh1/2/3 (docs/operators.md, 'Many routers on one host')",
            " and ".join(small),
        )
    return small


# -- down ----------------------------------------------------------------------------------
async def _run_down(args: argparse.Namespace, agent: AgentControl) -> list[str]:
    provider = _provider(args, agent)
    removed: list[str] = []
    limit = asyncio.Semaphore(DOWN_CONCURRENCY)

    async def remove(instance: Instance) -> None:
        async with limit:
            if instance.management_address is not None:
                # served again, so that removing it stops its dnsmasq and bird
                with contextlib.suppress(Exception):
                    await agent.add(netns=instance.name, listen=instance.management_address)
            await provider.destroy(router_id=instance.router_id)
            removed.append(f"appliance {instance.name} (router {instance.router_id})")

    try:
        # several at once: one after the other, 1,000 appliances took ~10 minutes
        await asyncio.gather(*(remove(instance) for instance in await provider.list()))
        if Path("/sys/class/net", args.mgmt_bridge).exists():
            await _ip("link", "del", args.mgmt_bridge)
            removed.append(f"management bridge {args.mgmt_bridge}")
        networks = [network.network_id for network in await provider.fabric.networks()]
        await provider.fabric.remove_networks(networks)
        removed += [f"fabric network {network_id}" for network_id in networks]
    finally:
        provider.fabric.close()
    return removed


def _down(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("astara: astara down needs root (namespaces, bridges)", file=sys.stderr)
        return 1
    _quiet_httpx()
    layout = Layout(args.state_dir)
    layout.root.mkdir(mode=0o755, parents=True, exist_ok=True)
    with _agent(layout, keep=False) as agent:
        removed = asyncio.run(_run_down(args, agent.control))
    shutil.rmtree(layout.root, ignore_errors=True)
    removed.append(f"state directory {layout.root}")
    for line in removed:
        print(f"removed {line}", flush=True)
    return 0
