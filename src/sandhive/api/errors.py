"""E2B-shaped errors: every non-2xx answer is `{"code": int, "message": str[, "error_code": str]}`.

The SDK runs `Error.from_dict(response.json())` on every documented status before it looks at the
status, so a FastAPI-style `{"detail": ...}` body, an HTML page or a traceback would crash it instead
of raising a clean exception. This module turns user errors (`sandhive.errors.UserError`, the node's
`NodeError` among them), routing misses and validation failures into the one shape, and everything else
into a generic 500 that names the id under which the details were logged (`InternalErrors`).
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import UserError, report_internal

log = logging.getLogger("sandhive.api")


def not_found(sandbox_id: str) -> UserError:
    return UserError(404, f"Sandbox {sandbox_id} not found")


STORE_RETRY_AFTER_SECONDS = 5  # a PostgreSQL restart or fail-over takes seconds; the pool reconnects by itself


def store_unavailable(exc: DBAPIError) -> bool:
    """Is this the database being away (down, restarting, a dropped connection), not a bad statement? The pool
    (`pool_pre_ping`, store/engine.py) reconnects once it is back, so the client is told to retry: 503."""
    return isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated


def store_down_response() -> JSONResponse:
    return error_response(503, "The database is unreachable for the moment; retry shortly", "store_unavailable",
                          {"Retry-After": str(STORE_RETRY_AFTER_SECONDS)})


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

    @app.exception_handler(DBAPIError)
    async def _store_down(request: Request, exc: DBAPIError) -> JSONResponse:
        if not store_unavailable(exc):
            raise exc  # a bug, not an outage: InternalErrors logs it and answers a generic 500
        log.warning("the database is unreachable while serving %s %s: %s", request.method, request.url.path,
                    type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__)
        return store_down_response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _validation_message(exc))  # E2B documents 400 for bad requests, not 422


class InternalErrors:
    """The outermost middleware: whatever a request raised that is not a user error is logged with a short id,
    and the client gets `{"code": 500, "message": "internal error (id …); see the server log"}` — never the
    exception's text, which may hold runtime output or host paths. (Starlette's own last-resort handler would
    re-raise after answering, logging every crash twice.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except DBAPIError as exc:  # raised outside the routes (a middleware's store read): the same 503
            if not store_unavailable(exc):
                message = report_internal(log, exc, f"serving {scope['method']} {scope['path']}")
                if not started:
                    await error_response(500, message)(scope, receive, send)
                return
            log.warning("the database is unreachable while serving %s %s", scope["method"], scope["path"])
            if not started:
                await store_down_response()(scope, receive, send)
        except Exception as exc:
            message = report_internal(log, exc, f"serving {scope['method']} {scope['path']}")
            if not started:  # else the answer is half sent: the server closes the connection
                await error_response(500, message)(scope, receive, send)
