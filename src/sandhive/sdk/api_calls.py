"""The REST API's calls (E2B's, docs/wire.md §2.2): request bodies and answers, for both faces."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from . import network_calls
from .config import ConnectionConfig
from .errors import Context
from .models import SandboxInfo, SandboxMetrics, SandboxQuery, SandboxState
from .ref import SandboxRef
from .wire import HttpCall


def _context(config: ConnectionConfig, what: str, sandbox_id: str | None, timeout: float | None) -> Context:
    return Context(what=what, server=config.api_url, sandbox_id=sandbox_id, timeout=timeout)


def _call(config: ConnectionConfig, method: str, path: str, what: str, parse: Any, *,
          sandbox_id: str | None = None, request_timeout: float | None = None, **fields: Any) -> HttpCall[Any]:
    timeout = config.timeout(request_timeout)
    return HttpCall(method, f"{config.api_url}{path}", _context(config, what, sandbox_id, timeout), parse,
                    headers=config.api_headers(), timeout=timeout, **fields)


def create(config: ConnectionConfig, template: str, *, timeout: int | None, metadata: dict[str, str] | None,
           envs: dict[str, str] | None, allow_internet_access: bool | None,
           request_timeout: float | None, volume_mounts: dict[str, Any] | None = None,
           network: Mapping[str, Any] | None = None) -> HttpCall[SandboxRef]:
    """`POST /v2/sandboxes`. `timeout` (seconds to live) is sent only when given: the server defaults to 300.
    `network` is E2B's `SandboxNetworkOpts` dict (network_calls.py turns it into the wire's camelCase)."""
    body: dict[str, Any] = {"templateID": template, "metadata": dict(metadata or {}), "envVars": dict(envs or {})}
    if timeout is not None:
        body["timeout"] = int(timeout)
    if allow_internet_access is not None:
        body["allow_internet_access"] = allow_internet_access
    if volume_mounts:  # {path: Volume or volume name}, as E2B's SDK takes them
        body["volumeMounts"] = [{"name": getattr(v, "name", v), "path": p} for p, v in volume_mounts.items()]
    wire_network = network_calls.create_body(network)
    if wire_network is not None:
        body["network"] = wire_network
    return _call(config, "POST", "/v2/sandboxes", f"create a sandbox from template '{template}'",
                 lambda r: SandboxRef.from_json(r.json(), config), json=body, request_timeout=request_timeout)


def connect(config: ConnectionConfig, sandbox_id: str, *, timeout: int | None,
            request_timeout: float | None) -> HttpCall[SandboxRef]:
    """`POST /v2/sandboxes/{id}/connect`: a running sandbox's access; its life is extended to `timeout`."""
    body = {} if timeout is None else {"timeout": int(timeout)}
    return _call(config, "POST", f"/v2/sandboxes/{sandbox_id}/connect", f"connect to sandbox {sandbox_id}",
                 lambda r: SandboxRef.from_json(r.json(), config), sandbox_id=sandbox_id, json=body,
                 request_timeout=request_timeout)


def get_info(config: ConnectionConfig, sandbox_id: str, *, request_timeout: float | None) -> HttpCall[SandboxInfo]:
    return _call(config, "GET", f"/sandboxes/{sandbox_id}", f"get the info of sandbox {sandbox_id}",
                 lambda r: _info(r.json()), sandbox_id=sandbox_id, request_timeout=request_timeout)


def kill(config: ConnectionConfig, sandbox_id: str, *, request_timeout: float | None) -> HttpCall[bool]:
    """True if this call killed it, False if it was already gone (E2B's meaning)."""
    return _call(config, "DELETE", f"/sandboxes/{sandbox_id}", f"kill sandbox {sandbox_id}", lambda r: True,
                 sandbox_id=sandbox_id, special={404: lambda r: False}, request_timeout=request_timeout)


def pause(config: ConnectionConfig, sandbox_id: str, *, memory: bool, request_timeout: float | None) -> HttpCall[bool]:
    """`POST /sandboxes/{id}/pause`: True if this call paused it, False if it was paused already (E2B's meaning).
    `memory` False keeps only its files (the resume cold-boots)."""
    return _call(config, "POST", f"/sandboxes/{sandbox_id}/pause", f"pause sandbox {sandbox_id}", lambda r: True,
                 sandbox_id=sandbox_id, json={"memory": memory}, special={409: lambda r: False},
                 request_timeout=request_timeout)


def set_timeout(config: ConnectionConfig, sandbox_id: str, timeout: int, *,
                request_timeout: float | None) -> HttpCall[None]:
    """The sandbox ends `timeout` seconds from now (which may shorten its life)."""
    return _call(config, "POST", f"/sandboxes/{sandbox_id}/timeout", f"set the timeout of sandbox {sandbox_id}",
                 lambda r: None, sandbox_id=sandbox_id, json={"timeout": int(timeout)},
                 request_timeout=request_timeout)


def get_metrics(config: ConnectionConfig, sandbox_id: str, *, start: datetime | None, end: datetime | None,
                request_timeout: float | None) -> HttpCall[list[SandboxMetrics]]:
    params = {k: int(v.timestamp()) for k, v in (("start", start), ("end", end)) if v is not None}
    return _call(config, "GET", f"/sandboxes/{sandbox_id}/metrics", f"get the metrics of sandbox {sandbox_id}",
                 lambda r: [_metric(m) for m in r.json()], sandbox_id=sandbox_id, params=params,
                 request_timeout=request_timeout)


@dataclass
class Page:
    items: list[SandboxInfo]
    next_token: str | None


def list_page(config: ConnectionConfig, query: SandboxQuery | None, *, limit: int | None, next_token: str | None,
              request_timeout: float | None) -> HttpCall[Page]:
    """One page of `GET /v2/sandboxes`; `metadata` is E2B's doubly encoded `k=v&...` string."""
    params: dict[str, Any] = {}
    if query and query.metadata:
        params["metadata"] = urlencode(query.metadata, quote_via=quote)
    if query and query.state:
        params["state"] = ",".join(SandboxState(s).value for s in query.state)
    if limit is not None:
        params["limit"] = limit
    if next_token:
        params["nextToken"] = next_token
    return _call(config, "GET", "/v2/sandboxes", "list sandboxes", _page, params=params,
                 request_timeout=request_timeout)


def _page(response: httpx.Response) -> Page:
    return Page([_info(item) for item in response.json()], response.headers.get("X-Next-Token") or None)


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _info(data: dict[str, Any]) -> SandboxInfo:
    return SandboxInfo(sandbox_id=data["sandboxID"], template_id=data["templateID"], name=data.get("alias"),
                       metadata=dict(data.get("metadata") or {}), started_at=_when(data["startedAt"]),
                       end_at=_when(data["endAt"]), state=SandboxState(data["state"]), cpu_count=data["cpuCount"],
                       memory_mb=data["memoryMB"], disk_size_mb=data.get("diskSizeMB", 0),
                       envd_version=data["envdVersion"], allow_internet_access=data.get("allowInternetAccess"),
                       network=network_calls.info(data.get("network")))


def _metric(data: dict[str, Any]) -> SandboxMetrics:
    return SandboxMetrics(timestamp=_when(data["timestamp"]), cpu_count=data["cpuCount"],
                          cpu_used_pct=data["cpuUsedPct"], mem_used=data["memUsed"], mem_total=data["memTotal"],
                          mem_cache=data.get("memCache", 0), disk_used=data["diskUsed"], disk_total=data["diskTotal"])
