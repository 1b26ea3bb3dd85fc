"""Who may reach a sandbox's ports, and how the request looks upstream: the proxy's half of private ports.

A sandbox created with `network.allowPublicTraffic=false` (E2B's private ports) answers on its ports only to
requests carrying `e2b-traffic-access-token: <the create response's trafficAccessToken>`; others get E2B's 403.
envd's own port is exempt: it has its own access token (`X-Access-Token`), which the SDK always sends, and the
SDK does not send the traffic token there. `maskRequestHost` replaces the `Host` header the sandbox sees
(`${PORT}` becomes the port). `httpsPorts` are ports whose server speaks TLS: the proxy connects to them with TLS,
without verifying their certificate (it is the sandbox's own, usually self-signed). The token is a credential
for the proxy, so it is not relayed to the sandbox.

Pure functions and one dataclass, free of I/O, like `routing`.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .errors import ProxyError
from .headers import RawHeaders
from .routing import ENVD_PORT

TRAFFIC_TOKEN_HEADER = b"e2b-traffic-access-token"
TOKEN_MISSING = "Sandbox is secured with traffic access token. Token header 'e2b-traffic-access-token' is missing"
TOKEN_INVALID = "Sandbox is secured with traffic access token. Token header 'e2b-traffic-access-token' is invalid"
PORT_PLACEHOLDER = "${PORT}"


@dataclass(frozen=True)
class Route:
    """Where a running sandbox's ports are (`address`, an IP the host reaches) and what the proxy enforces."""

    address: str
    traffic_token: str | None = None  # set: ports other than envd's need it (allowPublicTraffic=false)
    mask_host: str | None = None  # set: the Host header the sandbox sees (maskRequestHost)
    https_ports: frozenset[int] = frozenset()  # ports the proxy speaks TLS to (httpsPorts; never verified)
    # set: the sandbox is paused with auto-resume; this wakes it and answers its running route (None: it could
    # not). Called only after the request passed `refusal`, so a stranger cannot wake a private sandbox.
    wake: Callable[[], Awaitable[Route | None]] | None = field(default=None, compare=False)
    team: str | None = None  # the owning team: whose audit log the proxy's envd events go to
    # set: the sandbox runs on another host; traffic goes to that node's proxy (host:port) with these headers
    # (the sandbox id and port, and the cluster token), and the node forwards it (sandhive.cluster.node_api).
    via: str | None = None
    via_headers: tuple[tuple[bytes, bytes], ...] = field(default=(), compare=False, repr=False)


def refusal(route: Route, port: int, headers: RawHeaders, sandbox_id: str) -> ProxyError | None:
    """E2B's 403 when `route` is private and the request lacks its traffic token; None when it may pass."""
    if route.traffic_token is None or port == ENVD_PORT:
        return None
    sent = [value for key, value in headers if key.lower() == TRAFFIC_TOKEN_HEADER]
    if not sent:
        return ProxyError(403, TOKEN_MISSING, sandbox_id)
    if len(sent) > 1 or not hmac.compare_digest(sent[0], route.traffic_token.encode()):
        return ProxyError(403, TOKEN_INVALID, sandbox_id)
    return None


def upstream_headers(route: Route, port: int, headers: RawHeaders) -> RawHeaders:
    """The request's headers as the sandbox gets them: without the traffic token, with the masked Host."""
    out = [(key, value) for key, value in headers if key.lower() != TRAFFIC_TOKEN_HEADER]
    if route.mask_host is not None:
        host = route.mask_host.replace(PORT_PLACEHOLDER, str(port)).encode("latin-1")
        out = [(key, value) for key, value in out if key.lower() != b"host"]
        out.append((b"host", host))
    if route.via is not None:
        names = {key.lower() for key, _ in route.via_headers} | {b"e2b-sandbox-id", b"e2b-sandbox-port"}
        out = [(key, value) for key, value in out if key.lower() not in names]
        out += [*route.via_headers, (b"e2b-sandbox-port", str(port).encode())]
    return out
