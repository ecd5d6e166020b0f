"""astara-ctl's commands (``astara router list|show|rebuild``, ``resource``, ``tenant``,
``global-debug``, ``debug list``, ``poll``, ``workers``) against real HTTP servers.

Two small FastAPI apps, each served by uvicorn on a free loopback port in a
thread: a fake orchestrator admin API that implements the contract and
records every request it gets, and a fake network API with two routers. The
commands run through ``astara.cli.main.main`` as from the shell.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from astara.cli import ctl
from astara.cli.main import main

TOKEN = "s3cret"
NOW = 1_800_000_000.0
EDGE = "6f1c1f0e-1d7e-4c55-9f0c-3a8f7e2b9a01"  # in both views
CORE = "0b9d7a52-8d0e-4f1b-8a43-5c2e6d7f8a02"  # in both views, unhealthy
SPARE = "9a4e2c13-7b6d-4e8f-a1c2-d3e4f5a6b703"  # only in the network API
GONE = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e05"  # only in the orchestrator
UNKNOWN = "ffffffff-0000-4000-8000-000000000000"  # in neither

NET_ROUTERS: list[dict[str, Any]] = [
    {
        "id": EDGE,
        "name": "edge",
        "status": "ACTIVE",
        "external_gateway_info": {"network_id": "ext-net", "enable_snat": True},
        "project_id": "tenant-a",
    },
    {"id": CORE, "name": "core", "status": "ERROR", "project_id": "tenant-a"},
    {"id": SPARE, "name": "spare", "status": "BUILD", "project_id": "tenant-b"},
]


def _router(router_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": router_id,
        "tenant_id": "tenant-a",
        "state": "ACTIVE",
        "status": "ACTIVE",
        "health": {"answering": True, "misses": 0, "last_seen": NOW - 4},
        "appliance": {"name": f"astara-{router_id[:8]}", "management_address": "fdca::2"},
        "last_event": {"type": "router.update", "at": NOW - 125},
        "converge_ms": 412.4,
        "failures": 0,
        "reason": "",
        "debug": None,
    } | fields


ADMIN_ROUTERS = {
    EDGE: _router(EDGE),
    CORE: _router(
        CORE,
        state="REBUILDING",
        status="ERROR",
        health={"answering": False, "misses": 3, "last_seen": NOW - 90},
        converge_ms=None,
        failures=2,
        reason="appliance stopped answering",
        debug={"scope": "resource", "id": CORE, "reason": "looking", "since": NOW - 60},
    ),
    GONE: _router(GONE, state="ABSENT", status=None, appliance=None, last_event=None),
}
HISTORY = [
    {"at": NOW - 130, "kind": "event", "event": "router.update", "reason": "port added"},
    {
        "at": NOW - 129,
        "kind": "transition",
        "from": "ACTIVE",
        "to": "CONFIGURING",
        "action": "configure",
        "ms": 35.2,
    },
    {"at": NOW - 125, "kind": "transition", "from": "CONFIGURING", "to": "ACTIVE", "ms": 377.0},
]


@dataclass
class Seen:
    method: str
    path: str
    token: str | None
    body: Any


@dataclass
class Servers:
    admin_url: str
    network_url: str
    admin_seen: list[Seen] = field(default_factory=list)
    network_seen: list[str] = field(default_factory=list)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _admin_app(seen: list[Seen]) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def check(request: Request, call_next: Any) -> Any:
        raw = await request.body()
        seen.append(
            Seen(
                request.method,
                request.url.path,
                request.headers.get("x-auth-token"),
                json.loads(raw) if raw else None,
            )
        )
        if request.headers.get("x-auth-token") != TOKEN:
            return _error(401, "unauthorized", "bad token")
        return await call_next(request)

    def known(router_id: str) -> JSONResponse | None:
        if router_id in ADMIN_ROUTERS:
            return None
        return _error(404, "not_found", f"no router {router_id}")

    @app.get("/v1/routers")
    async def routers() -> Any:
        return {"routers": list(ADMIN_ROUTERS.values())}

    @app.get("/v1/routers/{router_id}")
    async def router(router_id: str) -> Any:
        return known(router_id) or ADMIN_ROUTERS[router_id] | {"history": HISTORY}

    @app.post("/v1/routers/{router_id}/rebuild")
    async def rebuild(router_id: str) -> Any:
        return known(router_id) or JSONResponse(
            {"router_id": router_id, "queued": True}, status_code=202
        )

    def mode(scope: str, ident: str, reason: str) -> dict[str, Any]:
        return {"scope": scope, "id": ident, "reason": reason, "since": NOW - 30}

    @app.put("/v1/debug/resources/{ident}")
    async def resource_debug(ident: str, request: Request) -> Any:
        return mode("resource", ident, (await request.json())["reason"])

    @app.delete("/v1/debug/resources/{ident}")
    async def resource_manage(ident: str) -> Any:
        return {"managed": mode("resource", ident, "looking")}

    @app.put("/v1/debug/tenants/{ident}")
    async def tenant_debug(ident: str, request: Request) -> Any:
        return mode("tenant", ident, (await request.json())["reason"])

    @app.delete("/v1/debug/tenants/{ident}")
    async def tenant_manage(ident: str) -> Any:
        return {"managed": None}

    @app.put("/v1/debug/global")
    async def global_debug(request: Request) -> Any:
        return mode("global", "*", (await request.json())["reason"])

    @app.delete("/v1/debug/global")
    async def global_manage() -> Any:
        return {"managed": mode("global", "*", "upgrade")}

    @app.get("/v1/debug")
    async def modes() -> Any:
        return {
            "modes": [
                mode("resource", CORE, "looking"),
                mode("tenant", "tenant-b", "migration"),
            ]
        }

    @app.post("/v1/poll")
    async def poll() -> Any:
        return JSONResponse({"queued": 3}, status_code=202)

    @app.get("/v1/workers")
    async def workers() -> Any:
        return {
            "workers": [
                {
                    "pid": 4242,
                    "shard": 0,
                    "shards": 2,
                    "concurrency": 4,
                    "running": [EDGE],
                    "queued": 1,
                },
                {
                    "pid": 4243,
                    "shard": 1,
                    "shards": 2,
                    "concurrency": 4,
                    "running": [],
                    "queued": 0,
                },
            ]
        }

    return app


def _network_app(seen: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/v2.0/routers")
    async def routers(request: Request) -> Any:
        seen.append(str(request.url.path) + ("?" + request.url.query if request.url.query else ""))
        name = request.query_params.get("name")
        return {"routers": [r for r in NET_ROUTERS if name is None or r["name"] == name]}

    @app.get("/v2.0/routers/{router_id}")
    async def router(router_id: str, request: Request) -> Any:
        seen.append(str(request.url.path))
        for r in NET_ROUTERS:
            if r["id"] == router_id:
                return {"router": r}
        return JSONResponse(
            {
                "NeutronError": {
                    "type": "RouterNotFound",
                    "message": f"Router {router_id} could not be found",
                }
            },
            status_code=404,
        )

    return app


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    admin_seen: list[Seen] = []
    network_seen: list[str] = []
    running = []
    urls = []
    for app in (_admin_app(admin_seen), _network_app(network_seen)):
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "a server did not start"
            time.sleep(0.02)
        running.append((server, thread))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        yield Servers(urls[0], urls[1], admin_seen, network_seen)
    finally:
        for server, thread in running:
            server.should_exit = True
            thread.join(timeout=10)


@pytest.fixture
def api(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> Servers:
    for name in ("ASTARA_ADMIN_URL", "ASTARA_ADMIN_TOKEN", "ASTARA_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(ctl, "_now", lambda: NOW)
    servers.admin_seen.clear()
    servers.network_seen.clear()
    return servers


def run(api: Servers, *argv: str, token: str | None = TOKEN) -> int:
    flags = ["--admin-url", api.admin_url, "--url", api.network_url]
    if token is not None:
        flags += ["--admin-token", token]
    return main([*argv, *flags])


def lines(text: str) -> list[list[str]]:
    """The table's rows as lists of cells."""
    rows = [line.replace("┃", "│") for line in text.splitlines()]
    return [[c.strip() for c in line.split("│")[1:-1]] for line in rows if "│" in line]


# -- router list ---------------------------------------------------------------------------
def test_router_list_joins_the_orchestrators_view(
    api: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(api, "router", "list") == 0
    out, err = capsys.readouterr()
    assert err == ""
    rows = lines(out)
    assert rows[0] == [
        "ID",
        "Name",
        "Status",
        "External network",
        "SNAT",
        "Project",
        "State",
        "Health",
        "Appliance",
        "Last event",
        "Converge",
    ]
    by_name = {r[1]: r for r in rows[1:]}
    assert by_name["edge"][6:] == [
        "ACTIVE",
        "ok",
        "astara-6f1c1f0e",
        "router.update 2m5s ago",
        "412 ms",
    ]
    assert by_name["core"][6:] == [
        "REBUILDING",
        "3 misses",
        "astara-0b9d7a52",
        "router.update 2m5s ago",
        "-",
    ]
    assert by_name["spare"][6:] == ["-", "-", "-", "-", "-"]
    assert [(s.method, s.path, s.token, s.body) for s in api.admin_seen] == [
        ("GET", "/v1/routers", TOKEN, None)
    ]


def test_router_list_json_is_the_merged_dicts(
    api: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(api, "router", "list", "-f", "json") == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["edge"] == NET_ROUTERS[0] | {"orchestrator": ADMIN_ROUTERS[EDGE]}
    assert listed["spare"]["orchestrator"] is None
    assert listed["core"]["orchestrator"]["state"] == "REBUILDING"


def test_router_list_without_the_orchestrator_is_the_network_view_and_a_note(
    api: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    down = f"http://127.0.0.1:{_free_port()}"
    assert main(["router", "list", "--url", api.network_url, "--admin-url", down]) == 0
    out, err = capsys.readouterr()
    rows = lines(out)
    assert rows[0] == ["ID", "Name", "Status", "External network", "SNAT", "Project"]
    assert {r[1] for r in rows[1:]} == {"edge", "core", "spare"}
    assert err.splitlines() == [
        f"astara: the orchestrator's view is unavailable: the orchestrator's admin API at "
        f"{down} does not answer: is `astara up` running?"
    ]


# -- router show ---------------------------------------------------------------------------
def test_router_show_adds_the_orchestrators_view_and_history(
    api: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(api, "router", "show", "core") == 0
    out, err = capsys.readouterr()
    assert err == ""
    rows = lines(out)
    assert ["name", "core"] in rows  # the network API's record
    assert ["state", "REBUILDING"] in rows
    assert ["health", "3 misses"] in rows
    assert ["last seen", "1m30s ago"] in rows
    assert ["management address", "fdca::2"] in rows
    assert ["failures", "2"] in rows
    assert ["reason", "appliance stopped answering"] in rows
    assert ["debug", "resource debug since 2027-01-15 07:59:00 UTC: looking"] in rows
    history = rows[
        rows.index(["Time (UTC)", "Kind", "Event/action", "From→to", "ms", "Reason"]) + 1 :
    ]
    assert history == [
        ["2027-01-15 07:57:50", "event", "router.update", "", "", "port added"],
        ["2027-01-15 07:57:51", "transition", "configure", "ACTIVE→CONFIGURING", "35", ""],
        ["2027-01-15 07:57:55", "transition", "", "CONFIGURING→ACTIVE", "377", ""],
    ]
    assert [(s.method, s.path, s.token) for s in api.admin_seen] == [
        ("GET", f"/v1/routers/{CORE}", TOKEN)
    ]


def test_router_show_json_nests_the_orchestrators_router(
    api: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(api, "router", "show", EDGE, "-f", "json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == NET_ROUTERS[0] | {"orchestrator": ADMIN_ROUTERS[EDGE] | {"history": HISTORY}}


def test_router_show_of_a_router_the_orchestrator_does_not_know(
    api: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(api, "router", "show", "spare") == 0
    out, err = capsys.readouterr()
    assert ["name", "spare"] in lines(out)
    assert err == f"astara: router {SPARE} is not known to the orchestrator\n"


def test_router_show_of_a_router_only_the_orchestrator_knows(
    api: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(api, "router", "show", GONE) == 0
    out, err = capsys.readouterr()
    assert ["state", "ABSENT"] in lines(out)
    assert "the network API does not know router" in err


def test_router_show_of_a_router_nobody_knows_fails(
    api: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(api, "router", "show", UNKNOWN) == 1
    assert capsys.readouterr().err == f"astara: no router has the id or name {UNKNOWN!r}\n"


# -- router rebuild ------------------------------------------------------------------------
def test_router_rebuild_by_name_resolves_it_in_the_network_api(
    api: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(api, "router", "rebuild", "edge") == 0
    assert capsys.readouterr().out == f"router {EDGE}: rebuild queued\n"
    assert "/v2.0/routers?name=edge" in api.network_seen
    assert [(s.method, s.path, s.token, s.body) for s in api.admin_seen] == [
        ("POST", f"/v1/routers/{EDGE}/rebuild", TOKEN, None)
    ]


def test_router_rebuild_by_id_asks_only_the_orchestrator(
    api: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(api, "router", "rebuild", CORE, "-f", "json") == 0
    assert json.loads(capsys.readouterr().out) == {"router_id": CORE, "queued": True}
    assert api.network_seen == []


def test_router_rebuild_of_an_unknown_router_fails_clearly(
    api: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(api, "router", "rebuild", UNKNOWN) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"astara: router {UNKNOWN} is not known to the orchestrator\n"


def test_an_unknown_router_name_fails_before_the_orchestrator_is_asked(
    api: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(api, "router", "rebuild", "nosuch") == 1
    assert capsys.readouterr().err == "astara: no router has the id or name 'nosuch'\n"
    assert api.admin_seen == []


# -- debug modes ---------------------------------------------------------------------------
def test_resource_debug_and_manage(api: Servers, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(api, "resource", "debug", "core", "--reason", "looking at it") == 0
    assert capsys.readouterr().out == (
        f"resource {CORE} is in debug mode (not managed): looking at it\n"
    )
    assert run(api, "resource", "manage", CORE) == 0
    assert capsys.readouterr().out == (
        f"resource {CORE} is managed again (was in debug since 2027-01-15 07:59:30 UTC)\n"
    )
    assert [(s.method, s.path, s.token, s.body) for s in api.admin_seen] == [
        ("PUT", f"/v1/debug/resources/{CORE}", TOKEN, {"reason": "looking at it"}),
        ("DELETE", f"/v1/debug/resources/{CORE}", TOKEN, None),
    ]


def test_tenant_debug_and_manage(api: Servers, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(api, "tenant", "debug", "tenant-b", "--reason", "migration", "-f", "json") == 0
    assert json.loads(capsys.readouterr().out) == {
        "scope": "tenant",
        "id": "tenant-b",
        "reason": "migration",
        "since": NOW - 30,
    }
    assert run(api, "tenant", "manage", "tenant-b") == 0
    assert capsys.readouterr().out == "tenant tenant-b is managed again\n"
    assert [(s.method, s.path, s.body) for s in api.admin_seen] == [
        ("PUT", "/v1/debug/tenants/tenant-b", {"reason": "migration"}),
        ("DELETE", "/v1/debug/tenants/tenant-b", None),
    ]
    assert api.network_seen == []  # a tenant is never looked up


def test_global_debug_enable_and_disable(api: Servers, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(api, "global-debug", "enable", "--reason", "upgrade") == 0
    assert capsys.readouterr().out == "the orchestrator is in debug mode (not managed): upgrade\n"
    assert run(api, "global-debug", "disable", "-f", "json") == 0
    assert json.loads(capsys.readouterr().out) == {
        "managed": {"scope": "global", "id": "*", "reason": "upgrade", "since": NOW - 30}
    }
    assert [(s.method, s.path, s.token, s.body) for s in api.admin_seen] == [
        ("PUT", "/v1/debug/global", TOKEN, {"reason": "upgrade"}),
        ("DELETE", "/v1/debug/global", TOKEN, None),
    ]


def test_debug_needs_a_reason(api: Servers, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(api, "global-debug", "enable")
    assert exited.value.code == 2
    assert "--reason" in capsys.readouterr().err


def test_debug_list(api: Servers, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(api, "debug", "list") == 0
    assert lines(capsys.readouterr().out) == [
        ["Scope", "ID", "Reason", "Since (UTC)"],
        ["resource", CORE, "looking", "2027-01-15 07:59:30 (30s ago)"],
        ["tenant", "tenant-b", "migration", "2027-01-15 07:59:30 (30s ago)"],
    ]
    assert [(s.method, s.path, s.token) for s in api.admin_seen] == [("GET", "/v1/debug", TOKEN)]


# -- poll and workers ------------------------------------------------------------------------
def test_poll(api: Servers, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(api, "poll") == 0
    assert capsys.readouterr().out == "poll queued: 3 routers to check\n"
    assert [(s.method, s.path, s.token) for s in api.admin_seen] == [("POST", "/v1/poll", TOKEN)]


def test_workers(api: Servers, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(api, "workers") == 0
    assert lines(capsys.readouterr().out) == [
        ["PID", "Shard", "Concurrency", "Running", "Queued"],
        ["4242", "0/2", "4", EDGE, "1"],
        ["4243", "1/2", "4", "", "0"],
    ]
    assert run(api, "workers", "-f", "json") == 0
    assert [w["pid"] for w in json.loads(capsys.readouterr().out)] == [4242, 4243]


# -- finding the admin API and its token -----------------------------------------------------
def test_nothing_listening_is_one_clear_line(
    api: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    down = f"http://127.0.0.1:{_free_port()}"
    assert main(["poll", "--admin-url", down, "--admin-token", TOKEN]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"astara: the orchestrator's admin API at {down} does not answer: is `astara up` running?\n"
    )


def test_a_wrong_token_is_refused_clearly(api: Servers, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(api, "workers", token="wrong") == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"astara: the orchestrator's admin API at {api.admin_url} refused the token from "
        "--admin-token (401): it is not the orchestrator's admin token\n"
    )
    assert api.admin_seen[0].token == "wrong"


def test_no_token_anywhere_says_where_it_looked(
    api: Servers, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "admin-token"
    assert run(api, "poll", "--admin-token-file", str(missing), token=None) == 1
    err = capsys.readouterr().err
    assert err == (
        f"astara: the orchestrator's admin API at {api.admin_url} needs a token: give "
        f"--admin-token or $ASTARA_ADMIN_TOKEN (no token in {missing}: No such file or directory)\n"
    )
    assert api.admin_seen[0].token is None


def test_the_token_comes_from_the_file_then_the_environment(
    api: Servers,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "admin-token"
    path.write_text(TOKEN + "\n")
    assert run(api, "poll", "--admin-token-file", str(path), token=None) == 0
    monkeypatch.setenv("ASTARA_ADMIN_TOKEN", "from-env")
    assert run(api, "poll", "--admin-token-file", str(path), token=None) == 1
    assert "refused the token from $ASTARA_ADMIN_TOKEN" in capsys.readouterr().err
    assert [s.token for s in api.admin_seen] == [TOKEN, "from-env"]


def test_the_admin_url_comes_from_the_environment(
    api: Servers, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASTARA_ADMIN_URL", api.admin_url + "/")
    monkeypatch.setenv("ASTARA_ADMIN_TOKEN", TOKEN)
    assert main(["poll"]) == 0
    assert capsys.readouterr().out == "poll queued: 3 routers to check\n"
    assert ctl.resolve_admin_url(None) == api.admin_url
    monkeypatch.delenv("ASTARA_ADMIN_URL")
    assert ctl.resolve_admin_url(None) == "http://127.0.0.1:44250"


@pytest.mark.parametrize(
    ("health", "text"),
    [
        (None, "-"),
        ({"answering": None, "misses": 0, "last_seen": None}, "-"),
        ({"answering": True, "misses": 0, "last_seen": NOW}, "ok"),
        ({"answering": True, "misses": 1, "last_seen": NOW}, "1 miss"),
        ({"answering": False, "misses": 3, "last_seen": NOW}, "3 misses"),
        ({"answering": False, "misses": 0, "last_seen": NOW}, "not answering"),
    ],
)
def test_health_text(health: dict[str, Any] | None, text: str) -> None:
    assert ctl.health_text(health) == text


def test_router_show_without_the_orchestrator_is_the_network_view_and_a_note(
    api: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    down = f"http://127.0.0.1:{_free_port()}"
    argv = ["router", "show", "edge", "--url", api.network_url, "--admin-url", down]
    assert main([*argv, "-f", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == NET_ROUTERS[0] | {"orchestrator": None}
    assert err == (
        f"astara: the orchestrator's view is unavailable: the orchestrator's admin API at "
        f"{down} does not answer: is `astara up` running?\n"
    )
    # a router neither can show: the network API's error, not the admin API's
    assert main(["router", "show", UNKNOWN, "--url", api.network_url, "--admin-url", down]) == 1
    assert capsys.readouterr().err == f"astara: no router has the id or name {UNKNOWN!r}\n"
