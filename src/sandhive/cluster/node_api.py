"""The node API (`sandhive node`): one host's `Node` served to control planes over HTTP, and its node-side proxy.

Everything on the node's port needs the cluster token (`Sandhive-Cluster-Token`, compared in constant time):
the API under `/node/v1` and sandbox traffic alike, which the control plane's edge proxy forwards here with
`E2b-Sandbox-Id`/`E2b-Sandbox-Port` (the token is taken off before a sandbox sees the request). The node
keeps which of its sandboxes are handed out (`_Sandboxes`): the proxy routes only those, and
`GET /node/v1/status` lists them, which is how control planes notice a sandbox that died (they poll every 2 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..api.tokens import access_token
from ..errors import NodeError, UserError, report_internal
from ..node.admission import Resources
from ..node.node import LogNote, Node, host_ca_bundle
from ..node.request import CreateRequest, Identity
from ..node.runtime import ResourceUsage, SandboxHandle, TemplateImage, VolumeMount
from ..proxy.access import Route
from ..proxy.asgi import EdgeProxy
from ..templates.info import TemplateInfo
from ..templates.pull import Pulled, PullingTemplates
from ..version import __version__
from . import models as m
from .node_builds import NodeBuilds

log = logging.getLogger("sandhive.cluster")


class TemplateSource(Protocol):
    """What the node needs of its template registry (`templates.registry.TemplateRegistry`, or
    `templates.pull.PullingTemplates` with a template registry)."""

    async def resolve(self, name: str) -> TemplateImage: ...

    def list(self) -> list[TemplateInfo]: ...


class _Sandboxes:
    """The node's handed-out sandboxes: id → handle, for the node-side proxy and the status's `running`."""

    def __init__(self) -> None:
        self.handles: dict[str, SandboxHandle] = {}

    async def resolve(self, sandbox_id: str) -> Route | None:
        handle = self.handles.get(sandbox_id)
        return Route(handle.address) if handle is not None else None


class NodeService:
    """The node API's behaviour, apart from HTTP: the node, its templates, and who it says it is."""

    def __init__(self, node: Node, templates: TemplateSource, token: str, node_id: str, proxy: str,
                 trust_host_ca: bool = True) -> None:
        self.node = node
        self.templates = templates
        self.node_id = node_id
        self.proxy = proxy
        self.sandboxes = _Sandboxes()
        self._secret = m.cluster_secret(token)
        self._trust_host_ca = trust_host_ca
        self._started = False
        self._reconciling = False  # the first reconcile has begun (a second one meanwhile only adopts)
        self._reconciled = False  # ... and it has finished: what survived is handed out, creates are taken
        self.boot_id = secrets.token_hex(8)
        self.builds: NodeBuilds | None = None  # template builds for control planes (with --template-registry)
        self.volumes: Any = None  # the node's volume images (node_volume_api.NodeVolumes), for creates mounting them

    def node_builds(self) -> NodeBuilds:
        if self.builds is None or self.builds.ref is None:
            raise UserError(409, f"node {self.node_id} has no template registry (--template-registry): it cannot "
                                 "build templates for a control plane")
        return self.builds

    def token_for(self, sandbox_id: str) -> str:
        return access_token(self._secret, sandbox_id)

    def _handle(self, handle: SandboxHandle) -> m.Handle:
        out = m.Handle.of(handle)
        out.state = {**out.state, m.NODE_ID_KEY: self.node_id, m.NODE_PROXY_KEY: self.proxy}
        return out

    async def create(self, body: m.CreateBody) -> m.Handle:
        if not self._reconciled:
            # A restarted node's first reconcile removes what the store does not know, and the store does not yet
            # know a sandbox being created: so no create before it (the control plane tries another node).
            raise NodeError(503, f"node {self.node_id} has just started and is not reconciled yet",
                            "node_starting", {"Retry-After": "2"})
        template, pulled = await self._template_for_create(body.template_id)
        request = CreateRequest(template, body.cpu_count, body.memory_mb, body.disk_mb, body.allow_internet_access,
                                await self.mounts(body))
        identity = Identity(env_vars=body.env_vars, default_user=body.default_user,
                            default_workdir=body.default_workdir, token_for=self.token_for)
        handle = await self.node.create(request, identity)
        self._hand_out(handle)
        out = self._handle(handle)
        if pulled is not None:  # the user sees where the create's seconds went, in the sandbox's own log
            note = LogNote(pulled.started, pulled.message(), pulled.fields())
            out.state[m.CREATE_LOG_KEY] = m.CREATE_LOG.dump_python([note], mode="json")
        return out

    async def mounts(self, body: m.CreateBody) -> tuple[VolumeMount, ...]:
        if not body.volumes:
            return ()
        if self.volumes is None:
            raise UserError(409, f"node {self.node_id} keeps no volumes")
        result: tuple[VolumeMount, ...] = await self.volumes.mounts(body.volumes)
        return result

    def _hand_out(self, handle: SandboxHandle) -> None:
        self.sandboxes.handles[handle.sandbox_id] = handle
        self.node.watch(handle, self._ended)

    async def _ended(self, handle: SandboxHandle, reason: str) -> None:
        """A sandbox died by itself: freed here at once; control planes learn it from the next status."""
        log.warning("sandbox %s ended by itself (%s); freeing it", handle.sandbox_id, reason)
        self.sandboxes.handles.pop(handle.sandbox_id, None)
        with contextlib.suppress(Exception):
            await self.node.kill(handle)

    async def kill(self, handle: m.Handle) -> None:
        self.sandboxes.handles.pop(handle.sandbox_id, None)
        await self.node.kill(handle.to_handle())

    async def _template(self, name: str) -> TemplateImage:
        try:
            return await self.templates.resolve(name)
        except LookupError:
            raise UserError(404, f"template '{name}' not found on node {self.node_id}") from None

    async def _template_for_create(self, name: str) -> tuple[TemplateImage, Pulled | None]:
        """The template, and the pull the create waited for, if it did."""
        if not isinstance(self.templates, PullingTemplates):
            return await self._template(name), None
        try:
            return await self.templates.resolve_for_create(name)
        except LookupError:
            raise UserError(404, f"template '{name}' not found on node {self.node_id}") from None

    async def template(self, name: str) -> m.Template:
        return m.Template.of(await self._template(name))

    async def reconcile(self, body: m.Reconcile) -> m.Alive:
        """The first reconcile after the node started adopts what still runs and removes what nobody knows
        (a previous node process's pools among them); later ones (another control-plane replica starting)
        only adopt: the node's own warm sandboxes are unknown to every store."""
        known = [h.to_handle() for h in body.known]
        resources = {k: Resources(memory_mb=v[0], cpu_count=v[1]) for k, v in body.resources.items()}
        first = not self._reconciling
        if first:
            self._reconciling = True
            try:
                alive = await self.node.reconcile(known, resources, paused=body.paused)
            except BaseException:
                self._reconciling = False  # the next control plane to notice tries again
                raise
        else:
            alive = {h.sandbox_id for h in known
                     if h.sandbox_id in self.sandboxes.handles or await self.node.is_running(h)}
        for handle in known:
            if handle.sandbox_id in alive and handle.sandbox_id not in self.sandboxes.handles:
                self._hand_out(handle)
        # Only now does the status say so: a status taken while the first reconcile ran would list none of the
        # survivors yet, and a control plane would take them for dead.
        self._reconciled = self._reconciled or first
        return m.Alive(alive=sorted(alive))

    async def start(self, body: m.Start) -> None:
        """Begin pooling (once): `prewarm` templates are kept warm."""
        if self._started:
            return
        self._started = True
        prewarm = []
        for name in body.prewarm:
            try:
                prewarm.append(CreateRequest.of(await self.templates.resolve(name)))
            except Exception as exc:
                log.warning("not warming a pool for template %s: %s", name, exc)
        await self.node.start(ca_bundle=await asyncio.to_thread(host_ca_bundle, self._trust_host_ca),
                              prewarm=prewarm)

    def status(self) -> m.Status:
        s = self.node.status()
        return m.Status(node_id=self.node_id, backend=s.backend, proxy=self.proxy, memory_mb=s.budget.memory_mb,
                        cpus=s.budget.cpus, memory_overcommit=s.budget.memory_overcommit,
                        max_sandboxes=s.budget.max_sandboxes, reserved_memory_mb=s.reserved.memory_mb,
                        reserved_cpus=s.reserved.cpu_count, pooled_memory_mb=s.pooled.memory_mb,
                        pooled_cpus=s.pooled.cpu_count, in_use_mb=s.in_use_mb, sandboxes=s.sandboxes,
                        pressure=s.pressure, pools=list(s.pools),
                        running=sorted(self.sandboxes.handles), templates=[t.id for t in self.templates.list()],
                        boot_id=self.boot_id,
                        reconciled=self._reconciled, egress_denied_total=self.node.egress_log.denied_total,
                        pause_modes=list(self.node.runtime.persistence.pause_modes),
                        memory_snapshots=self.node.runtime.persistence.memory_snapshots)


def node_router(service: NodeService) -> APIRouter:
    r = APIRouter(prefix=m.API_PREFIX)

    @r.get("/status")
    async def status() -> m.Status:
        return service.status()

    @r.post("/sandboxes", status_code=201)
    async def create(body: m.CreateBody) -> m.Handle:
        return await service.create(body)

    @r.post("/sandboxes/kill", status_code=204)
    async def kill(body: m.Handle) -> None:
        await service.kill(body)

    @r.post("/sandboxes/running")
    async def running(body: m.Handle) -> m.Running:
        return m.Running(running=await service.node.is_running(body.to_handle()))

    @r.post("/sandboxes/usage")
    async def usage(body: m.Handle) -> ResourceUsage:
        return await service.node.usage(body.to_handle())

    @r.post("/sandboxes/logs")
    async def logs(body: m.Handle) -> m.Logs:
        return m.Logs(lines=await service.node.logs(body.to_handle()))

    @r.post("/sandboxes/egress-log")
    async def egress_log(body: m.Handle) -> m.EgressEntries:
        return m.EgressEntries(entries=await service.node.egress_entries(body.to_handle()))

    @r.post("/sandboxes/egress", status_code=204)
    async def set_egress(body: m.SetEgress) -> None:
        await service.node.set_egress(body.handle.to_handle(), body.policy.to_policy())

    @r.get("/templates/{name:path}")
    async def template(name: str) -> m.Template:
        return await service.template(name)

    @r.put(m.BUILDS_PREFIX + "/{build_id}/context", status_code=204)
    async def build_context(build_id: str, request: Request) -> None:
        await service.node_builds().receive_context(build_id, request.stream())

    @r.post(m.BUILDS_PREFIX)
    async def build(body: m.BuildJob) -> StreamingResponse:
        return StreamingResponse(service.node_builds().build(body), media_type="application/x-ndjson")

    @r.post("/reconcile")
    async def reconcile(body: m.Reconcile) -> m.Alive:
        return await service.reconcile(body)

    @r.post("/start", status_code=204)
    async def start(body: m.Start) -> None:
        await service.start(body)

    return r


class TokenGate:
    """Every request to the node carries the cluster token, or gets 401 (a WebSocket is refused before it is
    accepted). The token is removed from what goes on, so no sandbox ever sees it."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()
        self._header = m.TOKEN_HEADER.lower().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        sent = [value for key, value in headers if key.lower() == self._header]
        if len(sent) != 1 or not hmac.compare_digest(sent[0], self._token):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await JSONResponse({"code": 401, "message": "Missing or invalid cluster token"}, status_code=401)(
                scope, receive, send)
            return
        scope = {**scope, "headers": [(k, v) for k, v in headers if k.lower() != self._header]}
        await self.app(scope, receive, send)


def create_node_app(service: NodeService, token: str, routers: Sequence[APIRouter] = ()) -> ASGIApp:
    """The node's one port: the node API and the node-side proxy behind the token gate. Its lifespan closes the
    node (handed-out sandboxes keep running; the next node process re-adopts them at its first reconcile)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await service.node.close()

    app = FastAPI(title="Sandhive node", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)

    @app.exception_handler(UserError)
    async def _user_error(_: Request, exc: UserError) -> JSONResponse:
        body: dict = {"code": exc.status, "message": exc.message}
        if exc.error_code:
            body["error_code"] = exc.error_code
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"code": 500, "message": report_internal(log, exc, "serving the node API")},
                            status_code=500)

    app.include_router(node_router(service))
    for router in routers:  # more of the node API (node_saved_api: pauses and snapshots)
        app.include_router(router)
    return TokenGate(EdgeProxy(app, resolve=service.sandboxes.resolve), token)


def data_dir_node_id(data_dir: Path) -> str:
    """A node's id, kept in its data dir so a restarted node is the same node (E2B's `clientID` names it)."""
    path = data_dir / "node-id"
    if not path.exists():
        path.write_text("node-" + secrets.token_hex(4) + "\n")
    return path.read_text().strip()
