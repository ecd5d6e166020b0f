"""Run the network service: database, service, HTTP app, and uvicorn, from settings.

``build_app`` is what tests and ``astara up`` use in-process; ``serve`` runs
it in the foreground until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
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


def serve(settings: NetworkSettings) -> None:
    app, service = build_app(settings)
    log.info(
        "network API (Neutron v2.0) on http://%s:%d, database %s",
        settings.host,
        settings.port,
        settings.db_url,
    )
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    finally:
        service.db.close()
