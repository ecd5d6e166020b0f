"""Neutron's tag API on every resource: ``/v2.0/<rs>/<id>/tags[/<tag>]``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from astara.network.api.auth import Authenticator
from astara.network.api.body import json_document, json_response
from astara.network.errors import BadRequest, NotFound
from astara.network.service import NetworkService


def add_tag_routes(app: FastAPI, service: NetworkService, auth: Authenticator) -> None:
    @app.get("/v2.0/{collection}/{resource_id}/tags")
    def get_tags(request: Request, collection: str, resource_id: str) -> Response:
        return json_response({"tags": service.tags(auth.context(request), collection, resource_id)})

    @app.put("/v2.0/{collection}/{resource_id}/tags")
    async def replace_tags(request: Request, collection: str, resource_id: str) -> Response:
        ctx = auth.context(request)
        document = await json_document(request)
        if not isinstance(document, dict) or set(document) != {"tags"}:
            raise BadRequest('Invalid input: the body must be {"tags": [...]}.')
        tags = await run_in_threadpool(
            lambda: service.tags(ctx, collection, resource_id, change=("replace", document["tags"]))
        )
        return json_response({"tags": tags})

    @app.delete("/v2.0/{collection}/{resource_id}/tags", status_code=204)
    def delete_tags(request: Request, collection: str, resource_id: str) -> Response:
        service.tags(auth.context(request), collection, resource_id, change=("replace", []))
        return Response(status_code=204)

    @app.get("/v2.0/{collection}/{resource_id}/tags/{tag}", status_code=204)
    def has_tag(request: Request, collection: str, resource_id: str, tag: str) -> Response:
        if tag not in service.tags(auth.context(request), collection, resource_id):
            raise NotFound(f"Tag {tag} could not be found.", type="TagNotFound")
        return Response(status_code=204)

    @app.put("/v2.0/{collection}/{resource_id}/tags/{tag}", status_code=201)
    def add_tag(request: Request, collection: str, resource_id: str, tag: str) -> Response:
        service.tags(auth.context(request), collection, resource_id, change=("add", tag))
        return Response(status_code=201)

    @app.delete("/v2.0/{collection}/{resource_id}/tags/{tag}", status_code=204)
    def remove_tag(request: Request, collection: str, resource_id: str, tag: str) -> Response:
        service.tags(auth.context(request), collection, resource_id, change=("remove", tag))
        return Response(status_code=204)
