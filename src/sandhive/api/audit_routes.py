"""`GET /sandhive/audit` (issue 18): the calling team's audit log, a page at a time, oldest first.

Another team's events never appear: the query is always scoped to the key's team, whatever the filters say.
The queue of not yet written events is flushed first, so an action the caller just made is already there.

No `from __future__ import annotations` here: FastAPI reads the parameter annotations at runtime.
"""

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel

from ..errors import UserError
from .auth import team_of_key
from .routes import NEXT_TOKEN_HEADER, errors
from .sandboxes import SandboxService


class AuditEventView(BaseModel):
    """One recorded action. `keyID` is the id of the API key that made it (`sandhive keys list` shows keys by
    prefix); it is null for what the server did by itself (a timeout) and for envd actions in a sandbox."""

    id: int
    time: datetime
    action: str
    keyID: str | None = None  # noqa: N815 — E2B-style camelCase on the wire
    sandboxID: str | None = None  # noqa: N815
    target: str | None = None
    detail: dict[str, Any] | None = None


def audit_router(service: SandboxService) -> APIRouter:
    router = APIRouter(tags=["sandhive"])
    Team = Annotated[str, Depends(team_of_key(service.store))]  # noqa: N806 — a type alias, read as one

    @router.get("/sandhive/audit", responses={200: {"headers": NEXT_TOKEN_HEADER}, **errors(400, 401)})
    async def list_audit(
        response: Response, team: Team,
        sandbox_id: Annotated[str | None, Query(alias="sandboxID", max_length=64)] = None,
        action: Annotated[str | None, Query(max_length=64, description="an action (`process.end`), or a family "
                                                                        "(`process.*`)")] = None,
        since: Annotated[datetime | None, Query(description="RFC 3339 time or unix seconds")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        next_token: Annotated[str | None, Query(alias="nextToken", max_length=32)] = None,
    ) -> list[AuditEventView]:
        """The team's audit log, oldest first: API actions, and commands, PTY sessions and file changes made in
        its sandboxes through envd. The next page's cursor is in `X-Next-Token`."""
        await service.audit.flush()
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        try:
            rows, token = await asyncio.to_thread(service.store.list_audit_events, team, sandbox_id=sandbox_id,
                                                  action=action, since=since, limit=limit, cursor=next_token)
        except ValueError as exc:
            raise UserError(400, f"Invalid nextToken: {exc}") from exc
        if token:
            response.headers["X-Next-Token"] = token
        return [AuditEventView(id=r.id, time=r.time, action=r.action, keyID=r.key_id, sandboxID=r.sandbox_id,
                               target=r.target, detail=r.detail) for r in rows]

    return router
