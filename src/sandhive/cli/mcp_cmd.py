"""`sandhive mcp`: Sandhive's MCP server (sandhive.mcp_server) for an agent's MCP client, over stdio or HTTP.

The server, URL and key come the way every client command's do (cli/config.py): `--url`/`--api-key`, then
SANDHIVE_API_URL/SANDHIVE_API_KEY (or E2B's), then `sandhive auth login`'s file. Over HTTP the key is never the
server's own: each request brings one (`Authorization: Bearer` or `X-API-Key`), so the server holds no team's
rights. See docs/mcp.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

import typer

from .common import EXIT_USAGE, err, fail
from .config import ApiKey, ApiUrl, load_config, resolve_url

Http = Annotated[str | None, typer.Option(
    "--http", metavar="ADDR",
    help="Serve streamable HTTP on ADDR (HOST:PORT, e.g. 127.0.0.1:8765) at /mcp instead of stdio; each request "
         "sends its API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`.")]


def parse_addr(addr: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `:PORT` (loopback) → (host, port); anything else is a ValueError."""
    host, sep, port_text = addr.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{addr!r} is not HOST:PORT (e.g. 127.0.0.1:8765)")
    host = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
    if ":" in host and not addr.startswith("["):
        raise ValueError(f"{addr!r}: write an IPv6 address in brackets, e.g. [::1]:8765")
    return host or "127.0.0.1", int(port_text)


def mcp(url: ApiUrl = None, api_key: ApiKey = None, http: Http = None) -> None:
    """Run an MCP server whose tools create, use and kill sandboxes (stdio unless --http)."""
    from ..mcp_server.access import Access
    from ..mcp_server.serve import serve_http, serve_stdio

    api_url = resolve_url(url)
    if http is None:
        key = api_key or load_config().get("api_key")  # none: every tool call says how to get one
        serving = serve_stdio(Access(api_url, key))
    else:
        try:
            host, port = parse_addr(http)
        except ValueError as exc:
            fail(f"--http {exc}", EXIT_USAGE)
        if api_key:
            err.print("note: over HTTP each request brings its own API key; the configured one is not used")
        serving = serve_http(Access(api_url, per_request=True), host, port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serving)
