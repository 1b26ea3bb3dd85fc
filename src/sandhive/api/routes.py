"""E2B's REST routes (docs/wire.md §2.2): thin HTTP wrappers over `SandboxService` and its template resolver.

No `from __future__ import annotations` here: FastAPI reads the parameter annotations at runtime.
"""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from fastapi.responses import JSONResponse

from ..store import Caller as StoreCaller
from ..store import SandboxQuery
from ..version import __version__
from .auth import caller_of_key, team_of_key
from .listing import build_query, parse_metadata
from .sandboxes import SandboxService
from .schemas import (
    ConnectSandbox,
    ErrorBody,
    Health,
    ListedSandbox,
    NewSandbox,
    NewSandboxV2,
    NodeStatus,
    Persistence,
    RefreshBody,
    Sandbox,
    SandboxDetail,
    SandboxLogs,
    SandboxMetric,
    SandboxNetworkUpdate,
    TemplateListing,
    TimeoutBody,
    WarmPool,
)
from .templates import template_listing

ERROR_TEXT = {400: "Bad request", 401: "Missing or invalid API key", 404: "Not found", 409: "Conflict",
              429: "The team's sandbox limit is reached (Retry-After)",
              500: "Server error", 503: "The host's memory or CPU budget is spent (Retry-After)"}
IDEMPOTENCY_KEY = Header(alias="Idempotency-Key", pattern=r"^[a-z0-9-]{1,255}$",
                         description="Retries with the same key and body get the first answer again")
NEXT_TOKEN_HEADER = {"X-Next-Token": {"description": "Cursor of the next page (absent on the last)",
                                      "schema": {"type": "string"}}}
ALL = 10**9  # "no limit" for the v1 list
SandboxID = Annotated[str, Path(alias="sandboxID")]


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": ERROR_TEXT[code]} for code in codes}


def sandbox_router(service: SandboxService) -> APIRouter:
    router = APIRouter(tags=["sandboxes"])
    Team = Annotated[str, Depends(team_of_key(service.store))]  # noqa: N806 — a type alias, read as one

    @router.post("/v2/sandboxes", status_code=201, responses=errors(400, 401, 404, 409, 429, 500, 503))
    async def create_sandbox_v2(body: NewSandboxV2, team: Team,
                                idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None) -> Sandbox:
        """Create a sandbox from a template (the 2.x SDKs)."""
        return await service.create(team, body, "v2", idempotency_key)

    @router.post("/sandboxes", status_code=201, responses=errors(400, 401, 404, 409, 429, 500, 503))
    async def create_sandbox(body: NewSandbox, team: Team,
                             idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None) -> Sandbox:
        """Create a sandbox (v1, older SDKs)."""
        return await service.create(team, body, "v1", idempotency_key)

    async def connect(sandbox_id: SandboxID, team: Team, response: Response,
                      body: ConnectSandbox | None = None) -> Sandbox:
        """Connect to a sandbox: 200 when it runs (its timeout is extended, never shortened), 201 when it was
        paused and is resumed now."""
        view, resumed = await service.connect(team, sandbox_id, body or ConnectSandbox())
        response.status_code = 201 if resumed else 200
        return view

    for path in ("/v2/sandboxes/{sandboxID}/connect", "/sandboxes/{sandboxID}/connect"):
        router.add_api_route(path, connect, methods=["POST"], status_code=200,
                             responses={201: {"model": Sandbox, "description": "Resumed"},
                                        **errors(400, 401, 404, 409, 429, 503)},
                             operation_id=f"connect_sandbox{'_v2' if path.startswith('/v2') else ''}")

    @router.get("/v2/sandboxes", responses={200: {"headers": NEXT_TOKEN_HEADER}, **errors(400, 401)})
    async def list_sandboxes_v2(
        response: Response, team: Team,
        metadata: Annotated[str | None, Query(description="key=value pairs joined by &, each part encoded")] = None,
        state: Annotated[list[str] | None, Query(description="running and/or paused, comma-separated")] = None,
        order: Annotated[str | None, Query(description="asc or desc by start time (default desc)")] = None,
        started_after: Annotated[str | None, Query(alias="startedAfter")] = None,
        template: Annotated[str | None, Query(description="template id or alias")] = None,
        next_token: Annotated[str | None, Query(alias="nextToken")] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 100,
    ) -> list[ListedSandbox]:
        """List the team's sandboxes, a page at a time; the next page's cursor is in `X-Next-Token`."""
        query = build_query(metadata=metadata, state=",".join(state) if state else None, order=order,
                            started_after=started_after, template=template, next_token=next_token, limit=limit)
        items, token = await service.list_sandboxes(team, query)
        if token:
            response.headers["X-Next-Token"] = token
        return items

    @router.get("/sandboxes", responses=errors(400, 401))
    async def list_sandboxes(team: Team, metadata: str | None = None) -> list[ListedSandbox]:
        """List the team's running sandboxes (v1, no paging)."""
        query = SandboxQuery(states=("running",), metadata=parse_metadata(metadata), limit=ALL)
        items, _ = await service.list_sandboxes(team, query)
        return items

    @router.get("/sandboxes/{sandboxID}", responses=errors(401, 404), response_model=SandboxDetail)
    async def get_sandbox(sandbox_id: SandboxID, team: Team) -> JSONResponse:
        """A sandbox's details."""
        body = (await service.info(team, sandbox_id)).model_dump(mode="json")
        if body.get("network") is None:  # left out, not null: E2B's SDK parses a present `network` as an object
            body.pop("network", None)
        return JSONResponse(body)

    @router.delete("/sandboxes/{sandboxID}", status_code=204, response_class=Response, responses=errors(401, 404, 500))
    async def kill_sandbox(sandbox_id: SandboxID, team: Team) -> Response:
        """Kill a sandbox."""
        await service.kill(team, sandbox_id)
        return Response(status_code=204)

    @router.post("/sandboxes/{sandboxID}/timeout", status_code=204, response_class=Response,
                 responses=errors(400, 401, 404))
    async def set_timeout(sandbox_id: SandboxID, body: TimeoutBody, team: Team) -> Response:
        """Set the sandbox to end `timeout` seconds from now (this may shorten its life)."""
        await service.set_timeout(team, sandbox_id, body.timeout)
        return Response(status_code=204)

    @router.put("/sandboxes/{sandboxID}/network", status_code=204, response_class=Response,
                responses=errors(400, 401, 404, 409, 500))
    async def update_network(sandbox_id: SandboxID, body: SandboxNetworkUpdate, team: Team) -> Response:
        """Replace the sandbox's egress rules (`allowOut`, `denyOut`, `allow_internet_access`); omitted fields
        are cleared. New connections follow the rules at once; established ones they deny are cut."""
        await service.update_network(team, sandbox_id, body)
        return Response(status_code=204)

    @router.post("/sandboxes/{sandboxID}/refreshes", status_code=204, response_class=Response,
                 responses=errors(400, 401, 404))
    async def refresh(sandbox_id: SandboxID, team: Team, body: RefreshBody | None = None) -> Response:
        """Keep the sandbox alive for at least `duration` more seconds (default 15)."""
        await service.refresh(team, sandbox_id, body.duration if body else None)
        return Response(status_code=204)

    @router.get("/sandboxes/{sandboxID}/metrics", responses=errors(400, 401, 404, 500))
    async def get_metrics(sandbox_id: SandboxID, team: Team, start: int | None = None,
                          end: int | None = None) -> list[SandboxMetric]:
        """The sandbox's resource use now, from its cgroup (`start`/`end` are unix seconds)."""
        return await service.metrics(team, sandbox_id, start, end)

    @router.get("/sandboxes/{sandboxID}/logs", responses=errors(400, 401, 404, 500))
    async def get_logs(sandbox_id: SandboxID, team: Team,
                       start: Annotated[int | None, Query(description="unix milliseconds")] = None,
                       limit: Annotated[int, Query(ge=0, le=10000)] = 1000) -> SandboxLogs:
        """The sandbox's log, oldest first: its envd's output, notes on its create (a template pulled for it
        from the registry), and its egress connections as entries with fields (destination, domain, verdict,
        bytes). `start` keeps what came after it; `limit` keeps the newest."""
        return await service.logs(team, sandbox_id, start, limit)

    return router


def template_router(service: SandboxService) -> APIRouter:
    router = APIRouter(tags=["templates"])
    Team = Annotated[str, Depends(team_of_key(service.store))]  # noqa: N806 — a type alias, read as one

    @router.get("/templates", responses=errors(401))
    async def list_templates(team: Team) -> list[TemplateListing]:
        """The team's own built templates and the server's built-ins, oldest first; never another team's."""
        if service.templates is None or service.catalog is None:  # --backend none: nothing is usable
            return []
        visible = await asyncio.to_thread(service.catalog.visible_blocking, team)
        return [template_listing(info, owner is None or owner.public) for info, owner in visible]

    return router


def node_router(service: SandboxService) -> APIRouter:
    router = APIRouter(tags=["sandhive"])
    Caller = Annotated[StoreCaller, Depends(caller_of_key(service.store))]  # noqa: N806 — a type alias

    @router.get("/sandhive/node", responses=errors(401))
    async def node_status(caller: Caller) -> NodeStatus:
        """This server's host budget, what sandboxes reserve of it, and its warm pools (Sandhive's own route).
        A team sees the pools of its own templates and of the built-ins; an admin key sees every pool."""
        if service.node is None:
            return NodeStatus(backend="none", memoryBudgetMB=0, cpuBudget=0, reservedMemoryMB=0, reservedCpus=0,
                              pooledMemoryMB=0, pooledCpus=0, pools=[])
        status = service.node.status()
        shown = {p.template_id for p in status.pools}
        if not caller.admin and service.catalog is not None:
            visible = await asyncio.to_thread(service.catalog.visible_blocking, caller.team_id)
            shown &= {info.id for info, _ in visible}
        elif not caller.admin:
            shown = set()
        return NodeStatus(
            backend=status.backend, memoryBudgetMB=status.budget.memory_mb, cpuBudget=status.budget.cpus,
            reservedMemoryMB=status.reserved.memory_mb, reservedCpus=status.reserved.cpu_count,
            pooledMemoryMB=status.pooled.memory_mb, pooledCpus=status.pooled.cpu_count,
            pools=[WarmPool(templateID=p.template_id, backend=p.backend, cpuCount=p.cpu_count, memoryMB=p.memory_mb,
                            diskSizeMB=p.disk_mb, allow_internet_access=p.internet, ready=p.ready,
                            starting=p.starting, target=p.target, hits=p.hits, misses=p.misses, fillMs=p.fill_ms,
                            pinned=p.pinned)
                   for p in status.pools if p.template_id in shown],
            egressDeniedTotal=service.node.egress_log.denied_total if caller.admin else None,
            memoryOvercommit=status.budget.memory_overcommit, inUseMemoryMB=status.in_use_mb,
            sandboxes=status.sandboxes, maxSandboxes=status.budget.max_sandboxes, memoryPressure=status.pressure)

    return router


def health_router(service: SandboxService) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health")
    async def health() -> Health:
        """Liveness, the server's version and the sandbox backend it runs (no API key needed)."""
        runtime = service.node.runtime if service.node else None
        kept = runtime.persistence if runtime is not None else None
        persistence = Persistence(pauseModes=list(kept.pause_modes), memorySnapshots=kept.memory_snapshots) if kept \
            else Persistence()
        return Health(status="ok", version=__version__, backend=service.backend,
                      platform=getattr(runtime, "platform", None), accelerator=getattr(runtime, "accelerator", None),
                      persistence=persistence)

    return router
