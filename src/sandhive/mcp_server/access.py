"""Who a tool call acts as, how it reaches the server, and how the SDK's errors reach the model.

Over stdio the server belongs to one user: the key comes from the environment (or `sandhive auth login`'s file),
once. Over HTTP one server may serve many clients, so nothing is stored: every request carries its own key in a
header, and each tool call acts with the key of the request that carried it.

Every SDK object the tools make sends through one connection pool (`SharedPool`), opened and closed with the
server, so that the many short-lived sandbox handles a long-running server makes leave no sockets behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from mcp.server.mcpserver.exceptions import ToolError

from ..sdk import SandboxException

KEY_HEADERS = "`Authorization: Bearer <key>` or `X-API-Key: <key>`"
NO_KEY = f"no Sandhive API key: send it on every request as {KEY_HEADERS} (create one with `sandhive keys create`)"


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The API key a request carries: `Authorization: Bearer <key>`, else `X-API-Key: <key>`, else None.

    `headers` is looked up by lower-case name (Starlette's headers are case-insensitive; ASGI's are lower-case).
    """
    authorization = (headers.get("authorization") or "").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = (headers.get("x-api-key") or "").strip()
    return key or None


class SharedPool(httpx.AsyncBaseTransport):
    """One httpx connection pool for the server's whole life, lent to every SDK client the tools make.

    The SDK closes a client's transport when it is done with a one-off call (`kill`, `list`); closing this
    one is a no-op, and `shutdown()` (by the server, at exit) closes the pool underneath."""

    def __init__(self) -> None:
        self._pool = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._pool.handle_async_request(request)

    async def aclose(self) -> None:
        """Kept open: other handles still use the pool."""

    async def shutdown(self) -> None:
        await self._pool.aclose()


@dataclass(frozen=True)
class Access:
    """The server's side of every call: its URL, and either a fixed key (stdio) or keys from each request (HTTP)."""

    api_url: str
    api_key: str | None = None  # stdio's key; None over HTTP, or when none is configured
    per_request: bool = False  # HTTP: the key comes from the request's headers, never from `api_key`
    pool: SharedPool = field(default_factory=SharedPool, compare=False)

    def options(self, headers: Mapping[str, str] | None) -> dict[str, Any]:
        """The SDK's connection options for one tool call, given the headers of the request that carried it."""
        key = self.api_key
        if self.per_request:
            key = key_from_headers(headers or {})
            if key is None:  # the HTTP wrapper refuses such requests; this is the second lock
                raise ToolError(NO_KEY)
        elif not key:
            raise ToolError("no Sandhive API key: set SANDHIVE_API_KEY in the MCP server's environment (create one "
                            "with `sandhive keys create`), or save one with `sandhive auth login`")
        # Sandhive serves the API and the sandboxes' traffic on one port, so both URLs are the server's.
        return {"api_key": key, "api_url": self.api_url, "sandbox_url": self.api_url, "transport": self.pool}


@contextlib.contextmanager
def api_errors() -> Iterator[None]:
    """The SDK's errors (the API's or envd's answer, put in words by the SDK) as tool errors the model reads.

    Anything else is a bug: the MCP SDK reports it as "Error executing tool NAME" and logs the traceback here,
    so no internal detail reaches the client."""
    try:
        yield
    except SandboxException as exc:
        raise ToolError(str(exc)) from exc
