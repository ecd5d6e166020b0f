"""One agent process serving many appliances: a listener per namespace, and a control socket.

Each appliance is a network namespace. Its API listener is a TCP socket
created inside that namespace (on the first global address of ``ge0`` unless
an address is given) and served by a uvicorn server that shares the one
FastAPI app; its Router does the Linux work. No process, thread or timer is
spent per appliance while it is idle.

The control socket (a Unix socket, root only) lets the orchestrator add and
drop namespaces on a running agent: ``GET/PUT/DELETE /appliances[/<netns>]``.

Stopping the agent closes its listeners but leaves the data plane (addresses,
rules, dnsmasq, bird) running, so restarting it interrupts no traffic; the new
agent re-applies the saved configuration and adopts the daemons. Dropping an
appliance through the control socket stops its services and forgets its state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from astara.appliance.api.app import bind_router, create_app
from astara.appliance.errors import ApplianceError, NotFoundError
from astara.appliance.plan import IPAddress
from astara.appliance.router import Router
from astara.appliance.system.netns import NETNS_RUN_DIR, Netns

log = logging.getLogger(__name__)

MANAGEMENT_NIC = "ge0"
_IP_FREEBIND = 15
_IPV6_FREEBIND = 78


class ListenerError(ApplianceError):
    """The API listener could not be opened (no management address, address in use...)."""


@dataclass
class Appliance:
    netns: Netns
    router: Router
    address: IPAddress
    port: int
    server: uvicorn.Server
    sock: socket.socket
    #: (st_dev, st_ino) of the namespace when it was added: a name made anew has others
    identity: tuple[int, int] | None = None

    def describe(self) -> dict[str, Any]:
        return {"netns": self.netns.name, "address": str(self.address), "port": self.port}


def _listening_socket(netns: Netns, address: IPAddress, port: int) -> socket.socket:
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    sock = netns.socket(family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # the management address may still be settling (IPv6 DAD); bind anyway
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
        sock.bind((str(address), port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenerError(f"cannot listen on [{address}]:{port} in {netns.label}: {exc}") from exc
    return sock


async def _serve_socket(app: Any, sock: socket.socket) -> uvicorn.Server:
    """Serve ``app`` on an open socket with uvicorn, without its signal handling or tick loop."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=30,
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    return server


def _identity(name: str | None) -> tuple[int, int] | None:
    """Which namespace ``name`` is now: (device, inode) of its mount; None for our own or none."""
    if name is None:
        return None
    try:
        found = os.stat(Path(NETNS_RUN_DIR, name))
    except OSError:
        return None
    return found.st_dev, found.st_ino


class ApplianceServer:
    """The set of appliances this agent serves."""

    def __init__(self, *, token: str, state_root: Path, port: int = 5000) -> None:
        self.app = create_app(token=token)
        self.state_root = state_root
        self.port = port
        self.appliances: dict[str | None, Appliance] = {}
        self._lock = asyncio.Lock()
        #: one lock per namespace: adding one (which re-applies its saved configuration, tens
        #: of ms) does not hold up the others, so a re-adoption of 1,000 runs in parallel
        self._locks: dict[str | None, asyncio.Lock] = {}

    def _lock_of(self, name: str | None) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def add(self, name: str | None, listen: IPAddress | None = None) -> Appliance:
        """Serve the namespace ``name`` (None: our own); idempotent for a served one.

        Namespaces are added in parallel; one namespace's adds and removes one at a time.
        """
        async with self._lock_of(name):
            served = self.appliances.get(name)
            if served is not None:
                if served.identity == _identity(name):
                    return served
                # the namespace was deleted (a crash, an operator) and a new one took its
                # name: the old listener serves a namespace nobody can reach any more
                log.warning("namespace %s was made anew: serving the new one", served.netns.label)
                del self.appliances[name]
                with contextlib.suppress(ApplianceError, OSError):
                    await self._close(served, stop_services=True)
            netns = Netns(name)
            if not netns.exists():
                raise NotFoundError(f"network namespace {name!r} does not exist")
            state_dir = self.state_root / netns.label
            router = Router(netns=netns, state_dir=state_dir, api_port=self.port)
            try:
                address = listen or await router.links.global_address(MANAGEMENT_NIC)
                if address is None:
                    raise ListenerError(
                        f"{MANAGEMENT_NIC} in {netns.label} has no global address; give one to listen on"
                    )
                state_dir.mkdir(parents=True, exist_ok=True)
                router.protected = {address}
                await router.resume()
                sock = _listening_socket(netns, address, self.port)
                server = await _serve_socket(bind_router(self.app, router), sock)
            except BaseException:
                router.links.close()
                raise
            appliance = Appliance(
                netns, router, address, self.port, server, sock, identity=_identity(name)
            )
            self.appliances[name] = appliance
            log.info("serving %s on [%s]:%s", netns.label, address, self.port)
            return appliance

    async def remove(self, name: str | None, *, stop_services: bool = True) -> None:
        """Stop serving ``name``; by default also stop its services and drop its state."""
        lock = self._lock_of(name)
        async with lock:
            appliance = self.appliances.pop(name, None)
            if appliance is None:
                raise NotFoundError(f"namespace {name!r} is not served here")
            await self._close(appliance, stop_services=stop_services)
        # forgotten unless another add or remove of the name waits for it
        if not lock.locked() and not getattr(lock, "_waiters", None):
            self._locks.pop(name, None)

    async def _close(self, appliance: Appliance, *, stop_services: bool) -> None:
        appliance.server.should_exit = True
        await appliance.server.shutdown(sockets=[appliance.sock])
        appliance.sock.close()
        await appliance.router.close(stop_services=stop_services)
        log.info("stopped serving %s", appliance.netns.label)

    async def close(self) -> None:
        """Close every listener; leave the data plane running (see module docstring).

        All at once: each uvicorn shutdown polls its connections every 0.1 s until they
        are gone, so one after the other 200 appliances took ~17 s to stop.
        """
        async with self._lock:
            appliances = list(self.appliances.values())
            self.appliances.clear()
            results = await asyncio.gather(
                *(self._close(a, stop_services=False) for a in appliances),
                return_exceptions=True,
            )
            for appliance, result in zip(appliances, results, strict=True):
                if isinstance(result, Exception) and not isinstance(
                    result, ApplianceError | OSError
                ):
                    log.error("closing %s: %r", appliance.netns.label, result)

    def listing(self) -> list[dict[str, Any]]:
        return [a.describe() for a in self.appliances.values()]
