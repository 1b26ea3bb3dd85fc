"""`X-API-Key` authentication: the key names a team, and a team sees only its own sandboxes.

`authenticate` is the one place a key is checked. The request guard (api/request_guard.py) calls it from the
headers alone, before any body byte is read, and leaves the team in the request's state; the route dependency
`team_of_key` then reuses that answer instead of asking the database twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from ..store import Store
from .errors import ApiError

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="An API key from `sandhive keys create` (E2B_API_KEY for the e2b SDK)")
TEAM_STATE = "sandhive_team"  # where the guard leaves the authenticated team in `scope["state"]`


async def authenticate(store: Store, key: str | None) -> str:
    """The team id of `key`, or 401 in E2B's error shape (the store's lookup runs in a thread: it hits the DB)."""
    if not key:
        raise ApiError(401, "Missing API key: send it in the X-API-Key header")
    team_id = await asyncio.to_thread(store.authenticate, key)
    if team_id is None:
        raise ApiError(401, "Invalid API key")
    return team_id


def team_of_key(store: Store) -> Callable[..., Awaitable[str]]:
    """A FastAPI dependency answering the caller's team id, or 401 in E2B's error shape."""

    async def current_team(request: Request, key: str | None = Security(api_key_header)) -> str:
        checked: Any = request.scope.get("state", {}).get(TEAM_STATE)
        if checked is not None and checked[0] == key:
            return checked[1]
        return await authenticate(store, key)

    current_team.requires_api_key = True  # type: ignore[attr-defined]  # what the request guard looks for
    return current_team
