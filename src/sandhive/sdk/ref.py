"""One sandbox as a client knows it: its identity from create/connect and how to address its envd.

Every envd request goes to the server's sandbox URL (the edge proxy, on the API's port) and is routed by the
`E2b-Sandbox-Id`/`E2b-Sandbox-Port` headers, authenticated by the sandbox's `X-Access-Token`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from .config import ConnectionConfig
from .errors import Context

ENVD_PORT = 49983
KEEPALIVE_SECONDS = 50  # envd sends a keepalive on a quiet stream this often, so idle streams never look dead


@dataclass(frozen=True)
class SandboxRef:
    sandbox_id: str
    template_id: str
    envd_version: str
    access_token: str | None
    domain: str | None
    config: ConnectionConfig
    # A private sandbox's token for its ports other than envd's (issue 16's `trafficAccessToken`), else None.
    traffic_access_token: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any], config: ConnectionConfig) -> SandboxRef:
        """From the `Sandbox` body that create and connect answer."""
        return cls(sandbox_id=data["sandboxID"], template_id=data["templateID"], envd_version=data["envdVersion"],
                   access_token=data.get("envdAccessToken"), domain=data.get("domain") or None, config=config,
                   traffic_access_token=data.get("trafficAccessToken") or None)

    @property
    def envd_url(self) -> str:
        return self.config.sandbox_url

    def envd_headers(self, user: str | None = None, *, stream: bool = False) -> dict[str, str]:
        """Routing, auth and (for streams) keepalive headers of an envd request; `user` acts as that user."""
        headers = {**self.config.headers, "E2b-Sandbox-Id": self.sandbox_id, "E2b-Sandbox-Port": str(ENVD_PORT)}
        if self.access_token:
            headers["X-Access-Token"] = self.access_token
        if user:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:".encode()).decode()
        if stream:
            headers["Keepalive-Ping-Interval"] = str(KEEPALIVE_SECONDS)
        return headers

    def context(self, what: str, *, path: str | None = None, timeout: float | None = None) -> Context:
        return Context(what=what, server=self.envd_url, sandbox_id=self.sandbox_id, path=path, envd=True,
                       timeout=timeout)

    def get_host(self, port: int) -> str:
        """`<port>-<id>.<domain>`: the Host the server's proxy routes to `port` inside this sandbox.

        The domain is the one the server answered with, else the server's own `host:port` (with loopback
        spelled `localhost`, which browsers and curl resolve for any `*.localhost` name)."""
        return f"{port}-{self.sandbox_id}.{self.domain or self.config.host_domain()}"

    def direct_url(self) -> str:
        """Base URL that reaches envd without routing headers (signed URLs are used by browsers and curl)."""
        scheme = self.config.sandbox_url.split("://", 1)[0]
        return f"{scheme}://{self.get_host(ENVD_PORT)}"
