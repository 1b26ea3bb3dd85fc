"""Run the MCP server: over stdio for one client, or over streamable HTTP where each request brings its API key.

Over HTTP the server is stateless (no MCP session to steal or to keep): every POST is answered on its own, and a
request without a key is refused with 401 before it reaches the MCP layer.
"""

from __future__ import annotations

import json
import sys

import uvicorn
from mcp.types import INVALID_REQUEST
from starlette.types import ASGIApp, Receive, Scope, Send

from .access import NO_KEY, Access, key_from_headers
from .tools import build_server

MCP_PATH = "/mcp"


async def serve_stdio(access: Access) -> None:
    """Serve one client on stdin/stdout until it closes them."""
    try:
        await build_server(access).run_stdio_async()
    finally:
        await access.pool.shutdown()


class RequireKey:
    """ASGI wrapper: an HTTP request without an API key header gets 401 with a JSON-RPC error saying which header
    to send (MCP clients show a JSON-RPC error body's message). The key itself is checked by the Sandhive API on
    each tool call: a wrong one is a tool error."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            if key_from_headers(headers) is None:
                body = json.dumps({"jsonrpc": "2.0", "id": None,
                                   "error": {"code": INVALID_REQUEST, "message": NO_KEY}}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


async def serve_http(access: Access, host: str, port: int) -> None:
    """Serve streamable HTTP on `host:port` at /mcp until interrupted."""
    app = build_server(access).streamable_http_app(streamable_http_path=MCP_PATH, stateless_http=True,
                                                   json_response=True, host=host)
    shown = f"[{host}]" if ":" in host else host
    print(f"Sandhive MCP server on http://{shown}:{port}{MCP_PATH} for {access.api_url}; clients send their API "
          "key as `Authorization: Bearer <key>` or `X-API-Key: <key>`", file=sys.stderr, flush=True)
    config = uvicorn.Config(RequireKey(app), host=host, port=port, log_level="warning", lifespan="on")
    try:
        await uvicorn.Server(config).serve()
    finally:
        await access.pool.shutdown()
