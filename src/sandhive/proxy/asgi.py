"""`EdgeProxy`: one server port for both the REST API and sandbox traffic, as E2B's client-proxy does.

Users point `E2B_API_URL` and `E2B_SANDBOX_URL` at the same URL; requests carrying `E2b-Sandbox-Id` +
`E2b-Sandbox-Port` (or a `<port>-<id>.<domain>` Host) go to the sandbox, everything else to the wrapped app.
Run it with `server_header=False, date_header=False` in uvicorn so proxied responses keep the sandbox's own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import access, errors, http, routing, websocket
from .access import Route
from .audit import Sink, observer_for

Resolver = Callable[[str], Awaitable[Route | None]]

# Connect streams (Start, WatchDir) stay open for minutes, but envd sends a keepalive event at least every
# `Keepalive-Ping-Interval` seconds (E2B's SDK asks for 50). So the read timeout is between two chunks, not
# for the whole response: an upstream silent for READ_TIMEOUT seconds is dropped, a streaming one never.
# The pool is generous because every open stream holds a connection; MAX_CONNECTIONS_PER_SANDBOX bounds what
# one sandbox's clients can hold of it.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 600.0
WRITE_TIMEOUT = 60.0  # a sandbox that stops reading a request body
TIMEOUT = httpx.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, write=WRITE_TIMEOUT, pool=10.0)
LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=200, keepalive_expiry=60)
MAX_CONNECTIONS_PER_SANDBOX = 256
RETRY_AFTER_SECONDS = 1


class EdgeProxy:
    """ASGI app routing sandbox traffic to `resolve(sandbox_id)`'s address and the rest to `app`.

    `resolve` returns the `Route` of a running sandbox, or None: its host-reachable address (an IP; port N
    is at `http://<address>:N`) and what the proxy enforces on the way (private ports, a masked Host).
    With `domain`, Host-based routing only accepts `<port>-<id>.<domain>`.
    """

    def __init__(self, app: ASGIApp, resolve: Resolver, domain: str | None = None,
                 max_connections_per_sandbox: int = MAX_CONNECTIONS_PER_SANDBOX,
                 timeout: httpx.Timeout = TIMEOUT, audit: Sink | None = None) -> None:
        """`audit`: where envd actions go (proxy/audit.py); None records nothing and parses nothing."""
        self.app = app
        self.audit = audit
        self.resolve = resolve
        self.domain = domain
        self.max_connections_per_sandbox = max_connections_per_sandbox
        self.timeout = timeout
        self._open: Counter[str] = Counter()  # proxied requests and WebSocket sessions in flight, per sandbox
        self._client: httpx.AsyncClient | None = None
        self._tls_client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        """Created on first use, so it binds to the serving event loop; shared by every request."""
        if self._client is None:
            # trust_env=False: sandbox traffic must never go through an HTTP(S)_PROXY from the environment.
            self._client = httpx.AsyncClient(timeout=self.timeout, limits=LIMITS, trust_env=False,
                                             follow_redirects=False)
        return self._client

    @property
    def tls_client(self) -> httpx.AsyncClient:
        """For a sandbox's `httpsPorts`: TLS without verification (the sandbox's certificate is its own)."""
        if self._tls_client is None:
            self._tls_client = httpx.AsyncClient(timeout=self.timeout, limits=LIMITS, trust_env=False,
                                                 follow_redirects=False, verify=False)
        return self._tls_client

    async def aclose(self) -> None:
        for name in ("_client", "_tls_client"):
            client = getattr(self, name)
            if client is not None:
                setattr(self, name, None)
                await client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._closing_on_shutdown(receive), send)
            return
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers", [])}
        try:
            target = routing.parse_target(headers, headers.get("host"), self.domain)
        except routing.BadTarget as exc:
            await self._reject(scope, receive, send, errors.ProxyError(400, exc.message, exc.sandbox_id))
            return
        if target is None:
            await self.app(scope, receive, send)
            return
        sandbox_id, port = target
        if routing.is_internal(port, scope["path"]):
            await self._reject(scope, receive, send, errors.ProxyError(404, "Not found", sandbox_id))
            return
        route = await self.resolve(sandbox_id) if routing.SANDBOX_ID.match(sandbox_id) else None
        if route is None:
            await self._reject(scope, receive, send, errors.sandbox_not_found(sandbox_id))
            return
        refused = access.refusal(route, port, scope.get("headers", []), sandbox_id)
        if refused is not None:
            await self._reject(scope, receive, send, refused)
            return
        if route.wake is not None:  # paused with auto-resume: woken only for a request it would admit
            route = await route.wake()
            if route is None:
                await self._reject(scope, receive, send, errors.sandbox_not_found(sandbox_id))
                return
        scope = {**scope, "headers": access.upstream_headers(route, port, scope.get("headers", []))}
        if self._open[sandbox_id] >= self.max_connections_per_sandbox:
            await self._reject(scope, receive, send, errors.ProxyError(
                429, f"Too many open connections to sandbox {sandbox_id}: at most "
                     f"{self.max_connections_per_sandbox} at a time; close some and retry", sandbox_id,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)}))
            return
        self._open[sandbox_id] += 1
        try:
            await self._forward(scope, receive, send, route, sandbox_id, port)
        finally:
            self._open[sandbox_id] -= 1
            if not self._open[sandbox_id]:
                del self._open[sandbox_id]

    async def _forward(self, scope: Scope, receive: Receive, send: Send, route: Route, sandbox_id: str,
                       port: int) -> None:
        address = route.address
        raw_path = scope.get("raw_path") or quote(scope["path"]).encode()
        query = scope.get("query_string", b"")
        target_path = raw_path + (b"?" + query if query else b"")
        tls = port in route.https_ports
        upstream_port = port
        if route.via is not None:  # on another host: to its node's proxy, which knows the sandbox's address
            address, _, via_port = route.via.rpartition(":")
            address, upstream_port, tls = address.strip("[]"), int(via_port), False
        if scope["type"] == "http":
            url = httpx.URL(scheme="https" if tls else "http", host=address, port=upstream_port,
                            raw_path=target_path)
            observer = observer_for(self.audit, port, scope["method"], scope["path"], query,
                                    scope.get("headers", []), sandbox_id, route.team)
            await http.forward(self.tls_client if tls else self.client, scope, receive, send, url, sandbox_id, port,
                               unrouted=lambda: self._unrouted(sandbox_id, route.address), observer=observer)
        else:
            host = f"[{address}]" if ":" in address else address
            uri = f"{'wss' if tls else 'ws'}://{host}:{upstream_port}{target_path.decode('latin-1')}"
            await websocket.forward(scope, receive, send, uri, sandbox_id, port)

    async def _unrouted(self, sandbox_id: str, address: str) -> bool:
        route = await self.resolve(sandbox_id)
        return route is None or route.address != address

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, error: errors.ProxyError) -> None:
        """Answer with `error`; a WebSocket's `websocket.connect` is taken first, as ASGI expects."""
        if scope["type"] == "websocket" and (await receive())["type"] != "websocket.connect":
            return
        await errors.send_error(scope, send, error)

    def _closing_on_shutdown(self, receive: Receive) -> Receive:
        """Close the shared client when the server shuts down, without owning the wrapped app's lifespan."""
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.aclose()
            return message
        return wrapped
