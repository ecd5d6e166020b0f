"""The agent's control API, on a root-only Unix socket: which namespaces it serves.

    GET    /appliances            -> {"appliances": [{"netns", "address", "port"}, ...]}
    PUT    /appliances/{netns}    body {"listen": "<address>"} optional -> 200 with the entry
    DELETE /appliances/{netns}    -> 204; stops the appliance's services, drops its state

Access control is the socket's file mode (0600, root). Errors use the same
``{"error": {...}}`` shape as the appliance API.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from astara.appliance.api.errors import error_response, install_error_handlers
from astara.appliance.server import ApplianceServer, ListenerError


class AddRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    listen: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None


def create_control_app(server: ApplianceServer) -> FastAPI:
    app = FastAPI(title="Astara agent control", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)

    @app.get("/appliances")
    async def list_appliances() -> dict[str, Any]:
        return {"appliances": server.listing()}

    @app.put("/appliances/{netns}")
    async def add_appliance(netns: str, request: AddRequest | None = None) -> Response:
        try:
            appliance = await server.add(netns, request.listen if request else None)
        except ListenerError as exc:
            return error_response(409, "cannot_listen", str(exc))
        except ValueError as exc:
            return error_response(422, "invalid_netns", str(exc))
        return JSONResponse(appliance.describe())

    @app.delete("/appliances/{netns}", status_code=204)
    async def remove_appliance(netns: str) -> Response:
        await server.remove(netns)
        return Response(status_code=204)

    return app
