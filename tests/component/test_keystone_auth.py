"""Keystone token validation, end to end over HTTP, against a fake Keystone v3.

``FakeKeystone`` is a real HTTP server in a thread on loopback (the fake sits
at the process boundary: the network API talks to it exactly as to Keystone):
it issues tokens for passwords it knows (the service user ``neutron``, and
users of this test), validates the tokens it issued (``GET /v3/auth/tokens``
with the service's token in ``X-Auth-Token``; 401 for an unknown service
token, 404 for an unknown or expired subject token) and counts its calls.
The network API runs as in ``conftest.py`` (uvicorn in a thread, SQLite) with
``auth_strategy="keystone"`` pointing at it.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openstack
import pytest
import uvicorn
from keystoneauth1 import session as ksa_session
from keystoneauth1.identity import v3

from astara.bus.embedded import EmbeddedBus
from astara.network.db.engine import open_database
from astara.network.server import build_app
from astara.settings import NetworkSettings

SERVICE_PASSWORD = "service-secret"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class FakeKeystone:
    """Keystone v3's token API, just enough: issue, validate, count."""

    service_password: str = SERVICE_PASSWORD
    service_token_lifetime: float = 3600.0
    #: user name -> (password, project id, roles)
    users: dict[str, tuple[str, str, tuple[str, ...]]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    service_tokens: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    server: ThreadingHTTPServer | None = None

    def issue(
        self,
        project: str | None,
        roles: tuple[str, ...] = ("member", "reader"),
        *,
        user: str | None = None,
        expires_in: float = 3600.0,
    ) -> str:
        """A user token, as if its user had logged in."""
        token = "gAAAA" + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        body: dict[str, Any] = {
            "methods": ["password"],
            "user": {
                "id": user or f"u-{secrets.token_hex(4)}",
                "name": user or "someone",
                "domain": {"id": "default", "name": "Default"},
                "password_expires_at": None,
            },
            "roles": [{"id": f"r-{r}", "name": r} for r in roles],
            "issued_at": _iso(now),
            "expires_at": _iso(now + timedelta(seconds=expires_in)),
            "audit_ids": [secrets.token_urlsafe(8)],
        }
        if project is not None:
            body["project"] = {
                "id": project,
                "name": project,
                "domain": {"id": "default", "name": "Default"},
            }
        with self.lock:
            self.tokens[token] = body
        return token

    def revoke_service_tokens(self) -> None:
        """As if the service's token had been revoked (or Keystone's keys rotated)."""
        with self.lock:
            self.service_tokens.clear()

    def start(self) -> None:
        keystone = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(
                self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

            def _error(self, status: int, title: str) -> None:
                self._reply(status, {"error": {"code": status, "title": title, "message": title}})

            def do_POST(self) -> None:
                if self.path.split("?")[0] != "/v3/auth/tokens":
                    self._error(404, "Not Found")
                    return
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = request["auth"]["identity"]["password"]["user"]
                name, password = user["name"], user["password"]
                if name == "neutron" and password == keystone.service_password:
                    with keystone.lock:
                        keystone.calls["service-auth"] += 1
                    token = keystone.issue(
                        "service-project",
                        ("service",),
                        user="neutron",
                        expires_in=keystone.service_token_lifetime,
                    )
                    with keystone.lock:
                        keystone.service_tokens.add(token)
                elif name in keystone.users and keystone.users[name][0] == password:
                    with keystone.lock:
                        keystone.calls["user-auth"] += 1
                    _, project, roles = keystone.users[name]
                    token = keystone.issue(project, roles, user=name)
                else:
                    with keystone.lock:
                        keystone.calls["refused-auth"] += 1
                    self._error(401, "Unauthorized")
                    return
                body = dict(keystone.tokens[token], catalog=[])
                self._reply(201, {"token": body}, {"X-Subject-Token": token})

            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/v3/auth/tokens":
                    self._error(404, "Not Found")
                    return
                with keystone.lock:
                    keystone.calls["validate"] += 1
                    service_ok = self.headers.get("X-Auth-Token") in keystone.service_tokens
                    body = keystone.tokens.get(self.headers.get("X-Subject-Token", ""))
                if not service_ok:
                    self._error(401, "Unauthorized")
                    return
                expires = body and datetime.fromisoformat(body["expires_at"])
                if not body or not expires or expires <= datetime.now(UTC):
                    self._error(404, "Not Found")
                    return
                self._reply(200, {"token": body}, {"X-Subject-Token": "(the subject token)"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="fake-keystone", daemon=True
        ).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def keystone() -> Iterator[FakeKeystone]:
    fake = FakeKeystone()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@contextmanager
def network_api(tmp_path: Path, **keystone_settings: Any) -> Iterator[str]:
    """The network API on SQLite with ``auth_strategy="keystone"``; yields its URL."""
    port = _free_port()
    db_url = f"sqlite:///{tmp_path / f'network-{port}.db'}"
    settings = NetworkSettings(
        db_url=db_url,
        port=port,
        auth_strategy="keystone",
        keystone_username="neutron",
        keystone_password=SERVICE_PASSWORD,
        **keystone_settings,
    )
    db = open_database(db_url)
    app, _service = build_app(settings, db=db, bus=EmbeddedBus())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="network-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the network API did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        db.close()


@pytest.fixture
def api(keystone: FakeKeystone, tmp_path: Path) -> Iterator[str]:
    with network_api(tmp_path, keystone_url=keystone.url) as url:
        yield url


Client = Callable[[str | None], httpx.Client]


@pytest.fixture
def client(api: str) -> Iterator[Client]:
    made: list[httpx.Client] = []

    def make(token: str | None) -> httpx.Client:
        headers = {"X-Auth-Token": token} if token else {}
        made.append(httpx.Client(base_url=api, headers=headers, timeout=10))
        return made[-1]

    yield make
    for c in made:
        c.close()


def _neutron_error(response: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["NeutronError"]
    assert error["type"] == type_
    assert set(error) == {"type", "message", "detail"}
    return error


def _network_names(c: httpx.Client) -> set[str]:
    response = c.get("/v2.0/networks")
    assert response.status_code == 200, response.text
    return {n["name"] for n in response.json()["networks"]}


def test_projects_see_their_own_networks_and_admins_see_all(
    keystone: FakeKeystone, client: Client
) -> None:
    alice = client(keystone.issue("project-a", user="alice"))
    bob = client(keystone.issue("project-b", user="bob"))
    admin = client(keystone.issue("project-admin", ("admin", "member", "reader"), user="root"))

    made = alice.post("/v2.0/networks", json={"network": {"name": "net-a"}})
    assert made.status_code == 201, made.text
    assert made.json()["network"]["project_id"] == "project-a"
    assert bob.post("/v2.0/networks", json={"network": {"name": "net-b"}}).status_code == 201
    shared = admin.post("/v2.0/networks", json={"network": {"name": "common", "shared": True}})
    assert shared.status_code == 201, shared.text
    # a member cannot create in another project: the token's project wins
    other = alice.post(
        "/v2.0/networks", json={"network": {"name": "sneaky", "project_id": "project-b"}}
    )
    assert other.status_code in (400, 403), other.text

    assert _network_names(alice) == {"net-a", "common"}
    assert _network_names(bob) == {"net-b", "common"}
    assert _network_names(admin) == {"net-a", "net-b", "common"}
    # identity headers are ignored in keystone mode: the token says who the caller is
    spoofed = alice.get("/v2.0/networks", headers={"X-Project-Id": "project-b", "X-Roles": "admin"})
    assert {n["name"] for n in spoofed.json()["networks"]} == {"net-a", "common"}
    # another project's network is not found, as in Neutron
    net_b = next(n for n in admin.get("/v2.0/networks").json()["networks"] if n["name"] == "net-b")
    _neutron_error(alice.get(f"/v2.0/networks/{net_b['id']}"), 404, "NetworkNotFound")


def test_a_missing_token_is_401_with_neutrons_body(keystone: FakeKeystone, client: Client) -> None:
    anonymous = client(None)
    for path in ("/v2.0/networks", "/v2.0/", "/v2.0/extensions", "/v2.0/no-such-thing"):
        response = anonymous.get(path)
        error = _neutron_error(response, 401, "HTTPUnauthorized")
        assert error["message"] == "The request you have made requires authentication."
        assert response.headers["www-authenticate"] == f'Keystone uri="{keystone.url}"'
    _neutron_error(
        anonymous.post("/v2.0/networks", json={"network": {"name": "x"}}), 401, "HTTPUnauthorized"
    )
    # the version document stays open, as in Neutron
    assert anonymous.get("/").status_code == 200
    assert keystone.calls["validate"] == 0


def test_an_unknown_or_expired_token_is_401(keystone: FakeKeystone, client: Client) -> None:
    response = client("gAAAA-not-a-token").get("/v2.0/networks")
    _neutron_error(response, 401, "HTTPUnauthorized")
    assert "www-authenticate" in response.headers
    expired = keystone.issue("project-a", expires_in=-10)
    _neutron_error(client(expired).get("/v2.0/networks"), 401, "HTTPUnauthorized")
    unscoped = keystone.issue(None)
    error = _neutron_error(client(unscoped).get("/v2.0/networks"), 401, "HTTPUnauthorized")
    assert "project-scoped" in error["detail"]


def test_keystone_unreachable_is_503(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{_free_port()}"
    with network_api(tmp_path, keystone_url=nowhere, keystone_timeout=2.0) as url:
        response = httpx.get(f"{url}/v2.0/networks", headers={"X-Auth-Token": "gAAAA-token"})
    error = _neutron_error(response, 503, "HTTPServiceUnavailable")
    assert "Keystone" in error["message"]
    assert "Traceback" not in response.text


def test_keystone_going_down_is_503_for_new_tokens_cached_ones_still_work(
    keystone: FakeKeystone, client: Client
) -> None:
    known = client(keystone.issue("project-a"))
    assert known.get("/v2.0/networks").status_code == 200
    fresh = client(keystone.issue("project-a"))
    keystone.stop()
    _neutron_error(fresh.get("/v2.0/networks"), 503, "HTTPServiceUnavailable")
    assert known.get("/v2.0/networks").status_code == 200


def test_wrong_service_password_is_503_not_401(keystone: FakeKeystone, tmp_path: Path) -> None:
    keystone.service_password = "rotated"
    with network_api(tmp_path, keystone_url=keystone.url) as url:
        response = httpx.get(
            f"{url}/v2.0/networks", headers={"X-Auth-Token": keystone.issue("project-a")}
        )
    error = _neutron_error(response, 503, "HTTPServiceUnavailable")
    assert "authenticate to Keystone" in error["detail"]
    assert SERVICE_PASSWORD not in response.text
    assert keystone.calls["refused-auth"] == 1


def test_validated_tokens_are_cached(keystone: FakeKeystone, client: Client) -> None:
    alice = client(keystone.issue("project-a"))
    for _ in range(3):
        assert alice.get("/v2.0/networks").status_code == 200
    assert alice.post("/v2.0/networks", json={"network": {"name": "n"}}).status_code == 201
    assert keystone.calls["validate"] == 1
    assert keystone.calls["service-auth"] == 1
    bob = client(keystone.issue("project-b"))
    assert bob.get("/v2.0/networks").status_code == 200
    assert keystone.calls["validate"] == 2
    assert keystone.calls["service-auth"] == 1  # the service token is reused


def test_the_cache_respects_the_tokens_expiry(keystone: FakeKeystone, client: Client) -> None:
    brief = client(keystone.issue("project-a", expires_in=1.0))
    assert brief.get("/v2.0/networks").status_code == 200
    assert brief.get("/v2.0/networks").status_code == 200
    assert keystone.calls["validate"] == 1
    time.sleep(1.1)
    # past its expiry the cached entry is gone: Keystone is asked, and says no
    _neutron_error(brief.get("/v2.0/networks"), 401, "HTTPUnauthorized")
    assert keystone.calls["validate"] == 2


def test_the_cache_respects_its_ttl(keystone: FakeKeystone, tmp_path: Path) -> None:
    with network_api(tmp_path, keystone_url=keystone.url, keystone_token_cache_ttl=0.3) as url:
        headers = {"X-Auth-Token": keystone.issue("project-a")}
        assert httpx.get(f"{url}/v2.0/networks", headers=headers).status_code == 200
        assert httpx.get(f"{url}/v2.0/networks", headers=headers).status_code == 200
        assert keystone.calls["validate"] == 1
        time.sleep(0.4)
        assert httpx.get(f"{url}/v2.0/networks", headers=headers).status_code == 200
        assert keystone.calls["validate"] == 2


def test_the_service_token_is_fetched_again_after_a_401(
    keystone: FakeKeystone, client: Client
) -> None:
    assert client(keystone.issue("project-a")).get("/v2.0/networks").status_code == 200
    assert keystone.calls["service-auth"] == 1
    keystone.revoke_service_tokens()
    # the next validation is refused (401), the service authenticates again, the retry passes
    assert client(keystone.issue("project-b")).get("/v2.0/networks").status_code == 200
    assert keystone.calls["service-auth"] == 2
    assert keystone.calls["validate"] == 3


def test_the_service_token_is_fetched_again_before_it_expires(
    keystone: FakeKeystone, client: Client
) -> None:
    keystone.service_token_lifetime = 30.0  # inside the refresh margin: replaced at each use
    assert client(keystone.issue("project-a")).get("/v2.0/networks").status_code == 200
    assert client(keystone.issue("project-b")).get("/v2.0/networks").status_code == 200
    assert keystone.calls["service-auth"] == 2
    assert keystone.calls["validate"] == 2


def test_openstacksdk_with_a_keystone_token(keystone: FakeKeystone, api: str) -> None:
    keystone.users["carol"] = ("carol-password", "project-c", ("member", "reader"))
    auth = v3.Password(
        auth_url=f"{keystone.url}/v3",
        username="carol",
        password="carol-password",
        user_domain_name="Default",
        project_id="project-c",
    )
    sdk = openstack.connection.Connection(
        session=ksa_session.Session(auth=auth), network_endpoint_override=api + "/"
    )
    made = sdk.network.create_network(name="via-sdk")
    assert made.project_id == "project-c"
    assert [n.name for n in sdk.network.networks()] == ["via-sdk"]
    assert keystone.calls["user-auth"] == 1
    assert keystone.calls["validate"] == 1  # one validation, then the cache
