"""E2B's pause routes (issue 14): `POST /sandboxes/{id}/pause` and the deprecated `POST /sandboxes/{id}/resume`.
Resuming through `connect` lives with the other sandbox routes (routes.py). The rules are in pause.py.

No `from __future__ import annotations` here: FastAPI reads the parameter annotations at runtime.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from ..errors import UserError
from .auth import team_of_key
from .routes import SandboxID, errors
from .sandboxes import SandboxService
from .schemas import PauseBody, ResumeBody, Sandbox


def pause_router(service: SandboxService) -> APIRouter:
    router = APIRouter(tags=["sandboxes"])
    Team = Annotated[str, Depends(team_of_key(service.store))]  # noqa: N806 — a type alias, read as one

    @router.post("/sandboxes/{sandboxID}/pause", status_code=204, response_class=Response,
                 responses=errors(400, 401, 404, 409, 429, 500, 503))
    async def pause_sandbox(sandbox_id: SandboxID, team: Team, body: PauseBody | None = None) -> Response:
        """Pause a sandbox: with its memory (default, `memory: true`) or its files alone (`memory: false`).
        409 when it is paused already; `connect` resumes it."""
        await service.pauses.pause(team, sandbox_id, body.memory if body else None)
        return Response(status_code=204)

    @router.post("/sandboxes/{sandboxID}/resume", status_code=201, responses=errors(400, 401, 404, 409, 429, 503),
                 deprecated=True)
    async def resume_sandbox(sandbox_id: SandboxID, team: Team, body: ResumeBody | None = None) -> Sandbox:
        """Resume a paused sandbox (deprecated: use `connect`, which also answers for a running one).
        409 when it is not paused."""
        record = await service._owned(team, sandbox_id)
        if record.state != "paused":
            raise UserError(409, f"Sandbox {sandbox_id} is not paused", "sandbox_not_paused")
        timeout = body.timeout if body and body.timeout is not None else service.settings.default_timeout_seconds
        service.lifetime.check_timeout(timeout)
        await service.pauses.resume(team, sandbox_id, timeout)
        return service.view(await service._owned(team, sandbox_id))

    return router
