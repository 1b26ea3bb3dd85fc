"""The CLI's one door to the server: Sandhive's SDK, and its answers turned into the CLI's own rows.

The CLI drives Sandhive's SDK (`sandhive.sdk`), imported on first use: it costs most of a second, which `--help`
should not pay. Commands never see SDK objects except the connected sandbox that `exec` and `shell` drive through
`commands`/`pty`. Rows, not SDK models, are what `--json` prints, so the CLI's output is its own.

Logs, template management and the key check are plain REST calls: the SDK has no calls for them. Template builds
use the SDK's `Template`, whose Dockerfile builds are Sandhive's extension of E2B's API.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from ..version import __version__
from .config import Target
from .failures import ApiAnswer

if TYPE_CHECKING:
    from ..sdk import CodeInterpreter, PtySize, Sandbox, SandboxInfo, SandboxMetrics

REST_TIMEOUT = 30.0  # seconds; the REST calls here read small bodies
LIST_PAGE = 100  # the API's largest page


def sdk() -> ModuleType:
    """The SDK module, imported on first use: it costs most of a second, which `--help` should not pay."""
    from .. import sdk as module

    return module


def _opts(target: Target) -> dict[str, Any]:
    # Sandhive serves the API and the sandboxes' traffic on one port, so both URLs are the server's.
    return {"api_key": target.api_key, "api_url": target.url, "sandbox_url": target.url}


@dataclass(frozen=True)
class SandboxRow:
    """A sandbox as `sandbox list`, `info` and `create` show it (and `--json` prints it)."""

    sandbox_id: str
    template_id: str
    alias: str | None
    state: str
    started_at: datetime
    end_at: datetime
    cpu_count: int
    memory_mb: int
    disk_size_mb: int
    envd_version: str
    metadata: dict[str, str] = field(default_factory=dict)
    # `info` and `create` only (null in `list`): the internet switch and the `network` settings, as the SDK's
    # `SandboxNetworkInfo` (snake_case: allow_out, deny_out, allow_public_traffic, mask_request_host)
    allow_internet_access: bool | None = None
    network: dict[str, Any] | None = None
    # `create` only: what requests to its ports must carry as E2B-Traffic-Access-Token when they are private
    traffic_access_token: str | None = None

    @classmethod
    def of(cls, info: SandboxInfo) -> SandboxRow:
        return cls(sandbox_id=info.sandbox_id, template_id=info.template_id, alias=info.name,
                   state=str(info.state.value), started_at=info.started_at, end_at=info.end_at,
                   cpu_count=info.cpu_count, memory_mb=info.memory_mb, disk_size_mb=info.disk_size_mb,
                   envd_version=info.envd_version, metadata=dict(info.metadata or {}),
                   allow_internet_access=info.allow_internet_access,
                   network=dict(info.network) if info.network else None)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "started_at": self.started_at.isoformat(), "end_at": self.end_at.isoformat()}


@dataclass(frozen=True)
class MetricRow:
    """One sample of a sandbox's resource use (bytes and percent, as the API reports them)."""

    timestamp: datetime
    cpu_count: int
    cpu_used_pct: float
    mem_used: int
    mem_total: int
    disk_used: int
    disk_total: int

    @classmethod
    def of(cls, m: SandboxMetrics) -> MetricRow:
        return cls(timestamp=m.timestamp, cpu_count=m.cpu_count, cpu_used_pct=m.cpu_used_pct, mem_used=m.mem_used,
                   mem_total=m.mem_total, disk_used=m.disk_used, disk_total=m.disk_total)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "timestamp": self.timestamp.isoformat()}


@dataclass(frozen=True)
class TemplateRow:
    """A template as `template list` shows it: `GET /templates`' fields, in the CLI's snake_case."""

    template_id: str
    aliases: list[str]
    cpu_count: int
    memory_mb: int
    disk_size_mb: int
    public: bool
    build_status: str
    created_at: str  # ISO 8601, as the API sent it
    updated_at: str

    @classmethod
    def of(cls, data: dict[str, Any]) -> TemplateRow:
        return cls(template_id=data["templateID"], aliases=list(data.get("aliases") or []),
                   cpu_count=data["cpuCount"], memory_mb=data["memoryMB"], disk_size_mb=data["diskSizeMB"],
                   public=bool(data.get("public")), build_status=data.get("buildStatus", "ready"),
                   created_at=data["createdAt"], updated_at=data.get("updatedAt", data["createdAt"]))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---- through the SDK ------------------------------------------------------------------------------------------

def create(target: Target, template: str, timeout: int | None, metadata: dict[str, str],
           envs: dict[str, str], *, network: dict[str, Any] | None = None,
           internet: bool | None = None) -> SandboxRow:
    """Create a sandbox and describe it (one more call: create's answer lacks times, sizes and metadata).
    `network` is the SDK's `SandboxNetworkOpts` dict; `internet` False turns its internet off."""
    kwargs: dict[str, Any] = {"metadata": metadata or None, "envs": envs or None, "network": network or None,
                              "allow_internet_access": internet}
    if timeout is not None:
        kwargs["timeout"] = timeout
    sandbox = sdk().Sandbox.create(template, **kwargs, **_opts(target))
    row = info(target, sandbox.sandbox_id)
    return replace(row, traffic_access_token=sandbox.traffic_access_token)


def update_network(target: Target, sandbox_id: str, network: dict[str, Any]) -> SandboxRow:
    """Replace the sandbox's egress rules (the SDK's `SandboxNetworkUpdate`; omitted ones are cleared) and
    describe it as it is now."""
    sdk().Sandbox.update_network(sandbox_id, network, **_opts(target))
    return info(target, sandbox_id)


def list_sandboxes(target: Target, metadata: dict[str, str], states: list[str]) -> list[SandboxRow]:
    """Every matching sandbox of the key's team, all pages."""
    m = sdk()
    query = m.SandboxQuery(metadata=metadata or None, state=[m.SandboxState(s) for s in states] or None)
    paginator = m.Sandbox.list(query=query, limit=LIST_PAGE, **_opts(target))
    rows: list[SandboxRow] = []
    while paginator.has_next:
        rows.extend(SandboxRow.of(info) for info in paginator.next_items())
    return rows


def info(target: Target, sandbox_id: str) -> SandboxRow:
    return SandboxRow.of(sdk().Sandbox.get_info(sandbox_id, **_opts(target)))


def kill(target: Target, sandbox_id: str) -> bool:
    """True if it was killed now, False if there was no such (running) sandbox."""
    return bool(sdk().Sandbox.kill(sandbox_id, **_opts(target)))


def pause(target: Target, sandbox_id: str, filesystem: bool = False) -> bool:
    """True if it was paused now, False if it was paused already."""
    mode = "filesystem" if filesystem else "memory"
    return bool(sdk().Sandbox.pause(sandbox_id, mode=mode, **_opts(target)))


def resume(target: Target, sandbox_id: str, timeout: int | None) -> None:
    sdk().Sandbox.resume(sandbox_id, timeout, **_opts(target))


def metrics(target: Target, sandbox_id: str) -> list[MetricRow]:
    return [MetricRow.of(m) for m in sdk().Sandbox.get_metrics(sandbox_id, **_opts(target))]


def connect(target: Target, sandbox_id: str) -> Sandbox:
    """The running sandbox as an SDK object, for `commands` and `pty` (connecting extends its timeout)."""
    return sdk().Sandbox.connect(sandbox_id, **_opts(target))


def connect_code_interpreter(target: Target, sandbox_id: str) -> CodeInterpreter:
    """The running sandbox as the SDK's `CodeInterpreter`, for `run-code`."""
    return sdk().CodeInterpreter.connect(sandbox_id, **_opts(target))


def pty_size(rows: int, cols: int) -> PtySize:
    return sdk().PtySize(rows=rows, cols=cols)


# ---- plain REST -----------------------------------------------------------------------------------------------

def rest_get(target: Target, path: str, params: dict[str, Any] | None = None) -> Any:
    """GET an API path with the key; an error answer becomes `ApiAnswer` with the API's own message."""
    return rest_call(target, "GET", path, params=params)


def rest_call(target: Target, method: str, path: str, *, params: dict[str, Any] | None = None,
              json: Any = None) -> Any:
    """Call an API path with the key: the JSON answer (None for an empty one), or `ApiAnswer`."""
    headers = {"X-API-Key": target.api_key, "User-Agent": f"sandhive-cli/{__version__}"}
    with httpx.Client(base_url=target.url, headers=headers, timeout=REST_TIMEOUT, trust_env=False) as client:
        response = client.request(method, path, params=params, json=json)
    if response.is_success:
        return response.json() if response.content else None
    try:
        message = str(response.json().get("message") or response.reason_phrase)
    except (ValueError, AttributeError):
        message = response.text.strip()[:200] or response.reason_phrase
    raise ApiAnswer(response.status_code, message)


def check_key(target: Target) -> None:
    """Prove the server answers and accepts the key (the cheapest call that needs one)."""
    rest_get(target, "/v2/sandboxes", {"limit": 1})


def logs(target: Target, sandbox_id: str, limit: int) -> list[dict[str, str]]:
    """The sandbox's newest `limit` log lines, `{"timestamp", "line"}` each, oldest first."""
    return list(rest_get(target, f"/sandboxes/{sandbox_id}/logs", {"limit": limit})["logs"])


def egress(target: Target, sandbox_id: str, limit: int) -> list[dict[str, str]]:
    """The sandbox's egress audit: the `fields` of its log entries from the egress logger, with their time."""
    entries = rest_get(target, f"/sandboxes/{sandbox_id}/logs", {"limit": 10000})["logEntries"]
    found = [{"timestamp": e["timestamp"], **e.get("fields", {})} for e in entries
             if e.get("fields", {}).get("logger") == "egress"]
    for entry in found:
        entry.pop("logger", None)
    return found[-limit:]


def templates(target: Target) -> list[TemplateRow]:
    return [TemplateRow.of(t) for t in rest_get(target, "/templates")]


def template_detail(target: Target, name: str) -> dict[str, Any]:
    """`GET /templates/{name}`: the template (by id, alias or name), its defaults and builds, as the API says."""
    return rest_get(target, f"/templates/{quote(name, safe='')}")


def delete_template(target: Target, name: str) -> None:
    rest_call(target, "DELETE", f"/templates/{quote(name, safe='')}")


def set_template_public(target: Target, name: str, public: bool) -> dict[str, Any]:
    """E2B's `PATCH /templates/{id}` `{"public": ...}`: whether every team may start the template."""
    return rest_call(target, "PATCH", f"/templates/{quote(name, safe='')}", json={"public": public})


def set_template_aliases(target: Target, name: str, aliases: list[str]) -> list[str]:
    """Replace the template's aliases (Sandhive's `PUT /templates/{id}/aliases`); the aliases it now has."""
    answer = rest_call(target, "PUT", f"/templates/{quote(name, safe='')}/aliases", json={"aliases": aliases})
    return list(answer["aliases"])


def build_template(target: Target, template: Any, name: str | None, *, cpu_count: int | None,
                   memory_mb: int | None, skip_cache: bool, build_args: dict[str, str],
                   on_build_logs: Any) -> Any:
    """Build a `sandhive.Template` (a Dockerfile and its context) and wait for it."""
    return sdk().Template.build(template, name, cpu_count=cpu_count, memory_mb=memory_mb, skip_cache=skip_cache,
                          build_args=build_args or None, on_build_logs=on_build_logs, api_key=target.api_key,
                          api_url=target.url, sandbox_url=target.url)


def audit_page(target: Target, params: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the team's audit log (`GET /sandhive/audit`), oldest first, and the next page's cursor."""
    headers = {"X-API-Key": target.api_key, "User-Agent": f"sandhive-cli/{__version__}"}
    with httpx.Client(base_url=target.url, headers=headers, timeout=REST_TIMEOUT, trust_env=False) as client:
        response = client.get("/sandhive/audit", params={k: v for k, v in params.items() if v is not None})
    if not response.is_success:
        try:
            message = str(response.json().get("message") or response.reason_phrase)
        except (ValueError, AttributeError):
            message = response.text.strip()[:200] or response.reason_phrase
        raise ApiAnswer(response.status_code, message)
    return list(response.json()), response.headers.get("X-Next-Token")
