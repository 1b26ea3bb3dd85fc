"""The dashboard's pages and fragments (docs/dashboard.md). Each handler resolves the viewer from the session,
then calls the same services the REST routes call, with the viewer's team: a team sees only its own things,
and only an admin key sees the node and every pool. Templates receive plain values, never a service.

No `from __future__ import annotations`: FastAPI reads the parameter annotations at runtime.
"""

import asyncio
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates

from ...errors import UserError
from ...node.envd_client import EnvdError
from ...node.envd_console import Envd
from ...store import SandboxQuery
from ...templates.build_service import TemplateBuildService
from ..auth import authenticate
from ..sandboxes import SandboxService
from ..views import listed_view
from . import assets
from .access import LoginRequired, Viewer, check_origin, posted_form, viewer
from .sessions import COOKIE, CSRF_FIELD, Sessions
from .terminal import bridge

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
PREFIX = "/dashboard"
UPLOAD_MAX = 100 * 2**20  # bytes of one file uploaded through the browser
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
ALL = 10**9


def _age(started: datetime) -> str:
    seconds = int((datetime.now(UTC) - started).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


class Dashboard:
    """The dashboard over one API app's services."""

    def __init__(self, service: SandboxService, builds: TemplateBuildService) -> None:
        self.service = service
        self.builds = builds
        self.store = service.store
        self.sessions = Sessions(self.store)
        self.node_name = socket.gethostname()
        self.http: Any = None  # envd's httpx client, made on first use (on the server's event loop)

    # ---- helpers ------------------------------------------------------------------------------------

    def page(self, request: Request, name: str, seen: Viewer | None, **values: Any) -> HTMLResponse:
        context = {"viewer": seen, "csrf": seen.session.csrf if seen else "", "csrf_field": CSRF_FIELD, **values}
        response = TEMPLATES.TemplateResponse(request, name, context)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    async def envd(self, seen: Viewer, sandbox_id: str) -> Envd:
        """The viewer's running sandbox's envd (404 for another team's, 409 when it is not running)."""
        import httpx

        detail = await self.service.info(seen.team, sandbox_id)
        route = await self.service.directory.resolve(sandbox_id)
        if detail.state != "running" or route is None or not route.address:
            raise UserError(409, f"Sandbox {sandbox_id} is not running")
        if self.http is None:
            self.http = httpx.AsyncClient(trust_env=False)
        return Envd(self.http, f"http://{route.address}:49983", detail.envdAccessToken)

    async def rows(self, seen: Viewer, state: str, template: str, text: str) -> list[dict[str, Any]]:
        states = (state,) if state in ("running", "paused") else ("running", "paused")
        query = SandboxQuery(states=states, template=template or None, limit=ALL)
        records, _ = await asyncio.to_thread(self.store.list_sandboxes, seen.team, query)
        out = []
        for record in records:
            view = listed_view(record)
            if text and text not in view.sandboxID and text not in (view.alias or "") and text not in view.templateID:
                continue
            out.append({"id": view.sandboxID, "state": view.state, "template": view.alias or view.templateID,
                        "node": f"{self.node_name} ({record.backend})", "age": _age(view.startedAt),
                        "cpu": view.cpuCount, "memory": view.memoryMB})
        return out

    async def close(self) -> None:
        if self.http is not None:
            await self.http.aclose()


def install(app: FastAPI, service: SandboxService, builds: TemplateBuildService) -> Dashboard:
    """Add the dashboard's routes (left out of the OpenAPI document) and its login redirect to `app`."""
    board = Dashboard(service, builds)
    app.include_router(dashboard_router(board))

    async def login_required(request: Request, _: Exception) -> Response:
        if request.headers.get("HX-Request"):
            return Response(status_code=401, headers={"HX-Redirect": f"{PREFIX}/login"})
        return RedirectResponse(f"{PREFIX}/login", status_code=303)

    app.add_exception_handler(LoginRequired, login_required)
    return board


def dashboard_router(board: Dashboard) -> APIRouter:  # noqa: C901 — one page per function, read top to bottom
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    sessions, store, service = board.sessions, board.store, board.service

    async def seen_by(request: Request) -> Viewer:
        return await viewer(request, sessions)

    @router.get("/assets/{name}")
    async def asset(name: str) -> Response:
        return assets.asset(name)

    @router.get("")
    async def home() -> Response:
        return RedirectResponse(f"{PREFIX}/sandboxes", status_code=303)

    # ---- login --------------------------------------------------------------------------------------

    @router.get("/login")
    async def login_form(request: Request) -> Response:
        return board.page(request, "login.html", None, error=None)

    @router.post("/login")
    async def login(request: Request) -> Response:
        check_origin(request)  # no login CSRF: another site cannot log the browser in to its own team
        form = await request.form()
        key = str(form.get("key") or "").strip()
        try:
            caller = await authenticate(store, key)
        except UserError:
            refused = board.page(request, "login.html", None, error="That API key is not valid.")
            refused.status_code = 401
            return refused
        session = await sessions.open(caller)
        response = RedirectResponse(f"{PREFIX}/sandboxes", status_code=303)
        response.set_cookie(COOKIE, session.id, httponly=True, samesite="strict", path=PREFIX,
                            secure=request.url.scheme == "https")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        seen, _ = await posted_form(request, sessions)
        await sessions.close(seen.session.id)
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    # ---- sandboxes ----------------------------------------------------------------------------------

    @router.get("/sandboxes")
    async def sandboxes(request: Request) -> Response:
        seen = await seen_by(request)
        return board.page(request, "sandboxes.html", seen, page="sandboxes")

    @router.get("/sandboxes/rows")
    async def sandbox_rows(request: Request, state: str = "", template: str = "", q: str = "") -> Response:
        seen = await seen_by(request)
        rows = await board.rows(seen, state, template.strip(), q.strip())
        return board.page(request, "_sandbox_rows.html", seen, rows=rows)

    @router.post("/sandboxes/{sandbox_id}/{action}")
    async def sandbox_action(request: Request, sandbox_id: str, action: str) -> Response:
        seen, _ = await posted_form(request, sessions)
        try:
            if action == "kill":
                await service.kill(seen.team, sandbox_id)
            elif action == "pause":
                await service.pauses.pause(seen.team, sandbox_id, None)
            elif action == "resume":
                timeout = service.settings.default_timeout_seconds
                await service.pauses.resume(seen.team, sandbox_id, timeout)
            else:
                raise UserError(404, f"no action {action!r}")
        except UserError as exc:
            return HTMLResponse(f"<span class=error>{action} {sandbox_id}: {_escape(exc.message)}</span>")
        return HTMLResponse(f"<span class=ok>{action}: {_escape(sandbox_id)} done</span>",
                            headers={"HX-Trigger": "sandboxes-changed"})

    @router.get("/sandboxes/{sandbox_id}")
    async def sandbox(request: Request, sandbox_id: str, path: str = "") -> Response:
        seen = await seen_by(request)
        detail = await service.info(seen.team, sandbox_id)
        return board.page(request, "sandbox.html", seen, page="sandboxes", sandbox=detail,
                          path=path or "/home/user")

    @router.get("/sandboxes/{sandbox_id}/metrics.json")
    async def sandbox_metrics(request: Request, sandbox_id: str) -> Response:
        seen = await seen_by(request)
        samples = await service.metrics(seen.team, sandbox_id, int(time.time()) - 3600, None)
        return JSONResponse([s.model_dump(mode="json") for s in samples], headers={"Cache-Control": "no-store"})

    @router.get("/sandboxes/{sandbox_id}/logs")
    async def sandbox_logs(request: Request, sandbox_id: str) -> Response:
        seen = await seen_by(request)
        logs = await service.logs(seen.team, sandbox_id, None, 200)
        return board.page(request, "_logs.html", seen, logs=logs.logs)

    @router.get("/sandboxes/{sandbox_id}/audit")
    async def sandbox_audit(request: Request, sandbox_id: str) -> Response:
        """The sandbox's audit trail (docs/audit.md), the team's own events only, as `GET /sandhive/audit`."""
        seen = await seen_by(request)
        await service.audit.flush()
        rows, _ = await asyncio.to_thread(service.store.list_audit_events, seen.team, sandbox_id=sandbox_id,
                                          action=None, since=None, limit=200, cursor=None)
        return board.page(request, "_audit.html", seen, events=rows)

    @router.get("/sandboxes/{sandbox_id}/files")
    async def sandbox_files(request: Request, sandbox_id: str, path: str = "/home/user") -> Response:
        seen = await seen_by(request)
        error, entries = None, []
        try:
            envd = await board.envd(seen, sandbox_id)
            entries = sorted(await envd.list_dir(path), key=lambda e: (e.get("type") != "FILE_TYPE_DIRECTORY",
                                                                       e.get("name", "")))
        except (UserError, EnvdError) as exc:
            error = exc.message if isinstance(exc, UserError) else f"cannot list {path}"
        parent = str(Path(path).parent) if path not in ("", "/") else None
        return board.page(request, "_files.html", seen, sandbox_id=sandbox_id, path=path, parent=parent,
                          entries=entries, error=error)

    @router.get("/sandboxes/{sandbox_id}/files/download")
    async def download(request: Request, sandbox_id: str, path: str) -> Response:
        seen = await seen_by(request)
        envd = await board.envd(seen, sandbox_id)
        upstream = await envd.read(path)
        if upstream.status_code != 200:
            await upstream.aclose()
            raise UserError(404, f"cannot read {path}")
        name = "".join(c for c in Path(path).name if c.isalnum() or c in "._-+ ") or "download"

        async def body() -> Any:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()

        return StreamingResponse(body(), media_type="application/octet-stream",
                                 headers={"Content-Disposition": f'attachment; filename="{name}"',
                                          "X-Content-Type-Options": "nosniff"})

    @router.post("/sandboxes/{sandbox_id}/files/upload")
    async def upload(request: Request, sandbox_id: str) -> Response:
        seen, form = await posted_form(request, sessions, UPLOAD_MAX + 2**20)
        folder = str(form.get("path") or "/home/user")
        sent = form.get("file")
        if sent is None or isinstance(sent, str) or not sent.filename:
            raise UserError(400, "Choose a file to upload")
        data = await sent.read(UPLOAD_MAX + 1)
        if len(data) > UPLOAD_MAX:
            raise UserError(413, f"A file uploaded from the browser may be at most {UPLOAD_MAX // 2**20} MiB")
        name = Path(sent.filename).name
        envd = await board.envd(seen, sandbox_id)
        try:
            await envd.write(f"{folder.rstrip('/')}/{name}", data)
        except EnvdError:
            raise UserError(400, f"cannot write {name} into {folder}") from None
        target = f"{folder.rstrip('/')}/{name}"
        service.audit.record(seen.team, "file.write", sandbox_id=sandbox_id, target=target,
                             detail={"path": target, "bytes": len(data), "via": "dashboard"})
        return RedirectResponse(f"{PREFIX}/sandboxes/{sandbox_id}?path={folder}", status_code=303)

    @router.websocket("/sandboxes/{sandbox_id}/terminal")
    async def terminal(websocket: WebSocket, sandbox_id: str) -> None:
        await bridge(websocket, board, sandbox_id)

    # ---- templates, keys, nodes ---------------------------------------------------------------------

    @router.get("/templates")
    async def templates(request: Request) -> Response:
        seen = await seen_by(request)
        rows: list[dict[str, Any]] = []
        if service.catalog is not None:
            visible = await asyncio.to_thread(service.catalog.visible_blocking, seen.team)
            for info, owner in visible:
                if owner is None:
                    rows.append({"id": info.id, "name": ", ".join(info.aliases) or info.id, "builtin": True,
                                 "builds": []})
        for owned in await asyncio.to_thread(store.team_templates, seen.team):
            try:
                detail = await board.builds.detail(seen.team, owned.template_id)
            except UserError:
                continue
            builds = sorted(detail.builds, key=lambda b: b.createdAt, reverse=True)
            rows.append({"id": owned.template_id, "name": owned.name, "builtin": False,
                         "builds": [b.model_dump() for b in builds[:5]]})
        return board.page(request, "templates.html", seen, page="templates", rows=rows)

    @router.get("/templates/{template_id}/builds/{build_id}/logs")
    async def build_logs(request: Request, template_id: str, build_id: str, offset: int = 0) -> Response:
        seen = await seen_by(request)
        info = await board.builds.status(seen.team, template_id, build_id, max(offset, 0), 200, None)
        return board.page(request, "_build_logs.html", seen, info=info, template_id=template_id,
                          offset=offset + len(info.logEntries))

    @router.get("/keys")
    async def keys(request: Request) -> Response:
        seen = await seen_by(request)
        return board.page(request, "keys.html", seen, page="keys", keys=await _team_keys(store, seen), created=None)

    @router.post("/keys")
    async def create_key(request: Request) -> Response:
        seen, _ = await posted_form(request, sessions)
        name = await asyncio.to_thread(store.team_name_of, seen.team)
        if name is None:
            raise UserError(404, "the team no longer exists")
        key, _ = await asyncio.to_thread(store.create_api_key, name, False)
        return board.page(request, "keys.html", seen, page="keys", keys=await _team_keys(store, seen), created=key)

    @router.post("/keys/{prefix}/revoke")
    async def revoke_key(request: Request, prefix: str) -> Response:
        seen, _ = await posted_form(request, sessions)
        if prefix not in {k.prefix for k in await _team_keys(store, seen) if k.revoked_at is None}:
            raise UserError(404, "no such key")
        await asyncio.to_thread(store.revoke_api_key, prefix)
        return RedirectResponse(f"{PREFIX}/keys", status_code=303)

    @router.get("/nodes")
    async def nodes(request: Request) -> Response:
        seen = await seen_by(request)
        if not seen.admin:
            raise UserError(403, "Nodes and pools are shown to admin keys only")
        status = service.node.status() if service.node is not None else None
        return board.page(request, "nodes.html", seen, page="nodes", status=status, node_name=board.node_name)

    return router


async def _team_keys(store: Any, seen: Viewer) -> list[Any]:
    name = await asyncio.to_thread(store.team_name_of, seen.team)
    return [k for k in await asyncio.to_thread(store.list_api_keys) if k.team == name]


def _escape(text: str) -> str:
    from html import escape

    return escape(text)
