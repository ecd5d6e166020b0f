"""Run the network service: database, service, HTTP app, and uvicorn, from settings.

``build_app`` is what tests and ``astara up`` use in-process; ``serve`` runs
it in the foreground until SIGINT/SIGTERM.
"""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI

from astara.network.api.app import create_app
from astara.network.api.auth import Authenticator
from astara.network.db.engine import Database, open_database
from astara.network.service import Events, NetworkService
from astara.settings import NetworkSettings

log = logging.getLogger(__name__)


def build_app(
    settings: NetworkSettings, *, db: Database | None = None, events: Events | None = None
) -> tuple[FastAPI, NetworkService]:
    database = db or open_database(settings.db_url)
    service = NetworkService(database, settings, events)
    auth = Authenticator(
        default_project=settings.default_project, admin_by_default=settings.admin_by_default
    )
    return create_app(service, auth), service


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
