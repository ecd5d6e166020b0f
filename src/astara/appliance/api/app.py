"""The appliance API v1 (seed 002), shared by every appliance an agent serves.

One FastAPI application serves all appliances; each listener wraps it so that
``request.state.router`` is the appliance whose namespace accepted the
connection. Every path answers with and without its trailing slash.
Handlers are thin: they parse, call the Router, and shape the answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from astara import __version__
from astara.appliance.api.errors import error_response, install_error_handlers
from astara.appliance.api.guard import DEFAULT_MAX_BODY, BodyTooLargeError, Guard
from astara.appliance.api.parsing import BodyInvalidError, parse_body
from astara.appliance.router import Router

api = APIRouter()


def both(path: str, method: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a handler at ``path`` with and without a trailing slash."""

    def register(handler: Callable[..., Any]) -> Callable[..., Any]:
        bare = path.rstrip("/")
        api.add_api_route(bare, handler, methods=[method])
        api.add_api_route(bare + "/", handler, methods=[method], include_in_schema=False)
        return handler

    return register


def _router(request: Request) -> Router:
    router: Router = request.state.router
    return router


@both("/v1/status/", "GET")
async def get_status(request: Request) -> JSONResponse:
    status = await _router(request).status()
    return JSONResponse(status.model_dump())


@both("/v1/firewall/rules/", "GET")
async def get_firewall_rules(request: Request) -> PlainTextResponse:
    return PlainTextResponse(await _router(request).firewall_rules())


@both("/v1/system/interfaces", "GET")
async def get_interfaces(request: Request) -> JSONResponse:
    interfaces = await _router(request).interfaces()
    return JSONResponse({"interfaces": [i.model_dump() for i in interfaces]})


@both("/v1/system/interface/{ifname}/", "GET")
async def get_interface(request: Request, ifname: str) -> JSONResponse:
    interface = await _router(request).interface(ifname)
    return JSONResponse({"interface": interface.model_dump()})


@both("/v1/system/config/", "GET")
async def get_config(request: Request) -> Response:
    text = _router(request).config_json
    if text is None:
        return JSONResponse({"configuration": None})
    return Response(text, media_type="application/json")


@both("/v1/system/config/", "PUT")
async def put_config(request: Request) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return error_response(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json, not {content_type!r}",
        )
    try:
        raw = await request.body()
    except BodyTooLargeError:
        return error_response(413, "body_too_large", "the body is too large")
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return error_response(400, "invalid_json", f"the body is not valid JSON: {exc}")
    router = _router(request)
    try:
        body = parse_body(document, router.applied_document)
    except BodyInvalidError as exc:
        first = exc.fields[0]
        return error_response(
            422, "invalid_config", f"{first['field']}: {first['reason']}", exc.fields
        )
    await router.push(body, document=document)
    return Response(router.config_json, media_type="application/json")


def create_app(*, token: str, max_body: int = DEFAULT_MAX_BODY) -> Callable[..., Any]:
    """The ASGI app: the guard (token, body size) in front of the v1 routes."""
    app = FastAPI(
        title="Astara appliance API",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    app.include_router(api)
    install_error_handlers(app)
    return Guard(app, token=token, max_body=max_body)


def bind_router(app: Callable[..., Any], router: Router) -> Callable[..., Any]:
    """The shared app, with ``request.state.router`` set to ``router``."""

    async def bound(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["router"] = router
        await app(scope, receive, send)

    return bound
