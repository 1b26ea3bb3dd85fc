"""The REST calls of snapshots and forks (E2B's `create_snapshot`, `list_snapshots`, `delete_snapshot`, `fork`),
shared by both faces: request bodies, answers and their models.

A snapshot id is what `Sandbox.create(snapshot_id)` takes (`<id>:default`, or `<team-slug>/<name>:default`).
`fork` answers one entry per requested sandbox: its `SandboxRef`, or the exception that kept it from starting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from . import errors
from .config import ConnectionConfig
from .errors import Context
from .exceptions import InvalidArgumentException, SandboxException
from .ref import SandboxRef
from .wire import HttpCall

MAX_FORK_COUNT = 100


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot: its id (start sandboxes from it with `Sandbox.create(snapshot_id)`) and its full names."""

    snapshot_id: str
    names: list[str]


@dataclass
class SnapshotPage:
    items: list[SnapshotInfo]
    next_token: str | None


def _call(config: ConnectionConfig, method: str, path: str, what: str, parse: Any, *,
          sandbox_id: str | None = None, request_timeout: float | None = None, **fields: Any) -> HttpCall[Any]:
    timeout = config.timeout(request_timeout)
    ctx = Context(what=what, server=config.api_url, sandbox_id=sandbox_id, timeout=timeout)
    return HttpCall(method, f"{config.api_url}{path}", ctx, parse, headers=config.api_headers(), timeout=timeout,
                    **fields)


def _info(data: dict[str, Any]) -> SnapshotInfo:
    return SnapshotInfo(snapshot_id=data["snapshotID"], names=list(data.get("names") or []))


def create_snapshot(config: ConnectionConfig, sandbox_id: str, name: str | None, *,
                    request_timeout: float | None) -> HttpCall[SnapshotInfo]:
    """`POST /sandboxes/{id}/snapshots`: the sandbox's memory and files; it keeps running."""
    body = {"name": name} if name else {}
    return _call(config, "POST", f"/sandboxes/{sandbox_id}/snapshots", f"snapshot sandbox {sandbox_id}",
                 lambda r: _info(r.json()), sandbox_id=sandbox_id, json=body, request_timeout=request_timeout)


def list_snapshots(config: ConnectionConfig, sandbox_id: str | None, *, limit: int | None, next_token: str | None,
                   request_timeout: float | None) -> HttpCall[SnapshotPage]:
    params: dict[str, Any] = {}
    if sandbox_id:
        params["sandboxID"] = sandbox_id
    if limit is not None:
        params["limit"] = limit
    if next_token:
        params["nextToken"] = next_token
    return _call(config, "GET", "/snapshots", "list snapshots",
                 lambda r: SnapshotPage([_info(s) for s in r.json()], r.headers.get("X-Next-Token") or None),
                 params=params, request_timeout=request_timeout)


def delete_snapshot(config: ConnectionConfig, snapshot_id: str, *, request_timeout: float | None) -> HttpCall[bool]:
    """`DELETE /templates/{snapshot}` (a snapshot is a template in E2B): True if deleted, False if not found."""
    return _call(config, "DELETE", f"/templates/{quote(snapshot_id, safe='')}", f"delete snapshot {snapshot_id}",
                 lambda r: True, special={404: lambda r: False}, request_timeout=request_timeout)


def fork(config: ConnectionConfig, sandbox_id: str, *, count: int, timeout: int | None,
         request_timeout: float | None) -> HttpCall[list[SandboxRef | SandboxException]]:
    """`POST /sandboxes/{id}/fork`: `count` new sandboxes from one snapshot of this one."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_FORK_COUNT:
        raise InvalidArgumentException(f"count must be an integer between 1 and {MAX_FORK_COUNT}")
    body: dict[str, Any] = {"count": count}
    if timeout is not None:
        body["timeout"] = int(timeout)
    what = f"fork sandbox {sandbox_id}"

    def parse(response: httpx.Response) -> list[SandboxRef | SandboxException]:
        out: list[SandboxRef | SandboxException] = []
        for entry in response.json():
            if entry.get("sandbox"):
                out.append(SandboxRef.from_json(entry["sandbox"], config))
            else:
                error = entry.get("error") or {"code": 500, "message": "the fork did not start"}
                ctx = Context(what=what, server=config.api_url, sandbox_id=None)
                out.append(errors.from_response(int(error.get("code", 500)), json.dumps(error).encode(), ctx))
        return out

    return _call(config, "POST", f"/sandboxes/{sandbox_id}/fork", what, parse, sandbox_id=sandbox_id, json=body,
                 request_timeout=request_timeout)
