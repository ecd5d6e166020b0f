"""Run the network service: database, service, HTTP app, and uvicorn, from settings.

``build_app`` is what tests and ``astara up`` use in-process; ``serve`` runs
it in the foreground until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from astara.bus.base import Bus
from astara.bus.transports import bus_from_url
from astara.network.api.app import create_app
from astara.network.api.auth import Authenticator, NoAuth
from astara.network.api.keystone import KeystoneAuthenticator
from astara.network.db.engine import Database, open_database
from astara.network.events import LoopEvents
from astara.network.notify import Notifier
from astara.network.service import NetworkService
from astara.settings import NetworkSettings

log = logging.getLogger(__name__)


def build_app(
    settings: NetworkSettings, *, db: Database | None = None, bus: Bus | None = None
) -> tuple[FastAPI, NetworkService]:
    """The app and its service; notifications go to ``bus`` once the app runs on a loop."""
    database = db or open_database(settings.db_url)
    service = NetworkService(database, settings)
    keystone: KeystoneAuthenticator | None = None
    auth: Authenticator
    if settings.auth_strategy == "keystone":
        auth = keystone = KeystoneAuthenticator.from_settings(settings)
    elif settings.auth_strategy == "noauth":
        auth = NoAuth(
            default_project=settings.default_project, admin_by_default=settings.admin_by_default
        )
    else:
        raise ValueError(f"unknown auth_strategy {settings.auth_strategy!r}: noauth or keystone")
    app = create_app(service, auth)
    if keystone is not None:
        keystone.install(app)  # tokens are validated before routing, on the event loop
    notifier = Notifier(bus=bus or bus_from_url(settings.bus_url), host=settings.host_name)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        app.state.loop = loop
        service.events = LoopEvents(notifier, loop)
        # what is alive now lives as long as the process: keep the collector from
        # walking it again in every full collection (a 40 ms pause on one request)
        gc.freeze()
        try:
            yield
        finally:
            if keystone is not None:
                await keystone.aclose()

    app.router.lifespan_context = lifespan
    return app, service


def serve(settings: NetworkSettings, *, workers: int = 1) -> None:
    """Serve until SIGINT/SIGTERM; with ``workers`` > 1, from that many processes.

    Workers share one listening socket made here, each with its own app,
    database engine and bus connection (the schema is migrated once, before
    they start). Notifications then leave from every worker: with the embedded
    bus they reach no one outside its process, so ``--bus-url rabbit://…`` is
    what carries them to orchestrators. A worker that dies ends the others and
    the command exits non-zero, for its supervisor to start it again.
    """
    if workers <= 1:
        app, service = build_app(settings)
        service.db.warm()
        _announce(settings, workers)
        try:
            uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
        finally:
            service.db.close()
        return
    if settings.bus_url.startswith("embedded"):
        log.warning(
            "%d workers with the embedded bus: each worker's notifications stay in its own"
            " process (give --bus-url rabbit://… for orchestrators to see them)",
            workers,
        )
    open_database(settings.db_url).close()  # migrations, once
    listener = _listen(settings.host, settings.port)
    _announce(settings, workers)
    children = [_fork_worker(settings, listener) for _ in range(workers)]
    listener.close()
    code = _supervise(children)
    if code:
        raise SystemExit(code)


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket made with protocol IPPROTO_TCP: asyncio sets TCP_NODELAY only
    on sockets that say so, and without it each response waits on a delayed ACK (~40 ms)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(2048)
    except OSError:
        listener.close()
        raise
    return listener


def _announce(settings: NetworkSettings, workers: int) -> None:
    log.info(
        "network API (Neutron v2.0) on http://%s:%d, database %s, %d worker(s)",
        settings.host,
        settings.port,
        settings.db_url,
        workers,
    )


def _fork_worker(settings: NetworkSettings, listener: socket.socket) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the child: its own app and engine (nothing of the parent's but the socket)
        app, service = build_app(settings)
        service.db.warm()
        try:
            server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
            server.run(sockets=[listener])
            code = 0
        finally:
            service.db.close()
    except BaseException:  # a worker never returns into the parent's code
        log.exception("network API worker %d failed", os.getpid())
    finally:
        os._exit(code)


def _supervise(children: list[int]) -> int:
    """Wait for the workers; pass SIGINT/SIGTERM on; one ending ends them all."""
    alive = set(children)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    code = 0
    while alive:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        alive.discard(pid)
        exit_code = os.waitstatus_to_exitcode(status)
        if not stopping:
            log.error("network API worker %d ended (%d): stopping the others", pid, exit_code)
            code = 1
            stop(signal.SIGTERM, None)
    return code
