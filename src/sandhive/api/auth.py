"""`X-API-Key` authentication: the key names a team, and a team sees only its own sandboxes.

`authenticate` is the one place a key is checked. The request guard (api/request_guard.py) calls it from the
headers alone, before any body byte is read, and leaves the caller in the request's state; the route dependencies
`team_of_key` and `caller_of_key` then reuse that answer instead of asking the database twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from ..errors import UserError
from ..store import Caller, Store
from .audit import CURRENT_KEY

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="An API key from `sandhive keys create` (E2B_API_KEY for the e2b SDK)")
TEAM_STATE = "sandhive_caller"  # where the guard leaves (key, Caller) in `scope["state"]`


async def authenticate(store: Store, key: str | None) -> Caller:
    """The caller behind `key` (team, admin or not), or 401 in E2B's error shape (the store's lookup runs in a
    thread: it hits the DB)."""
    if not key:
        raise UserError(401, "Missing API key: send it in the X-API-Key header")
    caller = await asyncio.to_thread(store.caller, key)
    if caller is None:
        raise UserError(401, "Invalid API key")
    CURRENT_KEY.set(caller.key_id)  # the audit log names this request's actions by the key's id
    return caller


async def _checked_caller(store: Store, request: Request, key: str | None) -> Caller:
    """The guard's answer for this request if it checked this key, else a fresh check."""
    checked: Any = request.scope.get("state", {}).get(TEAM_STATE)
    if checked is not None and checked[0] == key:
        caller = cast(Caller, checked[1])
    else:
        caller = await authenticate(store, key)
    CURRENT_KEY.set(caller.key_id)  # the audit log names this request's actions by the key's id
    return caller


def team_of_key(store: Store) -> Callable[..., Awaitable[str]]:
    """A FastAPI dependency answering the caller's team id, or 401 in E2B's error shape."""

    async def current_team(request: Request, key: str | None = Security(api_key_header)) -> str:
        return (await _checked_caller(store, request, key)).team_id

    # A marker attribute on the function (mypy allows none on a def): what the request guard looks for.
    current_team.requires_api_key = True  # type: ignore[attr-defined]
    return current_team


def caller_of_key(store: Store) -> Callable[..., Awaitable[Caller]]:
    """Like `team_of_key`, but also says whether the key is an operator's (`sandhive keys create --admin`)."""

    async def current_caller(request: Request, key: str | None = Security(api_key_header)) -> Caller:
        return await _checked_caller(store, request, key)

    current_caller.requires_api_key = True  # type: ignore[attr-defined]  # a marker, as above
    return current_caller
