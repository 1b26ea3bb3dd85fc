"""Wire errors → the SDK's typed exceptions, with messages that say what happened and what to do.

Three sources, one mapping: a transport failure (nobody listening, no answer in time), an HTTP error answer
(the API's `{"code", "message"}`, the proxy's 502s, envd's `/files` errors) and a Connect RPC error from envd.
Each call carries a `Context` (what it was doing, to which server and sandbox, on which path) so that the
message can name them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from .exceptions import (
    AuthenticationException,
    FileNotFoundException,
    InvalidArgumentException,
    NotEnoughSpaceException,
    NotFoundException,
    RateLimitException,
    SandboxException,
    SandboxNotFoundException,
    ServerUnreachableException,
    TimeoutException,
)

START_SERVER = "start one with `make up` (as root) or set SANDHIVE_API_URL"
NEW_KEY = "create one with `sandhive keys create` and set SANDHIVE_API_KEY"


@dataclass(frozen=True)
class Context:
    """What a call was doing, for the message of any error it ends in."""

    what: str  # e.g. "create a sandbox from template 'base'"
    server: str  # the URL the call went to
    sandbox_id: str | None = None
    path: str | None = None  # a path inside the sandbox
    envd: bool = False  # the call went through the proxy to the sandbox's envd
    timeout: float | None = None


class PlainHttpError(Exception):
    """An HTTP error answer to a Connect RPC that is not a Connect error (the proxy answering for envd).

    The RPC bridge raises it so that `from_rpc` can map it like any other HTTP answer."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body


def _seconds(value: float | None) -> str:
    return "no limit" if value is None else f"{value:g}s"


def from_transport(exc: BaseException, ctx: Context) -> SandboxException:
    """No answer at all: nobody listens, the connection broke, or the answer took too long."""
    if isinstance(exc, SandboxException):
        return exc
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return TimeoutException(
            f"{ctx.what}: no answer from {ctx.server} within {_seconds(ctx.timeout)}: pass a larger "
            "request_timeout= (0 means no limit) or check that the server is not overloaded")
    if isinstance(exc, httpx.ConnectError | ConnectionRefusedError):
        return ServerUnreachableException(f"no server at {ctx.server}: {START_SERVER} (while trying to {ctx.what})")
    return SandboxException(f"{ctx.what}: the connection to {ctx.server} failed: {exc or type(exc).__name__}")


def _body_message(body: bytes) -> tuple[str, dict]:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()[:300], {}
    if isinstance(data, dict):
        return str(data.get("message") or data.get("detail") or data), data
    return str(data)[:300], {}


def from_response(status: int, body: bytes, ctx: Context) -> SandboxException:
    """An HTTP error answer from the API, the proxy or envd's `/files`."""
    message, data = _body_message(body)
    sid = ctx.sandbox_id
    if status == 401:
        if ctx.envd:
            return AuthenticationException(
                f"sandbox {sid} refused this client ({message}): connect again with Sandbox.connect('{sid}') "
                "to get a fresh access token, or check the user= you passed")
        return AuthenticationException(f"the API key was refused by {ctx.server}: {NEW_KEY}")
    if status == 502 and ctx.envd:
        if "was not found" in message:
            return SandboxNotFoundException(
                f"sandbox {sid} is not running: it was killed or its timeout passed. Create a new one with "
                "Sandbox.create(), or keep sandboxes longer with timeout= / set_timeout()")
        if "port is not open" in message:
            return SandboxException(f"sandbox {sid} is running but its envd does not answer (port "
                                    f"{data.get('port', '?')} is not open); kill it and create a new one")
    if status == 404:
        if ctx.envd and ctx.path is not None:
            return FileNotFoundException(f"{ctx.path}: no such file or directory in sandbox {sid}")
        if sid and not ctx.envd:
            return SandboxNotFoundException(
                f"sandbox {sid} not found: it was killed, its timeout passed, or it belongs to another API key's "
                "team. List yours with Sandbox.list()")
        return NotFoundException(f"{ctx.what}: {message}")
    if status == 400 or status == 422:
        return InvalidArgumentException(f"{ctx.what}: {message}")
    if status == 429:
        return RateLimitException(f"{ctx.what}: the server refused for now ({message}): wait and retry, or kill "
                                  "sandboxes you no longer need")
    if status == 507:
        return NotEnoughSpaceException(f"{ctx.what}: the disk of sandbox {sid} is full: remove files in it "
                                       "(files.remove) and try again")
    if status in (502, 503, 504):
        return SandboxException(f"{ctx.what}: {ctx.server} answered {status} ({message}): retry shortly; if it "
                                "persists, look at the server's log")
    return SandboxException(f"{ctx.what}: {ctx.server} answered {status}: {message}")


def _cause(exc: BaseException) -> BaseException | None:
    """The first SDK error, plain HTTP answer or transport error behind a ConnectError."""
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        if isinstance(seen, SandboxException | PlainHttpError | httpx.TransportError | OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def from_rpc(exc: BaseException, ctx: Context) -> SandboxException:
    """A failed Connect RPC to envd."""
    if isinstance(exc, SandboxException):
        return exc
    if not isinstance(exc, ConnectError):
        return from_transport(exc, ctx)
    cause = _cause(exc)
    if isinstance(cause, PlainHttpError):
        return from_response(cause.status, cause.body, ctx)
    if isinstance(cause, SandboxException):
        return cause
    code, message = exc.code, exc.message
    if code in (Code.DEADLINE_EXCEEDED, Code.CANCELED):
        return TimeoutException(f"{ctx.what}: not done within {_seconds(ctx.timeout)}: pass a larger timeout= "
                                "(request_timeout= for quick calls; 0 means no limit)")
    if cause is not None and code in (Code.UNAVAILABLE, Code.UNKNOWN, Code.INTERNAL):
        return from_transport(cause, ctx)
    if code == Code.NOT_FOUND:
        if ctx.path is not None:
            return FileNotFoundException(f"{ctx.path}: no such file or directory in sandbox {ctx.sandbox_id}")
        return NotFoundException(f"{ctx.what}: {message}")
    if code in (Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION, Code.OUT_OF_RANGE):
        return InvalidArgumentException(f"{ctx.what}: {message}")
    if code == Code.UNAUTHENTICATED:
        return AuthenticationException(f"{ctx.what}: sandbox {ctx.sandbox_id} refused this client ({message}); "
                                       "check the user= you passed, or connect again to get a fresh access token")
    if code == Code.PERMISSION_DENIED:
        return SandboxException(f"{ctx.what}: permission denied ({message}): act as another user, e.g. user='root'")
    if code == Code.RESOURCE_EXHAUSTED:
        if "disk" in message:
            return NotEnoughSpaceException(f"{ctx.what}: {message}: remove files in the sandbox and try again")
        return RateLimitException(f"{ctx.what}: {message}: wait and retry")
    if code == Code.UNAVAILABLE:
        return SandboxException(f"{ctx.what}: sandbox {ctx.sandbox_id} is unreachable ({message}): check that it "
                                "is still running with get_info()")
    return SandboxException(f"{ctx.what}: {code.name.lower()}: {message}")
