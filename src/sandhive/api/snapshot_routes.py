"""E2B's snapshot and fork routes (issue 14): thin HTTP wrappers over `SnapshotService`.

`DELETE /templates/<snapshot>` is served by the template routes (a snapshot is a template in E2B), which ask
`SnapshotService.delete` first; a named snapshot's id holds a `/` (`team-slug/name:default`, sent
percent-encoded), which no `/templates/{templateID}` route matches, so that form has a route here.

No `from __future__ import annotations` here: FastAPI reads the parameter annotations at runtime.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from .auth import team_of_key
from .routes import NEXT_TOKEN_HEADER, SandboxID, errors
from .snapshot_schemas import ForkRequest, ForkResult, SnapshotInfo, SnapshotRequest
from .snapshots import SnapshotService


def snapshot_router(service: SnapshotService, delete_template: Callable[[str, str], Awaitable[None]]) -> APIRouter:
    """`delete_template(team, ref)`: the template service's delete, for a `team-slug/name` that is no snapshot."""
    router = APIRouter(tags=["snapshots"])
    Team = Annotated[str, Depends(team_of_key(service.store))]  # noqa: N806 — a type alias, read as one

    @router.post("/sandboxes/{sandboxID}/snapshots", status_code=201,
                 responses=errors(400, 401, 404, 409, 429, 500))
    async def create_snapshot(sandbox_id: SandboxID, team: Team, body: SnapshotRequest | None = None) -> SnapshotInfo:
        """Snapshot a running sandbox's memory and files; it keeps running (same id, address and end time).
        Start sandboxes from it with `POST /sandboxes {templateID: snapshotID}`."""
        body = body or SnapshotRequest()
        return await service.create(team, sandbox_id, body.name, body.memory)

    @router.get("/snapshots", responses={200: {"headers": NEXT_TOKEN_HEADER}, **errors(400, 401)})
    async def list_snapshots(
        response: Response, team: Team,
        sandbox_id: Annotated[str | None, Query(alias="sandboxID", description="snapshots of this sandbox")] = None,
        name: Annotated[str | None, Query(description="only the snapshot of this name")] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 100,
        next_token: Annotated[str | None, Query(alias="nextToken")] = None,
    ) -> list[SnapshotInfo]:
        """The team's snapshots, newest first, a page at a time; the next page's cursor is in `X-Next-Token`."""
        items, token = await service.list_page(team, sandbox_id, name, limit, next_token)
        if token:
            response.headers["X-Next-Token"] = token
        return items

    @router.post("/sandboxes/{sandboxID}/fork", status_code=201, response_model_exclude_none=True,
                 responses=errors(400, 401, 404, 409, 500))
    async def fork_sandbox(sandbox_id: SandboxID, team: Team, body: ForkRequest | None = None) -> list[ForkResult]:
        """`count` (1–100) new sandboxes from one snapshot of this one, which keeps running with its id and end
        time. One entry per fork: the sandbox, or the error that kept it from starting."""
        body = body or ForkRequest()
        return await service.fork(team, sandbox_id, body.timeout, body.count)

    @router.delete("/templates/{snapshotID:path}", status_code=204, response_class=Response,
                   responses=errors(401, 404), include_in_schema=False)
    async def delete_named_snapshot(snapshot_id: Annotated[str, Path(alias="snapshotID")], team: Team) -> Response:
        if not await service.delete(team, snapshot_id):
            await delete_template(team, snapshot_id)
        return Response(status_code=204)

    return router
