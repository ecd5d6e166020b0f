"""The only place where errors become HTTP responses. Bodies never carry a traceback.

Every error body has one shape::

    {"error": {"code": "...", "message": "...", "fields": [{"field": "...", "reason": "..."}]}}
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from astara.appliance.errors import ApplyError, ConfigError, NotFoundError

log = logging.getLogger(__name__)


def error_response(
    status: int, code: str, message: str, fields: list[dict[str, str]] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return JSONResponse({"error": body}, status_code=status)


async def _config_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConfigError)
    return error_response(
        422, "invalid_config", str(exc), [{"field": exc.field, "reason": exc.reason}]
    )


async def _apply_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApplyError)
    log.error("apply failed at %s: %s", exc.step, exc.reason)
    message = (
        f"applying failed at {exc.step}: {exc.reason}; the previous configuration was restored"
    )
    return error_response(500, "apply_failed", message)


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, "not_found", str(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error; see the agent's log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ConfigError, _config_error)
    app.add_exception_handler(ApplyError, _apply_error)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(Exception, _unexpected)
