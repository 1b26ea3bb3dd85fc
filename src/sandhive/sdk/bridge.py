"""pyqwest transports over httpx: the generated Connect clients send through the SDK's httpx client.

`connectrpc` (which `sandhive.rpc` is generated for) speaks HTTP through pyqwest's transport protocol. These
two small adapters implement that protocol with an `httpx.Client` / `httpx.AsyncClient`, so REST calls,
`/files` and RPC share one connection pool, one timeout policy, one set of proxy/TLS settings and, for tests,
one pluggable httpx transport.

They also turn a non-Connect error answer (the edge proxy's 502 for a sandbox that is gone) into
`PlainHttpError`, which the error mapping reads like any other HTTP answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta

import httpx
import pyqwest

from . import reaper
from .errors import PlainHttpError

try:  # the deadline pyqwest's SyncClient hands its transport (not re-exported by pyqwest)
    from pyqwest._pyqwest import get_sync_timeout
except ImportError:  # pragma: no cover — a pyqwest without it: sync RPCs are then bounded by httpx's timeouts
    def get_sync_timeout() -> timedelta | None:
        return None

# Headers that describe the body as it was on the wire: httpx hands over the decoded body instead.
_DROPPED = {"content-encoding", "content-length", "transfer-encoding"}


def _headers(response: httpx.Response) -> pyqwest.Headers:
    return pyqwest.Headers([(k, v) for k, v in response.headers.multi_items() if k.lower() not in _DROPPED])


def _check_error(response: httpx.Response, body: bytes) -> None:
    """Let Connect errors (`{"code": "not_found", ...}`) through; raise anything else as a plain HTTP error."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not (isinstance(data, dict) and isinstance(data.get("code"), str)):
        raise PlainHttpError(response.status_code, body)


class SyncBridge:
    """`pyqwest.SyncTransport` over an `httpx.Client` (looked up per request: the owner may reopen it)."""

    def __init__(self, client: Callable[[], httpx.Client]) -> None:
        self._client = client

    def execute_sync(self, request: pyqwest.SyncRequest) -> pyqwest.SyncResponse:
        limit = get_sync_timeout()
        seconds = limit.total_seconds() if limit is not None else None
        deadline = None if seconds is None else time.monotonic() + seconds
        client = self._client()
        reaper.ensure_started()
        outgoing = client.build_request(request.method, request.url, headers=list(request.headers.items()),
                                        content=request.content, timeout=seconds)
        try:
            response = client.send(outgoing, stream=True)
        except httpx.TimeoutException as exc:
            raise TimeoutError(str(exc) or "timed out") from exc
        if response.status_code >= 400:
            try:
                body = response.read()
            finally:
                response.close()
            _check_error(response, body)
            return pyqwest.SyncResponse(status=response.status_code, headers=_headers(response), content=body)
        return pyqwest.SyncResponse(status=response.status_code, headers=_headers(response),
                                    content=_sync_body(response, deadline))


def _sync_body(response: httpx.Response, deadline: float | None) -> Iterator[bytes]:
    """The body as it arrives. httpx bounds each read by the whole timeout; the deadline bounds the sum.

    A body read to its end is closed here; one abandoned or cut short goes to the reaper (this `finally` may
    be running inside the garbage collector). `for`, not `yield from`: closing this generator must not
    close httpx's own iterator in place."""
    chunks = response.iter_bytes()
    done = False
    try:
        for chunk in chunks:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("the deadline passed")
            yield chunk
        done = True
    except httpx.TimeoutException as exc:
        raise TimeoutError(str(exc) or "timed out") from exc
    finally:
        if done:
            response.close()
        else:
            reaper.close_later(chunks, response)


class AsyncBridge:
    """`pyqwest.Transport` over an `httpx.AsyncClient`. Deadlines are connectrpc's own (asyncio timeouts)."""

    def __init__(self, client: Callable[[], httpx.AsyncClient]) -> None:
        self._client = client

    async def execute(self, request: pyqwest.Request) -> pyqwest.Response:
        client = self._client()
        outgoing = client.build_request(request.method, request.url, headers=list(request.headers.items()),
                                        content=request.content, timeout=None)
        response = await client.send(outgoing, stream=True)
        if response.status_code >= 400:
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            _check_error(response, body)
            return pyqwest.Response(status=response.status_code, headers=_headers(response), content=body)
        return pyqwest.Response(status=response.status_code, headers=_headers(response),
                                content=_async_body(response))


async def _async_body(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    finally:
        await response.aclose()
