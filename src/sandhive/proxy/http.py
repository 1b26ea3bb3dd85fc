"""Relay one HTTP exchange to a sandbox port, streaming both bodies as they arrive.

Connect streams ride on this: `StreamInput` is a chunked request body whose messages must reach envd one
by one, and `Start`/`WatchDir` are responses that stay open for minutes. So nothing is buffered, the read
timeout is between chunks (envd's keepalives keep a quiet stream alive; asgi.READ_TIMEOUT), bodies are
relayed raw (never decompressed), and a client that goes away closes the upstream request at once — even
while the upstream is idle — via a watcher on `http.disconnect`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from starlette.types import Receive, Scope, Send

from . import errors, headers
from .audit import Observer

Unrouted = Callable[[], Awaitable[bool]]  # has the sandbox been taken off the proxy since it was routed?

# The code interpreter's `POST /execute` (port 49999, wire doc §4) is silent while the code computes, for as
# long as the code runs: its bound is the client's own `timeout` (the client disconnects, which closes the
# upstream at once), not the proxy's idle read timeout. No keepalive line can stand in: the client's timeout
# is a read timeout too, and any line would reset it.
UNBOUNDED_READS = {(49999, "POST", "/execute")}
# An unbounded read still ends with its sandbox: a killed (or timed-out, or paused) sandbox's network namespace
# goes without a FIN or RST, so the upstream socket would wait forever for a client with no timeout of its own.
# While such a read is open, the route is looked up again every ROUTE_CHECK_SECONDS.
ROUTE_CHECK_SECONDS = 5.0


def is_unbounded(port: int, method: str, path: str) -> bool:
    return (port, method.upper(), path.rstrip("/") or "/") in UNBOUNDED_READS


def read_timeout(port: int, method: str, path: str, default: httpx.Timeout) -> httpx.Timeout:
    """The upstream timeouts of one request: `default`, with no read bound for the UNBOUNDED_READS."""
    if is_unbounded(port, method, path):
        return httpx.Timeout(connect=default.connect, read=None, write=default.write, pool=default.pool)
    return default


async def _until_unrouted(unrouted: Unrouted) -> None:
    """Return once the sandbox is off the proxy (see ROUTE_CHECK_SECONDS)."""
    while True:
        await asyncio.sleep(ROUTE_CHECK_SECONDS)
        if await unrouted():
            return


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


class Downstream:
    """The client's side of the exchange: its body as an async iterator, then a wait for its disconnect.

    ASGI allows one reader of `receive`, so the disconnect watch starts only after the body is consumed.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._body_done = asyncio.Event()

    def no_body(self) -> None:
        self._body_done.set()

    async def body(self) -> AsyncIterator[bytes]:
        try:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone()
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body", False):
                    return
        finally:
            self._body_done.set()

    async def first_chunk_or_none(self) -> AsyncIterator[bytes] | None:
        """For a request that declared no body framing (e.g. HTTP/2): peek, and return a body only if any."""
        message = await self._receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        first = message.get("body", b"")
        if not message.get("more_body", False):
            self._body_done.set()
            return _once(first) if first else None

        async def chained() -> AsyncIterator[bytes]:
            yield first
            async for chunk in self.body():
                yield chunk
        return chained()

    async def wait_disconnect(self) -> None:
        await self._body_done.wait()
        while (await self._receive())["type"] != "http.disconnect":
            pass


async def _once(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk


async def _observed(body: AsyncIterator[bytes], observer: Observer) -> AsyncIterator[bytes]:
    """`body`, each chunk shown to the audit observer on its way upstream (counted or kept, never delayed)."""
    async for chunk in body:
        observer.request_chunk(chunk)
        yield chunk


def _declares_body(raw: headers.RawHeaders) -> bool | None:
    """True/False when HTTP/1.1 framing says whether a body follows; None when the headers cannot tell."""
    for key, value in raw:
        name = key.lower()
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
    return None


async def forward(client: httpx.AsyncClient, scope: Scope, receive: Receive, send: Send,
                  url: httpx.URL, sandbox_id: str, port: int, unrouted: Unrouted | None = None,
                  observer: Observer | None = None) -> None:
    """Proxy the request in `scope` to `url`; returns when the response is relayed or the client left.

    `unrouted()` says whether the sandbox was taken off the proxy meanwhile: a request routed just before a
    kill that finds the port closed then answers "was not found" (E2B's answer for a killed sandbox), not
    "port is not open" (the SDK's "running but unreachable"). `observer` (proxy/audit.py) sees both bodies
    pass, for the audit log; it is finished once the exchange is over, however it ended."""
    downstream = Downstream(receive)
    exchange = asyncio.create_task(_exchange(client, scope, downstream, send, url, sandbox_id, port, unrouted,
                                             observer))
    watchers = {asyncio.create_task(downstream.wait_disconnect())}
    if unrouted is not None and is_unbounded(port, scope["method"], scope.get("path", "")):
        watchers.add(asyncio.create_task(_until_unrouted(unrouted)))
    try:
        await asyncio.wait({exchange, *watchers}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Cancelling the exchange closes the upstream response (see `_exchange`), which is the point.
        for task in (exchange, *watchers):
            task.cancel()
        outcome, *_ = await asyncio.gather(exchange, *watchers, return_exceptions=True)
        if observer is not None:
            observer.finish()
    if isinstance(outcome, Exception):
        raise outcome


async def _exchange(client: httpx.AsyncClient, scope: Scope, downstream: Downstream, send: Send,
                    url: httpx.URL, sandbox_id: str, port: int, unrouted: Unrouted | None,
                    observer: Observer | None = None) -> None:
    raw = list(scope.get("headers", []))
    declared = _declares_body(raw)
    try:
        if declared is None and scope.get("http_version", "1.1") not in ("1.0", "1.1"):
            content = await downstream.first_chunk_or_none()
        elif declared:
            content = downstream.body()
        else:
            content = None
            downstream.no_body()
        if observer is not None and content is not None:
            content = _observed(content, observer)
        request = client.build_request(scope["method"], url, headers=headers.upstream_request(
            raw, scope.get("client"), scope.get("scheme", "http")), content=content,
            timeout=read_timeout(port, scope["method"], scope.get("path", ""), client.timeout))
        response = await client.send(request, stream=True)
    except ClientGone:
        return
    except (httpx.ConnectError, httpx.ConnectTimeout):
        gone = unrouted is not None and await unrouted()
        await errors.send_error(scope, send, errors.sandbox_not_found(sandbox_id) if gone
                                else errors.port_not_open(sandbox_id, port))
        return
    except httpx.ReadTimeout:
        detail = f"The sandbox's port {port} sent no response within {client.timeout.read:g} s"
        await errors.send_error(scope, send, errors.ProxyError(504, detail, sandbox_id, {"port": port}))
        return
    except httpx.TransportError as exc:
        detail = f"{errors.UPSTREAM_FAILED}: {type(exc).__name__}"
        await errors.send_error(scope, send, errors.ProxyError(502, detail, sandbox_id, {"port": port}))
        return
    try:
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": headers.downstream_response(response.headers.raw)})
        if observer is not None:
            observer.response_start(response.status_code)
        try:
            async for chunk in response.aiter_raw():
                if observer is not None:
                    observer.response_chunk(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.TransportError:
            # The upstream broke mid-body. Returning without finishing makes the server drop the client
            # connection, so a truncated body is never mistaken for a complete one.
            return
        if observer is not None:
            observer.finish()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        with contextlib.suppress(Exception):
            await response.aclose()
