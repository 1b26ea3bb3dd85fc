"""envd's ASGI application: the Connect services, the HTTP routes and the access-token gate."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from starlette.applications import Starlette
from starlette.routing import Route

from ..rpc.filesystem.filesystem_connect import FilesystemASGIApplication
from ..rpc.process.process_connect import ProcessASGIApplication
from . import control_http, files_http
from .auth import ACCESS_TOKEN_HEADER, OPEN_PATHS, UNAUTHORIZED_MESSAGE
from .codecs import codecs
from .filesystem_service import FilesystemService
from .metrics import CpuSampler
from .process_service import ProcessService
from .processes import ProcessTable
from .reaper import Reaper
from .state import SandboxState

PROCESS_PREFIX = "/process.Process/"
FILESYSTEM_PREFIX = "/filesystem.Filesystem/"


class EnvdApp:
    """Routes Connect calls to their services and everything else to Starlette, behind the token gate."""

    def __init__(self, state: SandboxState | None = None, system_root: str | None = None,
                 set_clock: bool = False) -> None:
        self.state = state or SandboxState()
        self.reaper = Reaper()
        self.processes = ProcessTable(self.reaper)
        self.filesystem = FilesystemService(self.state)
        self.process_rpc = ProcessASGIApplication(ProcessService(self.processes, self.state, system_root),
                                                  codecs=codecs())
        self.filesystem_rpc = FilesystemASGIApplication(self.filesystem, codecs=codecs())
        sampler = CpuSampler()
        self.http = Starlette(
            routes=[
                Route("/health", control_http.health, methods=["GET"]),
                Route("/init", partial(control_http.init, state=self.state, set_clock=set_clock), methods=["POST"]),
                Route("/envs", partial(control_http.envs, state=self.state), methods=["GET"]),
                Route("/metrics", partial(control_http.metrics, sampler=sampler), methods=["GET"]),
                Route("/files", partial(files_http.download, state=self.state), methods=["GET"]),
                Route("/files", partial(files_http.upload, state=self.state), methods=["POST"]),
            ],
            lifespan=self._lifespan,
        )

    @asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        self.reaper.install(asyncio.get_running_loop())
        try:
            yield
        finally:
            self.processes.kill_all()
            for watcher in self.filesystem.watchers.values():
                watcher.close()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.http(scope, receive, send)
            return
        path: str = scope["path"]
        if path not in OPEN_PATHS and not self.state.token_ok(_header(scope, ACCESS_TOKEN_HEADER)):
            await _json(send, 401, {"code": 401, "message": UNAUTHORIZED_MESSAGE})
            return
        if path.startswith(PROCESS_PREFIX):
            await self.process_rpc(scope, receive, send)
        elif path.startswith(FILESYSTEM_PREFIX):
            await self.filesystem_rpc(scope, receive, send)
        else:
            await self.http(scope, receive, send)


def _header(scope, name: str) -> str | None:
    key = name.encode()
    for k, v in scope.get("headers", ()):
        if k.lower() == key:
            return v.decode("latin-1")
    return None


async def _json(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
