"""`X-API-Key` authentication: the key names a team, and a team sees only its own sandboxes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import Security
from fastapi.security import APIKeyHeader

from ..store import Caller, Store
from .errors import ApiError

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="An API key from `sandhive keys create` (E2B_API_KEY for the e2b SDK)")


def team_of_key(store: Store) -> Callable[..., Awaitable[str]]:
    """A FastAPI dependency answering the caller's team id, or 401 in E2B's error shape."""

    async def current_team(key: str | None = Security(api_key_header)) -> str:
        if not key:
            raise ApiError(401, "Missing API key: send it in the X-API-Key header")
        team_id = await asyncio.to_thread(store.authenticate, key)
        if team_id is None:
            raise ApiError(401, "Invalid API key")
        return team_id

    return current_team


def caller_of_key(store: Store) -> Callable[..., Awaitable[Caller]]:
    """Like `team_of_key`, but also says whether the key is an operator's (`sandhive keys create --admin`)."""

    async def current_caller(key: str | None = Security(api_key_header)) -> Caller:
        if not key:
            raise ApiError(401, "Missing API key: send it in the X-API-Key header")
        caller = await asyncio.to_thread(store.caller, key)
        if caller is None:
            raise ApiError(401, "Invalid API key")
        return caller

    return current_caller
