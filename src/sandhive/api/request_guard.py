"""`RequestGuard`: what a request must show before the API reads its body, and how much body it may send.

Without it a 300 MB body sent with no API key was read whole into memory before FastAPI answered 401 (RSS
grew by ~1.1 GB). This pure-ASGI layer, in front of every API route (sandbox traffic never reaches it: the
edge proxy routes that first), does, in order:

1. Finds the route. If it needs an API key, checks `X-API-Key` from the headers alone (auth.authenticate,
   the one place keys are checked) and answers 401 before a body byte is read (and before any 413, so a
   caller without a key learns nothing about the route).
2. Bounds the body: JSON routes to `json_limit` (1 MiB by default), the signed upload route to
   `upload_limit` (it streams to disk; its signature is checked by the route before the body is read). A
   declared Content-Length over the limit is 413 at once; a chunked body is counted and cut at the limit.
   A JSON body must also arrive within `body_timeout` seconds (408), so a trickled body cannot hold a
   request open; an upload may pause at most `body_timeout` seconds between chunks.
3. Every answer given while body bytes are still unread carries `Connection: close`, so the server drops the
   connection instead of reading (and discarding) the rest.

JSON bodies are read here (they are small) and replayed to the app, which is simpler and safer than
interrupting FastAPI's own body reading halfway.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import UserError
from ..store import Store
from .auth import TEAM_STATE, authenticate

JSON_LIMIT = 2**20  # 1 MiB: the largest JSON body E2B's SDKs send is a few KiB of env vars and metadata
UPLOAD_LIMIT = 4 * 2**30  # a template-files tar, compressed (template_files.MAX_UPLOAD_BYTES)
BODY_TIMEOUT = 30.0  # seconds for a whole JSON body, or between two chunks of an upload
UPLOAD_ROUTES = frozenset({"upload_template_files",  # streamed to disk, authorised by a signature
                           "put_volume_file"})  # streamed into a volume, authorised by its token
UPLOAD_PATH_SUFFIX = "/upload"  # the same route, should it be renamed (PUT /templates/{id}/files/{hash}/upload)


@dataclass(frozen=True)
class BodyLimits:
    json_bytes: int = JSON_LIMIT
    upload_bytes: int = UPLOAD_LIMIT
    timeout_seconds: float = BODY_TIMEOUT


class _Rejected(Exception):
    def __init__(self, error: UserError) -> None:
        self.error = error


class RequestGuard:
    """ASGI middleware over the API's routes (`routes` is the app's live route list)."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[BaseRoute], store: Store,
                 limits: BodyLimits = BodyLimits()) -> None:
        self.app = app
        self._top_routes = routes
        self._flat: list[BaseRoute] | None = None
        self.store = store
        self.limits = limits

    @property
    def routes(self) -> list[BaseRoute]:
        """The app's routes, included routers flattened (read at the first request, when all are in place), so
        a router added anywhere is guarded without a list to keep up to date."""
        if self._flat is None:
            self._flat = list(_flatten(self._top_routes))
        return self._flat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._route(scope)
        upload = _is_upload(route)
        limit = self.limits.upload_bytes if upload else self.limits.json_bytes
        headers = _headers(scope)
        try:
            if route is not None and _needs_key(route):
                key = headers.get(b"x-api-key", b"").decode("latin-1") or None
                caller = await authenticate(self.store, key)
                scope.setdefault("state", {})[TEAM_STATE] = (key, caller)
            declared = _content_length(headers)
            if declared is not None and declared > limit:
                raise UserError(413, _too_large(limit))
            if upload:
                body = _StreamedBody(receive, limit, self.limits.timeout_seconds)
                await self.app(scope, body.receive, _closing_if_unread(send, body))
                return
            replay = await self._read_json_body(receive, limit)
        except UserError as exc:
            await _answer(send, exc, close=True)
            return
        await self.app(scope, replay, send)

    def _route(self, scope: Scope) -> BaseRoute | _NoKeyRoute | None:
        """The route that will answer (a method mismatch counts: it answers 405 without a key)."""
        partial = None
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
            if match is Match.PARTIAL and partial is None:
                partial = route
        return None if partial is None else _NoKeyRoute()

    async def _read_json_body(self, receive: Receive, limit: int) -> Receive:
        """The whole body (at most `limit` bytes, within the timeout), as a `receive` that replays it."""
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.limits.timeout_seconds):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return _replay([message], receive)
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise UserError(413, _too_large(limit))
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise UserError(408, f"the request body did not arrive within {self.limits.timeout_seconds:g} s") \
                from None
        return _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive)


class _NoKeyRoute:
    """Stands for a path whose method does not match: the router answers 405, no key needed."""

    name = None
    dependant = None


class _StreamedBody:
    """An upload's body passed on chunk by chunk: cut at `limit` (413), and at `timeout` s of silence (408)."""

    def __init__(self, receive: Receive, limit: int, timeout: float) -> None:
        self._receive = receive
        self._limit = limit
        self._timeout = timeout
        self.size = 0
        self.complete = False

    async def receive(self) -> Message:
        if self.complete:
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), self._timeout)
        except TimeoutError:
            raise UserError(408, f"the upload stalled: no data for {self._timeout:g} s") from None
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self._limit:
                raise UserError(413, _too_large(self._limit))
            self.complete = not message.get("more_body", False)
        return message


def _closing_if_unread(send: Send, body: _StreamedBody) -> Send:
    """Add `Connection: close` to a response started before the body was read to its end."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and not body.complete:
            message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await send(message)

    return wrapped


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


def _is_upload(route: Any) -> bool:
    if route is None:
        return False
    return route.name in UPLOAD_ROUTES or (str(getattr(route, "path", "")).endswith(UPLOAD_PATH_SUFFIX)
                                           and not _needs_key(route))


def _flatten(routes: Iterable[Any]) -> Iterator[BaseRoute]:
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI's included router
        if inner is not None:
            yield from _flatten(inner.routes)
        else:
            yield route


def _needs_key(route: Any) -> bool:
    """Whether an `auth` key dependency is among the route's (it marks itself `requires_api_key`)."""
    stack = [getattr(route, "dependant", None)]
    while stack:
        dependant = stack.pop()
        if dependant is None:
            continue
        if getattr(dependant.call, "requires_api_key", False):
            return True
        stack.extend(dependant.dependencies)
    return False


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in scope.get("headers", [])}


def _content_length(headers: dict[bytes, bytes]) -> int | None:
    value = headers.get(b"content-length")
    if value is None or b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(400, "invalid Content-Length header") from None


def _too_large(limit: int) -> str:
    size = f"{limit // 2**30} GiB" if limit >= 2**30 and limit % 2**30 == 0 else (
        f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit} bytes")
    return f"the request body is larger than this route allows ({size})"


async def _answer(send: Send, error: UserError, close: bool) -> None:
    """An E2B-shaped error, with `Connection: close` so the unread rest of the body is never read."""
    body: dict[str, Any] = {"code": error.status, "message": error.message}
    if error.error_code:
        body["error_code"] = error.error_code
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (error.headers or {}).items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
