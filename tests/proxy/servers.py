"""Real servers for the proxy tests: uvicorn in a background thread on a free loopback port.

The upstream is an in-process app so tests can observe what it saw (when a chunk arrived, whether its
response generator was cancelled) through thread-safe state, without mocks.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket, WebSocketDisconnect

from sandhive.proxy.access import Route as ProxyRoute
from tests.helpers import free_port

GZIP_PAYLOAD = gzip.compress(b"sandhive " * 4096, mtime=0)


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a daemon thread; `stop()` ends it."""

    def __init__(self, app: ASGIApp, tls: tuple[str, str] | None = None) -> None:
        """`tls`: (certificate file, key file) to serve HTTPS instead."""
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                                server_header=False, date_header=False, ssl_certfile=tls[0] if tls else None,
                                ssl_keyfile=tls[1] if tls else None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class UpstreamState:
    """What the upstream saw, read by tests from another thread."""

    produced: list[float] = field(default_factory=list)
    first_chunk_seen: threading.Event = field(default_factory=threading.Event)
    stream_started: threading.Event = field(default_factory=threading.Event)
    stream_cancelled: threading.Event = field(default_factory=threading.Event)
    ws_close_codes: list[int] = field(default_factory=list)
    ws_closed: threading.Event = field(default_factory=threading.Event)


def upstream_app(state: UpstreamState) -> Starlette:
    """A stand-in for a sandbox port: echo, slow streams, incremental uploads, gzip and a WebSocket echo."""

    async def inspect(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"method": request.method, "raw_path": request.scope["raw_path"].decode(),
                             "query": request.scope["query_string"].decode(), "body": body.decode(),
                             "headers": [[k.decode(), v.decode()] for k, v in request.scope["headers"]]})

    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream",
                        headers={"x-got-content-encoding": request.headers.get("content-encoding", "")})

    async def slow(request: Request) -> StreamingResponse:
        async def chunks():
            for i in range(5):
                if i:
                    await asyncio.sleep(0.2)
                state.produced.append(time.monotonic())
                yield f"chunk{i};".encode()
        return StreamingResponse(chunks(), media_type="text/plain")

    async def upload(request: Request) -> JSONResponse:
        chunks, total = 0, 0
        async for chunk in request.stream():
            if chunk:
                chunks += 1
                total += len(chunk)
                state.first_chunk_seen.set()
        return JSONResponse({"chunks": chunks, "bytes": total})

    async def compressed(request: Request) -> Response:
        return Response(GZIP_PAYLOAD, media_type="text/plain", headers={"content-encoding": "gzip"})

    async def forever(request: Request) -> StreamingResponse:
        async def chunks():
            try:
                state.stream_started.set()
                yield b"first;"
                await asyncio.sleep(3600)  # idle like a WatchDir with no events
                yield b"never;"
            except asyncio.CancelledError:
                state.stream_cancelled.set()
                raise
        return StreamingResponse(chunks(), media_type="text/plain")

    async def broken(request: Request) -> StreamingResponse:
        async def chunks():
            yield b"partial;"
            await asyncio.sleep(0.1)
            raise RuntimeError("upstream died mid-body (expected in this test)")
        return StreamingResponse(chunks(), media_type="text/plain")

    async def ws_echo(ws: WebSocket) -> None:
        await ws.accept(subprotocol=ws.scope["subprotocols"][0] if ws.scope["subprotocols"] else None)
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    state.ws_close_codes.append(message.get("code", 1005))
                    return
                if message.get("text") == "headers?":
                    await ws.send_json(ws.headers.items())
                    continue
                if message.get("text", "").startswith("close:"):
                    await ws.close(int(message["text"].split(":")[1]), reason="asked to")
                    return
                if message.get("text") is not None:
                    await ws.send_text(message["text"])
                else:
                    await ws.send_bytes(message["bytes"])
        except WebSocketDisconnect as exc:
            state.ws_close_codes.append(exc.code)
        finally:
            state.ws_closed.set()

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]
    return Starlette(routes=[
        Route("/inspect/{rest:path}", inspect, methods=methods), Route("/echo", echo, methods=["POST"]),
        Route("/slow", slow), Route("/upload", upload, methods=["POST"]), Route("/gzip", compressed),
        Route("/forever", forever), Route("/broken", broken), WebSocketRoute("/ws", ws_echo),
    ])


def api_app() -> Starlette:
    """The tiny "REST API" the proxy wraps."""

    async def ping(request: Request) -> JSONResponse:
        return JSONResponse({"api": True, "path": request.url.path})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("api-ws")
        await websocket.close()

    return Starlette(routes=[Route("/{rest:path}", ping, methods=["GET", "POST"]), WebSocketRoute("/api-ws", ws)])


@dataclass
class RecordingResolver:
    """Maps known ids to an address (or a whole proxy route) and records every lookup, so tests can tell
    whether one happened."""

    table: dict[str, str | ProxyRoute]
    calls: list[str] = field(default_factory=list)

    async def __call__(self, sandbox_id: str) -> ProxyRoute | None:
        self.calls.append(sandbox_id)
        found = self.table.get(sandbox_id)
        return ProxyRoute(found) if isinstance(found, str) else found

