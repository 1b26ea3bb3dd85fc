"""Relay a WebSocket session to a sandbox port: text and binary frames both ways, close codes included.

Each hop negotiates its own handshake (extensions, pings) with its own stack — uvicorn towards the client,
the `websockets` client towards the sandbox — and only messages and close codes cross the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from . import errors, headers

# `httpsPorts` (proxy/access.py): TLS to the sandbox's own server, whose certificate is its own
_UNVERIFIED = ssl.create_default_context()
_UNVERIFIED.check_hostname = False
_UNVERIFIED.verify_mode = ssl.CERT_NONE

CONNECT_TIMEOUT = 5.0
CLOSE_TIMEOUT = 2.0  # a sandbox app that ignores our close frame must not hold the session open
# uvicorn's default inbound limit is 16 MiB; allow more from the sandbox side, but not unbounded memory.
MAX_MESSAGE = 64 * 1024 * 1024
_UNSENDABLE = {1004, 1005, 1006, 1015}


def _close_code(code: int | None, abnormal: int) -> int:
    """A code that may go on the wire: 1005/1006/1015 only describe a close, they cannot be sent."""
    if code is None or code == 1005:
        return 1000
    if code in _UNSENDABLE or not (1000 <= code <= 1014 or 3000 <= code <= 4999):
        return abnormal
    return code


async def forward(scope: Scope, receive: Receive, send: Send, uri: str, sandbox_id: str, port: int) -> None:
    """Proxy the WebSocket session in `scope` to `uri` (ws://address:port/path?query)."""
    if (await receive())["type"] != "websocket.connect":
        return
    # websockets takes header names and values as text: raw bytes would go out as "b'cookie': b'...'".
    relayed = [(key.decode("latin-1"), value.decode("latin-1")) for key, value in headers.websocket_request(
        scope.get("headers", []), scope.get("client"), scope.get("scheme", "ws"))]
    try:
        upstream = await connect(
            uri, additional_headers=relayed,
            subprotocols=scope.get("subprotocols") or None, user_agent_header=None, proxy=None, compression=None,
            open_timeout=CONNECT_TIMEOUT, close_timeout=CLOSE_TIMEOUT, ping_interval=None,
            max_size=MAX_MESSAGE, ssl=_UNVERIFIED if uri.startswith("wss:") else None)
    except InvalidStatus as exc:
        await _refuse(scope, send, exc)
        return
    except (OSError, TimeoutError):
        await errors.send_error(scope, send, errors.port_not_open(sandbox_id, port))
        return
    async with upstream:
        response_headers = upstream.response.headers.raw_items() if upstream.response else []
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol,
                    "headers": headers.websocket_response([(k.encode("latin-1"), v.encode("latin-1"))
                                                           for k, v in response_headers])})
        await _relay(receive, send, upstream)


async def _refuse(scope: Scope, send: Send, exc: InvalidStatus) -> None:
    """The sandbox's server refused the handshake: show the client the same status when the server allows it."""
    response = exc.response
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.raw_items()]
    body = response.body or b""
    await send({"type": "websocket.http.response.start", "status": response.status_code,
                "headers": [(k, v) for k, v in headers.downstream_response(raw) if k.lower() != b"content-length"]
                + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "websocket.http.response.body", "body": body})


async def _relay(receive: Receive, send: Send, upstream: ClientConnection) -> None:
    to_upstream = asyncio.create_task(_client_to_sandbox(receive, upstream))
    to_client = asyncio.create_task(_sandbox_to_client(send, upstream))
    try:
        await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
        if to_upstream.done() and not to_client.done():
            # The client left and we closed upstream; let the sandbox's close handshake finish briefly.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(to_client), 2)
    finally:
        to_upstream.cancel()
        to_client.cancel()
        await asyncio.gather(to_upstream, to_client, return_exceptions=True)


async def _client_to_sandbox(receive: Receive, upstream: ClientConnection) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            await upstream.close(_close_code(message.get("code"), 1001), message.get("reason") or "")
            return
        if message["type"] != "websocket.receive":
            continue
        try:
            if message.get("text") is not None:
                await upstream.send(message["text"])
            elif message.get("bytes") is not None:
                await upstream.send(message["bytes"])
        except ConnectionClosed:
            return


async def _sandbox_to_client(send: Send, upstream: ClientConnection) -> None:
    try:
        async for data in upstream:
            if isinstance(data, str):
                await send({"type": "websocket.send", "text": data})
            else:
                await send({"type": "websocket.send", "bytes": data})
    except ConnectionClosed:
        pass
    with contextlib.suppress(Exception):  # the client may already be gone
        await send({"type": "websocket.close", "code": _close_code(upstream.close_code, 1011),
                    "reason": upstream.close_reason or ""})
