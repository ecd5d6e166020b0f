"""JSON in and out of the network API: one parse with Neutron's errors, one serialisation."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from astara.network.errors import BadRequest

MAX_BODY = 1024 * 1024


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    """A JSON answer, serialised once: FastAPI's encoder would walk every value again."""
    return Response(json.dumps(body), status_code=status, media_type="application/json")


async def json_document(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise BadRequest(
            f"Request body is larger than {MAX_BODY} bytes.", type="RequestEntityTooLarge"
        )
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(
            "Malformed request body: the body is not valid JSON.", type="MalformedRequestBody"
        ) from None
