"""A terminal and file access on a sandbox's envd, for the dashboard's browser bridge.

Like `envd_client`, this speaks envd's Connect protocol (JSON codec) with httpx rather than through an SDK:
a PTY needs one server stream (`Start` with a terminal size) and three unary calls (input, resize, kill);
files need `ListDir` and envd's `/files`. No user is named, so envd acts as the sandbox's default user.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from .envd_client import START_PATH, TOKEN_HEADER, EnvdError, _envelope, _messages

PTY_ENV = {"TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


@dataclass(frozen=True)
class Envd:
    """One sandbox's envd: its URL and access token, reached through `http`."""

    http: httpx.AsyncClient
    url: str
    token: str

    def _headers(self, content_type: str = "application/json") -> dict[str, str]:
        return {"Content-Type": content_type, "Connect-Protocol-Version": "1", TOKEN_HEADER: self.token}

    async def _unary(self, method: str, body: dict) -> dict:
        r = await self.http.post(f"{self.url}/{method}", content=json.dumps(body).encode(),
                                 headers=self._headers(), timeout=15.0)
        if r.status_code != 200:
            raise EnvdError(f"envd {method}: {r.status_code} {r.text[:300]}")
        return r.json() if r.content else {}

    async def pty(self, cols: int, rows: int) -> AsyncIterator[tuple[str, bytes | int]]:
        """Start a login shell on a `cols`×`rows` terminal; yields ("start", pid), ("data", bytes) and
        finally ("end", exit code)."""
        body = {"process": {"cmd": "/bin/bash", "args": ["-i", "-l"], "envs": PTY_ENV},
                "pty": {"size": {"cols": cols, "rows": rows}}, "stdin": False}
        async with self.http.stream("POST", self.url + START_PATH, content=_envelope(body),
                                    headers=self._headers("application/connect+json"),
                                    timeout=httpx.Timeout(15.0, read=None)) as response:
            if response.status_code != 200:
                raise EnvdError(f"envd refused a terminal: {response.status_code}")
            async for message in _messages(response):
                event = message.get("event", {})
                if "start" in event:
                    yield "start", int(event["start"].get("pid", 0))
                data = event.get("data") or {}
                if "pty" in data:
                    yield "data", base64.b64decode(data["pty"])
                if "end" in event:
                    yield "end", int(event["end"].get("exitCode", 0))
                    return

    async def pty_input(self, pid: int, data: bytes) -> None:
        await self._unary("process.Process/SendInput",
                          {"process": {"pid": pid}, "input": {"pty": base64.b64encode(data).decode()}})

    async def pty_resize(self, pid: int, cols: int, rows: int) -> None:
        await self._unary("process.Process/Update", {"process": {"pid": pid}, "pty": {"size": {"cols": cols,
                                                                                                "rows": rows}}})

    async def kill(self, pid: int) -> None:
        await self._unary("process.Process/SendSignal", {"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"})

    async def list_dir(self, path: str) -> list[dict]:
        """The entries of directory `path` (name, type, path, size), as envd's `ListDir` answers them."""
        answer = await self._unary("filesystem.Filesystem/ListDir", {"path": path, "depth": 1})
        return list(answer.get("entries", []))

    async def read(self, path: str) -> httpx.Response:
        """A streamed `GET /files` response (the caller closes it)."""
        request = self.http.build_request("GET", f"{self.url}/files", params={"path": path},
                                          headers={TOKEN_HEADER: self.token, "Accept-Encoding": "identity"},
                                          timeout=30.0)
        return await self.http.send(request, stream=True)

    async def write(self, path: str, data: bytes) -> None:
        r = await self.http.post(f"{self.url}/files", params={"path": path}, headers={TOKEN_HEADER: self.token},
                                 files={"file": (path.rsplit("/", 1)[-1] or "upload", data)}, timeout=60.0)
        if r.status_code != 200:
            raise EnvdError(f"envd refused the upload: {r.status_code} {r.text[:300]}")
