"""The volume API's calls (E2B's beta volumes): `/volumes` under the API key, `/volumecontent/{id}/...` under the
volume's own token. Built here once, sent by either face (`volume.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from .config import ConnectionConfig
from .errors import Context
from .wire import HttpCall


@dataclass(frozen=True)
class VolumeInfo:
    volume_id: str
    name: str
    token: str | None = None


def _info(data: dict[str, Any]) -> VolumeInfo:
    return VolumeInfo(volume_id=data["volumeID"], name=data["name"], token=data.get("token"))


def _call(config: ConnectionConfig, method: str, path: str, what: str, parse: Any, **fields: Any) -> HttpCall[Any]:
    timeout = config.timeout(None)
    return HttpCall(method, f"{config.api_url}{path}", Context(what=what, server=config.api_url, sandbox_id=None,
                                                               timeout=timeout),
                    parse, headers=fields.pop("headers", None) or config.api_headers(), timeout=timeout, **fields)


def create(config: ConnectionConfig, name: str) -> HttpCall[VolumeInfo]:
    return _call(config, "POST", "/volumes", f"create volume '{name}'", lambda r: _info(r.json()),
                 json={"name": name})


def get(config: ConnectionConfig, volume_id: str) -> HttpCall[VolumeInfo]:
    return _call(config, "GET", f"/volumes/{quote(volume_id, safe='')}", f"get volume {volume_id}",
                 lambda r: _info(r.json()))


def list_all(config: ConnectionConfig) -> HttpCall[list[VolumeInfo]]:
    return _call(config, "GET", "/volumes", "list volumes", lambda r: [_info(v) for v in r.json()])


def destroy(config: ConnectionConfig, volume_id: str) -> HttpCall[bool]:
    """True if deleted, False if there was no such volume (E2B's meaning)."""
    return _call(config, "DELETE", f"/volumes/{quote(volume_id, safe='')}", f"delete volume {volume_id}",
                 lambda r: True, special={404: lambda r: False})


def _content(config: ConnectionConfig, token: str) -> dict[str, str]:
    return {**config.headers, "Authorization": f"Bearer {token}"}


def read_file(config: ConnectionConfig, volume: VolumeInfo, path: str) -> HttpCall[bytes]:
    return _call(config, "GET", f"/volumecontent/{volume.volume_id}/file", f"read {path} in volume {volume.name}",
                 lambda r: r.content, params={"path": path}, headers=_content(config, volume.token or ""))


def write_file(config: ConnectionConfig, volume: VolumeInfo, path: str, data: bytes) -> HttpCall[None]:
    return _call(config, "PUT", f"/volumecontent/{volume.volume_id}/file", f"write {path} in volume {volume.name}",
                 lambda r: None, params={"path": path, "force": "true"}, content=data,
                 headers={**_content(config, volume.token or ""), "Content-Type": "application/octet-stream"})


def list_dir(config: ConnectionConfig, volume: VolumeInfo, path: str) -> HttpCall[list[str]]:
    def parse(r: httpx.Response) -> list[str]:
        return [entry["path"] for entry in r.json()]

    return _call(config, "GET", f"/volumecontent/{volume.volume_id}/dir", f"list {path} in volume {volume.name}",
                 parse, params={"path": path}, headers=_content(config, volume.token or ""))


def remove(config: ConnectionConfig, volume: VolumeInfo, path: str) -> HttpCall[None]:
    return _call(config, "DELETE", f"/volumecontent/{volume.volume_id}/path", f"remove {path} in volume "
                 f"{volume.name}", lambda r: None, params={"path": path}, headers=_content(config, volume.token or ""))
