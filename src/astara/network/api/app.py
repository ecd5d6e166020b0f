"""``astara network-api``: Neutron v2.0 URLs over ``NetworkService``.

Thin handlers: each reads the context (``auth.py``), parses JSON, calls the
service and shapes the answer. Every error becomes Neutron's body,
``{"NeutronError": {"type", "message", "detail"}}``, with its status; an
unexpected one is logged and answered with a 500 of the same shape, never a
traceback. Handlers are plain functions: FastAPI runs them in its thread
pool, where the (synchronous) database work belongs.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from astara.network.api.auth import Authenticator
from astara.network.api.body import json_document, json_response
from astara.network.api.extensions import EXTENSIONS
from astara.network.api.tags import add_tag_routes
from astara.network.errors import BadRequest, NeutronError, NotFound
from astara.network.query import ListQuery
from astara.network.service import NetworkService

log = logging.getLogger(__name__)


def neutron_error(status: int, type_: str, message: str, detail: str = "") -> JSONResponse:
    return JSONResponse(
        {"NeutronError": {"type": type_, "message": message, "detail": detail}}, status_code=status
    )


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def create_app(service: NetworkService, auth: Authenticator) -> FastAPI:
    app = FastAPI(title="Astara network API (Neutron v2.0)", docs_url=None, redoc_url=None)

    @app.exception_handler(NeutronError)
    async def on_neutron_error(_request: Request, exc: NeutronError) -> JSONResponse:
        return neutron_error(exc.status, exc.type, exc.message, exc.detail)

    @app.exception_handler(HTTPException)
    async def on_http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        kinds = {404: "HTTPNotFound", 405: "HTTPMethodNotAllowed"}
        return neutron_error(
            exc.status_code, kinds.get(exc.status_code, "HTTPError"), str(exc.detail)
        )

    @app.exception_handler(RequestValidationError)
    async def on_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return neutron_error(400, "HTTPBadRequest", "Invalid request.")

    @app.exception_handler(Exception)
    async def on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return neutron_error(
            500,
            "HTTPInternalServerError",
            "Request Failed: internal server error while processing your request.",
        )

    @app.get("/")
    def versions(request: Request) -> dict[str, Any]:
        return {
            "versions": [
                {
                    "id": "v2.0",
                    "status": "CURRENT",
                    "links": [{"rel": "self", "href": f"{_base(request)}/v2.0/"}],
                }
            ]
        }

    @app.get("/v2.0")
    @app.get("/v2.0/")
    def root(request: Request) -> dict[str, Any]:
        auth.context(request)
        return {
            "resources": [
                {
                    "name": r.name,
                    "collection": r.collection,
                    "links": [{"rel": "self", "href": f"{_base(request)}/v2.0/{r.collection}"}],
                }
                for r in service.resources.values()
            ]
        }

    @app.get("/v2.0/extensions")
    def extensions(request: Request) -> dict[str, Any]:
        auth.context(request)
        return {"extensions": EXTENSIONS}

    @app.get("/v2.0/extensions/{alias}")
    def extension(request: Request, alias: str) -> dict[str, Any]:
        auth.context(request)
        for ext in EXTENSIONS:
            if ext["alias"] == alias:
                return {"extension": ext}
        raise NotFound(f"Extension with alias {alias} does not exist", type="HTTPNotFound")

    @app.get("/v2.0/{collection}")
    def list_resources(request: Request, collection: str) -> Response:
        ctx = auth.context(request)
        query = ListQuery.parse(request.query_params.multi_items())
        return json_response(
            service.list(ctx, collection, query, url=f"{_base(request)}/v2.0/{collection}")
        )

    @app.get("/v2.0/{collection}/{resource_id}")
    def show_resource(request: Request, collection: str, resource_id: str) -> Response:
        ctx = auth.context(request)
        view = service.show(ctx, collection, resource_id)
        fields = [f for f in request.query_params.getlist("fields") if f]
        if fields:
            view = {k: v for k, v in view.items() if k in fields}
        return json_response({service.resource(collection).name: view})

    @app.post("/v2.0/{collection}", status_code=201)
    async def create_resource(request: Request, collection: str) -> Response:
        ctx = auth.context(request)
        document = await json_document(request)
        name = service.resource(collection).name
        plural = service.resource(collection).collection
        if isinstance(document, dict) and plural in document and name not in document:
            items = document[plural]
            if not isinstance(items, list):
                raise BadRequest(f"Invalid input: '{plural}' must be a list.")
            made = [
                await run_in_threadpool(service.create, ctx, collection, {name: item})
                for item in items
            ]
            return json_response({plural: made}, 201)
        return json_response(
            {name: await run_in_threadpool(service.create, ctx, collection, document)}, 201
        )

    @app.put("/v2.0/{collection}/{resource_id}")
    async def update_resource(request: Request, collection: str, resource_id: str) -> Response:
        ctx = auth.context(request)
        document = await json_document(request)
        view = await run_in_threadpool(service.update, ctx, collection, resource_id, document)
        return json_response({service.resource(collection).name: view})

    @app.put("/v2.0/routers/{router_id}/add_router_interface")
    async def add_router_interface(request: Request, router_id: str) -> dict[str, Any]:
        ctx = auth.context(request)
        document = await json_document(request)
        return await run_in_threadpool(
            lambda: service.router_interface(ctx, router_id, add=True, document=document)
        )

    @app.put("/v2.0/routers/{router_id}/remove_router_interface")
    async def remove_router_interface(request: Request, router_id: str) -> dict[str, Any]:
        ctx = auth.context(request)
        document = await json_document(request)
        return await run_in_threadpool(
            lambda: service.router_interface(ctx, router_id, add=False, document=document)
        )

    add_tag_routes(app, service, auth)

    @app.delete("/v2.0/{collection}/{resource_id}", status_code=204)
    def delete_resource(request: Request, collection: str, resource_id: str) -> Response:
        ctx = auth.context(request)
        service.delete(ctx, collection, resource_id)
        return Response(status_code=204)

    return app
