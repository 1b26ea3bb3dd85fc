"""Where the server is and who we are: one `ConnectionConfig`, resolved once from kwargs and the environment.

Sandhive serves its REST API and the proxy to sandboxes on one port, so one URL is usually all a user sets.
The `SANDHIVE_*` variables win over E2B's as a set; E2B's are read so that an environment exported for the
`e2b` SDK (`make up` prints one) works for this SDK unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict
from urllib.parse import urlsplit

import httpx

from ..version import __version__
from .exceptions import AuthenticationException, InvalidArgumentException

DEFAULT_API_URL = "http://127.0.0.1:3000"  # `make up` serves here
DEFAULT_REQUEST_TIMEOUT = 60.0  # seconds, like E2B's: long enough for a create that builds nothing
USER_AGENT = f"sandhive-python-sdk/{__version__}"



class ConnectionOptions(TypedDict, total=False):
    """The keyword arguments every entry point (create, connect, list, kill, ...) accepts besides its own."""

    api_key: str | None
    api_url: str | None
    sandbox_url: str | None
    request_timeout: float | None
    headers: Mapping[str, str] | None
    transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None


@dataclass(frozen=True)
class ConnectionConfig:
    """How to reach one Sandhive server. Immutable: a sandbox and its helpers share one."""

    api_url: str
    sandbox_url: str
    api_key: str | None = None
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT
    headers: Mapping[str, str] = field(default_factory=dict)
    # An httpx transport to send everything through (e.g. `httpx.ASGITransport` for in-process tests);
    # None uses httpx's own connection pool.
    transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = field(default=None, compare=False)

    @classmethod
    def resolve(cls, *, api_key: str | None = None, api_url: str | None = None, sandbox_url: str | None = None,
                request_timeout: float | None = None, headers: Mapping[str, str] | None = None,
                transport: Any = None, env: Mapping[str, str] | None = None) -> ConnectionConfig:
        """Explicit kwargs, then `SANDHIVE_*`, then `E2B_*`, then the local default.

        The envd traffic URL follows the API URL it was chosen with: `api_url=` or `SANDHIVE_API_URL` also
        carry the sandbox traffic (unless `sandbox_url=`/`SANDHIVE_SANDBOX_URL` say otherwise), while an
        API URL from `E2B_API_URL` pairs with `E2B_SANDBOX_URL`. `E2B_SANDBOX_URL` alone names the server too.
        """
        env = os.environ if env is None else env
        own_url = api_url or env.get("SANDHIVE_API_URL")
        api = own_url or env.get("E2B_API_URL") or env.get("E2B_SANDBOX_URL") or DEFAULT_API_URL
        sandbox = sandbox_url or env.get("SANDHIVE_SANDBOX_URL") or (
            own_url if own_url else env.get("E2B_SANDBOX_URL") or api)
        key = api_key or env.get("SANDHIVE_API_KEY") or env.get("E2B_API_KEY") or None
        if request_timeout is not None and request_timeout < 0:
            raise InvalidArgumentException(f"request_timeout must be >= 0 seconds (0 means no limit), not "
                                           f"{request_timeout}")
        return cls(api_url=_base_url(api, "api_url"), sandbox_url=_base_url(sandbox, "sandbox_url"), api_key=key,
                   request_timeout=DEFAULT_REQUEST_TIMEOUT if request_timeout is None else request_timeout or None,
                   headers=dict(headers or {}), transport=transport)

    def api_headers(self) -> dict[str, str]:
        """Headers of every REST call. Without a key the call cannot succeed, so say how to get one first."""
        if not self.api_key:
            raise AuthenticationException(
                "no API key: create one with `sandhive keys create` and set SANDHIVE_API_KEY (or pass api_key=)")
        return {**self.headers, "X-API-Key": self.api_key}

    def timeout(self, request_timeout: float | None) -> float | None:
        """A per-call `request_timeout` (0 = none) or the configured one, in seconds."""
        if request_timeout is None:
            return self.request_timeout
        return request_timeout or None

    def host_domain(self) -> str:
        """`host[:port]` of the sandbox URL, for `<port>-<id>.<domain>` hosts when the server names no domain.

        Loopback addresses become `localhost`, because browsers and curl resolve `*.localhost` to loopback.
        """
        parts = urlsplit(self.sandbox_url)
        host = parts.hostname or "localhost"
        if host in ("127.0.0.1", "::1", "0.0.0.0"):
            host = "localhost"
        return f"{host}:{parts.port}" if parts.port else host


def _base_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgumentException(f"{name} {url!r} is not an http(s) URL such as {DEFAULT_API_URL}")
    return url.rstrip("/")
