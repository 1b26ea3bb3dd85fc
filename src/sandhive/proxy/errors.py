"""The proxy's own answers, shaped like E2B's client-proxy so the released SDK maps them to the right exception.

The SDK reads 502 bodies for the substrings "was not found" (SandboxNotFound) and "port is not open"
(port closed), so those messages are fixed. Browsers get a small HTML page instead of JSON.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field

from starlette.types import Scope, Send

NOT_FOUND = "The sandbox was not found"
PORT_NOT_OPEN = "The sandbox is running but port is not open"
UPSTREAM_FAILED = "The sandbox is running but the connection to the port failed"


@dataclass(frozen=True)
class ProxyError:
    """An error the proxy answers itself; `extra` holds additional JSON keys (e.g. `port`)."""

    status: int
    message: str
    sandbox_id: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # e.g. Retry-After on 429

    def json_body(self) -> bytes:
        body: dict[str, object] = {}
        if self.sandbox_id is not None:
            body["sandboxId"] = self.sandbox_id
        body.update({"message": self.message, "code": self.status, **self.extra})
        return json.dumps(body).encode()

    def html_body(self) -> bytes:
        who = f" <code>{html.escape(self.sandbox_id)}</code>" if self.sandbox_id else ""
        return (f"<!doctype html><html><head><meta charset=utf-8><title>{self.status}</title></head>"
                f"<body><h1>{html.escape(self.message)}</h1><p>Sandbox{who} · HTTP {self.status}</p>"
                f"</body></html>").encode()

    def render(self, accept: str) -> tuple[bytes, bytes]:
        """(content type, body) for a client whose Accept header is `accept`."""
        if "text/html" in accept.lower():
            return b"text/html; charset=utf-8", self.html_body()
        return b"application/json", self.json_body()


def sandbox_not_found(sandbox_id: str) -> ProxyError:
    return ProxyError(502, NOT_FOUND, sandbox_id)


def port_not_open(sandbox_id: str, port: int) -> ProxyError:
    return ProxyError(502, PORT_NOT_OPEN, sandbox_id, {"port": port})


def _accept(scope: Scope) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == b"accept":
            return value.decode("latin-1")
    return ""


async def send_error(scope: Scope, send: Send, error: ProxyError) -> None:
    """Answer an HTTP request, or refuse a WebSocket handshake, with `error`.

    A WebSocket handshake gets the same HTTP response when the server supports the ASGI
    `websocket.http.response` extension (uvicorn does); otherwise it can only be closed (403).
    """
    content_type, body = error.render(_accept(scope))
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": error.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})
