"""The admin API of one orchestrator (FastAPI), as documented in docs/admin-api.md.

``create_admin_app(operations, token)`` serves, on 127.0.0.1:44250 under
``astara up``:

- ``/v1/...``: routers, rebuild, debug modes, poll, workers; every request
  must carry ``X-Auth-Token: <token>`` (compared in constant time), else 401;
- ``/metrics``: the Prometheus exposition, without a token.

Every error is ``{"error": {"code": <status>, "message": <text>}}``. The
app only translates HTTP to the calls of ``AdminOperations`` (implemented by
``operations.Operations``), which knows nothing of HTTP.
"""

from __future__ import annotations

import hmac
from typing import Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from astara.orchestrator.control_store import GLOBAL_ID, DebugMode
from astara.orchestrator.metrics import CONTENT_TYPE

__all__ = ["DEFAULT_PORT", "TOKEN_HEADER", "AdminOperations", "create_admin_app"]

DEFAULT_PORT = 44250
TOKEN_HEADER = "X-Auth-Token"  # noqa: S105 - a header name, not a secret


class AdminOperations(Protocol):
    """What the admin API asks of the orchestrator (``operations.Operations``)."""

    async def routers_view(self) -> list[dict[str, Any]]: ...

    async def router_view(self, router_id: str) -> dict[str, Any] | None: ...

    def rebuild(self, router_id: str) -> None: ...

    async def poll(self) -> int: ...

    def workers(self) -> list[dict[str, Any]]: ...

    def modes(self) -> list[DebugMode]: ...

    async def set_debug(self, scope: str, ident: str, reason: str) -> DebugMode: ...

    async def manage(self, scope: str, ident: str) -> DebugMode | None: ...

    def metrics_text(self) -> bytes: ...


class DebugBody(BaseModel):
    """The body of ``PUT /v1/debug/...``."""

    model_config = ConfigDict(extra="forbid")
    reason: str


class ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _error(code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=code)


def create_admin_app(operations: AdminOperations, token: str) -> FastAPI:
    """The admin API over ``operations``; ``token`` is what ``X-Auth-Token`` must be."""
    if not token:
        raise ValueError("the admin API needs a token")
    expected = token.encode()
    app = FastAPI(
        title="astara orchestrator admin", docs_url=None, redoc_url=None, openapi_url=None
    )

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        )
        return _error(400, f"invalid request: {problems}")

    async def authorised(request: Request) -> None:
        given = request.headers.get(TOKEN_HEADER)
        if given is None:
            raise ApiError(401, f"the {TOKEN_HEADER} header is missing")
        if not hmac.compare_digest(given.encode(), expected):
            raise ApiError(401, f"the {TOKEN_HEADER} header is not the admin token")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorised)])

    @v1.get("/routers")
    async def routers() -> dict[str, Any]:
        return {"routers": await operations.routers_view()}

    @v1.get("/routers/{router_id}")
    async def router(router_id: str) -> dict[str, Any]:
        view = await operations.router_view(router_id)
        if view is None:
            raise ApiError(404, f"router {router_id} was never seen by this orchestrator")
        return view

    @v1.post("/routers/{router_id}/rebuild", status_code=202)
    async def rebuild(router_id: str) -> dict[str, Any]:
        operations.rebuild(router_id)
        return {"router_id": router_id, "queued": True}

    _debug_routes(v1, operations)

    @v1.get("/debug")
    async def modes() -> dict[str, Any]:
        return {"modes": [m.as_dict() for m in operations.modes()]}

    @v1.post("/poll", status_code=202)
    async def poll() -> dict[str, Any]:
        return {"queued": await operations.poll()}

    @v1.get("/workers")
    async def workers() -> dict[str, Any]:
        return {"workers": operations.workers()}

    app.include_router(v1)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(operations.metrics_text(), media_type=CONTENT_TYPE)

    return app


def _debug_routes(v1: APIRouter, operations: AdminOperations) -> None:
    """PUT (debug) and DELETE (manage) of resource, tenant and global modes."""

    async def set_mode(scope: str, ident: str, body: DebugBody) -> dict[str, Any]:
        try:
            mode = await operations.set_debug(scope, ident, body.reason)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        except RuntimeError as exc:
            raise ApiError(503, str(exc)) from None
        return mode.as_dict()

    async def end_mode(scope: str, ident: str) -> dict[str, Any]:
        try:
            mode = await operations.manage(scope, ident)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        except RuntimeError as exc:
            raise ApiError(503, str(exc)) from None
        if mode is None:
            raise ApiError(404, f"{scope} {ident} is not in debug mode")
        return {"managed": mode.as_dict()}

    @v1.put("/debug/resources/{resource_id}")
    async def debug_resource(resource_id: str, body: DebugBody) -> dict[str, Any]:
        return await set_mode("resource", resource_id, body)

    @v1.delete("/debug/resources/{resource_id}")
    async def manage_resource(resource_id: str) -> dict[str, Any]:
        return await end_mode("resource", resource_id)

    @v1.put("/debug/tenants/{tenant_id}")
    async def debug_tenant(tenant_id: str, body: DebugBody) -> dict[str, Any]:
        return await set_mode("tenant", tenant_id, body)

    @v1.delete("/debug/tenants/{tenant_id}")
    async def manage_tenant(tenant_id: str) -> dict[str, Any]:
        return await end_mode("tenant", tenant_id)

    @v1.put("/debug/global")
    async def debug_global(body: DebugBody) -> dict[str, Any]:
        return await set_mode("global", GLOBAL_ID, body)

    @v1.delete("/debug/global")
    async def manage_global() -> dict[str, Any]:
        return await end_mode("global", GLOBAL_ID)
