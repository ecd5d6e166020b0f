"""A real network API served over HTTP, on SQLite and on PostgreSQL, with a real client.

``network_api`` starts the service in a thread (uvicorn on a free loopback
port) against a fresh database: a SQLite file, or a PostgreSQL database
created for the test and dropped after it (the server at 127.0.0.1:5432 must
be running: the test fails, never skips, when it is not). ``sdk`` is an
openstacksdk connection to it, as admin; ``sdk_as(project)`` one as a member.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import openstack
import pytest
import uvicorn
from keystoneauth1 import noauth
from keystoneauth1 import session as ksa_session

from astara.bus.embedded import EmbeddedBus
from astara.network.db.engine import open_database
from astara.network.server import build_app
from astara.network.service import NetworkService
from astara.settings import NetworkSettings
from tests.conftest import scratch_database

T = TypeVar("T")


@dataclass
class NetworkApi:
    url: str
    service: NetworkService
    bus: EmbeddedBus
    loop: asyncio.AbstractEventLoop

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the server's loop (where the bus lives) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with scratch_database(request.param, tmp_path, "network") as url:
        yield url


@pytest.fixture
def network_api(database_url: str) -> Iterator[NetworkApi]:
    port = _free_port()
    settings = NetworkSettings(db_url=database_url, port=port, vlan_ranges=((100, 102),))
    db = open_database(database_url)
    bus = EmbeddedBus()
    app, service = build_app(settings, db=db, bus=bus)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="network-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the network API did not start")
        time.sleep(0.02)
    try:
        yield NetworkApi(f"http://127.0.0.1:{port}", service, bus, app.state.loop)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        db.close()


def connect(
    url: str, *, project: str = "admin", admin: bool = True
) -> openstack.connection.Connection:
    """An openstacksdk connection in no-auth mode, as ``project`` (admin or member)."""
    headers = {
        "X-Project-Id": project,
        "X-Roles": "admin,member,reader" if admin else "member,reader",
    }
    session = ksa_session.Session(auth=noauth.NoAuth(endpoint=url), additional_headers=headers)
    return openstack.connection.Connection(session=session, network_endpoint_override=url + "/")


@pytest.fixture
def sdk(network_api: NetworkApi) -> openstack.connection.Connection:
    return connect(network_api.url)


@pytest.fixture
def sdk_as(network_api: NetworkApi) -> Callable[[str], openstack.connection.Connection]:
    return lambda project: connect(network_api.url, project=project, admin=False)
