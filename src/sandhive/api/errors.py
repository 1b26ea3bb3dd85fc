"""E2B-shaped errors: every non-2xx answer is `{"code": int, "message": str[, "error_code": str]}`.

The SDK runs `Error.from_dict(response.json())` on every documented status before it looks at the
status, so a FastAPI-style `{"detail": ...}` body, an HTML page or a traceback would crash it instead
of raising a clean exception. This module turns routing misses, validation failures and crashes into
the one shape.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..templates.errors import UserError

log = logging.getLogger("sandhive.api")


class ApiError(Exception):
    """An answer other than success, with the status, a message a user can act on, and E2B's error_code."""

    def __init__(self, status: int, message: str, error_code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers  # e.g. Retry-After on 429 and 503


def not_found(sandbox_id: str) -> ApiError:
    return ApiError(404, f"Sandbox {sandbox_id} not found")


def error_response(status: int, message: str, error_code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict = {"code": status, "message": message}
    if error_code:
        body["error_code"] = error_code
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "Invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "Request body is not valid JSON"
    if tuple(first.get("loc", ())) == ("body",):
        return "Request body must be a JSON object (Content-Type: application/json)"
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = f"Invalid request: {where}: {first.get('msg', 'invalid value')}"
    return message + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the API can produce, including FastAPI's own, come out in E2B's shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.error_code, exc.headers)

    @app.exception_handler(UserError)
    async def _user_error(_: Request, exc: UserError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.error_code, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404 and exc.detail == HTTPStatus.NOT_FOUND.phrase:
            message = f"no such route: {request.method} {request.url.path}"  # E2B-shaped; unsupported.py
            # answers the E2B routes Sandhive lacks, so a 404 here is a path no E2B client calls
        elif exc.status_code == 405:
            message = f"Method {request.method} not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _validation_message(exc))  # E2B documents 400 for bad requests, not 422

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "Internal server error", "internal_server_error")
