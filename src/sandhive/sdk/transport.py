"""The only I/O in the SDK: execute the calls the shared layer describes, blocking or with asyncio.

`SyncTransport` and `AsyncTransport` are the same four operations — `call` (HTTP), `download` (HTTP with a
streamed body), `rpc` (unary Connect) and `stream` (server-streaming Connect) — written once with `def` and
once with `async def`. Everything they send and everything they parse comes from `wire.HttpCall` and
`wire.RpcCall`. Clients are opened lazily and may be closed and reopened: `kill()` releases a sandbox's
connections, and a later call on the same object still gets the server's answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator
from typing import Any, TypeVar

import httpx
import pyqwest
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from ..rpc.filesystem.filesystem_connect import FilesystemClient, FilesystemClientSync
from ..rpc.process.process_connect import ProcessClient, ProcessClientSync
from . import errors, reaper
from .bridge import AsyncBridge, SyncBridge
from .config import USER_AGENT, ConnectionConfig
from .wire import HttpCall, RpcCall

T = TypeVar("T")

_SYNC_CLIENTS = {"process": ProcessClientSync, "filesystem": FilesystemClientSync}
_ASYNC_CLIENTS = {"process": ProcessClient, "filesystem": FilesystemClient}
# Compression off both ways, like E2B's SDK: envd is on a LAN or loopback, CPU is what is scarce.
_RPC_OPTIONS: dict[str, Any] = {"send_compression": None, "accept_compression": ()}
_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=20)


def _http_options(config: ConnectionConfig) -> dict[str, Any]:
    return dict(transport=config.transport, timeout=config.request_timeout, limits=_LIMITS,
                headers={"User-Agent": USER_AGENT})


def _request(client: httpx.Client | httpx.AsyncClient, call: HttpCall[Any]) -> httpx.Request:
    return client.build_request(call.method, call.url, params=call.params, json=call.json, content=call.content,
                                files=call.files, headers=dict(call.headers), timeout=call.timeout)


class SyncTransport:
    """Blocking I/O over one `httpx.Client`; the Connect clients reach it through `SyncBridge`."""

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self._http: httpx.Client | None = None
        self._rpc: dict[str, Any] = {}

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(**_http_options(self.config))
        return self._http

    def _rpc_client(self, service: str) -> Any:
        if service not in self._rpc:
            bridge = pyqwest.SyncClient(SyncBridge(lambda: self.http))
            self._rpc[service] = _SYNC_CLIENTS[service](self.config.sandbox_url, http_client=bridge, **_RPC_OPTIONS)
        return self._rpc[service]

    def call(self, call: HttpCall[T]) -> T:
        try:
            response = self.http.send(_request(self.http, call))
        except httpx.TransportError as exc:
            raise errors.from_transport(exc, call.context) from None
        return call.finish(response)

    def download(self, call: HttpCall[Any]) -> Generator[bytes, None, None]:
        """Send now (so errors surface here), then hand out the body chunk by chunk as it arrives."""
        reaper.ensure_started()
        try:
            response = self.http.send(_request(self.http, call), stream=True)
            if not response.is_success:
                response.read()
                response.close()
                call.check(response)
        except httpx.TransportError as exc:
            raise errors.from_transport(exc, call.context) from None
        return self._chunks(response, call)

    @staticmethod
    def _chunks(response: httpx.Response, call: HttpCall[Any]) -> Generator[bytes, None, None]:
        """Like the RPC bridge's bodies: closed here when read to the end, by the reaper otherwise (an
        abandoned iterator may be finalized inside the garbage collector, see `reaper`)."""
        chunks = response.iter_bytes()
        done = False
        try:
            for chunk in chunks:  # noqa: UP028 — `yield from` would close httpx's iterator in place
                yield chunk
            done = True
        except httpx.TransportError as exc:
            raise errors.from_transport(exc, call.context) from None
        finally:
            if done:
                response.close()
            else:
                reaper.close_later(chunks, response)

    def rpc(self, call: RpcCall[T]) -> T:
        method = getattr(self._rpc_client(call.service), call.method)
        try:
            response = method(call.request, headers=dict(call.headers), timeout_ms=call.timeout_ms)
        except Exception as exc:  # ConnectError, or whatever the bridge raised under it
            return call.fail(exc)
        return call.parse(response)

    def stream(self, call: RpcCall[T | None]) -> Generator[T, None, None]:
        """Each parsed message (skipping those `parse` answers None for). Closing the iterator ends the
        request, which is how a handle disconnects."""
        events = getattr(self._rpc_client(call.service), call.method)(
            call.request, headers=dict(call.headers), timeout_ms=call.timeout_ms)
        try:
            for message in events:
                item = call.parse(message)
                if item is not None:
                    yield item
        except Exception as exc:
            call.fail(exc)
        finally:
            events.close()

    def close(self) -> None:
        """Release connections. The transport stays usable: the next call opens a new client."""
        http, self._http = self._http, None
        self._rpc.clear()
        if http is not None:
            http.close()


class AsyncTransport:
    """asyncio I/O over one `httpx.AsyncClient`; the Connect clients reach it through `AsyncBridge`."""

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self._http: httpx.AsyncClient | None = None
        self._rpc: dict[str, Any] = {}

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(**_http_options(self.config))
        return self._http

    def _rpc_client(self, service: str) -> Any:
        if service not in self._rpc:
            bridge = pyqwest.Client(AsyncBridge(lambda: self.http))
            self._rpc[service] = _ASYNC_CLIENTS[service](self.config.sandbox_url, http_client=bridge, **_RPC_OPTIONS)
        return self._rpc[service]

    async def call(self, call: HttpCall[T]) -> T:
        try:
            response = await self.http.send(_request(self.http, call))
        except httpx.TransportError as exc:
            raise errors.from_transport(exc, call.context) from None
        return call.finish(response)

    async def download(self, call: HttpCall[Any]) -> AsyncGenerator[bytes, None]:
        try:
            response = await self.http.send(_request(self.http, call), stream=True)
            if not response.is_success:
                await response.aread()
                await response.aclose()
                call.check(response)
        except httpx.TransportError as exc:
            raise errors.from_transport(exc, call.context) from None
        return self._chunks(response, call)

    @staticmethod
    async def _chunks(response: httpx.Response, call: HttpCall[Any]) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        except httpx.TransportError as exc:
            raise errors.from_transport(exc, call.context) from None
        finally:
            await response.aclose()

    async def rpc(self, call: RpcCall[T]) -> T:
        method = getattr(self._rpc_client(call.service), call.method)
        try:
            response = await method(call.request, headers=dict(call.headers), timeout_ms=call.timeout_ms)
        except Exception as exc:
            _reraise_cancellation(exc)
            return call.fail(exc)
        return call.parse(response)

    async def stream(self, call: RpcCall[T | None]) -> AsyncGenerator[T, None]:
        events = getattr(self._rpc_client(call.service), call.method)(
            call.request, headers=dict(call.headers), timeout_ms=call.timeout_ms)
        try:
            async for message in events:
                item = call.parse(message)
                if item is not None:
                    yield item
        except Exception as exc:
            _reraise_cancellation(exc)
            call.fail(exc)
        finally:
            await events.aclose()

    async def close(self) -> None:
        http, self._http = self._http, None
        self._rpc.clear()
        if http is not None:
            await http.aclose()


def _reraise_cancellation(exc: Exception) -> None:
    """connectrpc turns a cancelled task into ConnectError(CANCELED); give asyncio its CancelledError back, so
    that cancelling (e.g. a handle's `disconnect()`) is not mistaken for a timeout."""
    task = asyncio.current_task()
    if isinstance(exc, ConnectError) and exc.code == Code.CANCELED and task is not None and task.cancelling():
        raise asyncio.CancelledError from exc
