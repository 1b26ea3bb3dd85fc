"""The dashboard's session, CSRF, origin and asset rules as pure functions (the browser tests drive them live)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.requests import HTTPConnection

from sandhive.api.dashboard import assets
from sandhive.api.dashboard.access import check_csrf, check_origin
from sandhive.api.dashboard.sessions import Sessions
from sandhive.errors import UserError
from sandhive.store import Caller, Store
from sandhive.store.models import DashboardSession


def conn(headers: dict[str, str]) -> HTTPConnection:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return HTTPConnection({"type": "http", "headers": raw, "path": "/", "query_string": b""})


def logged_in(tmp_path: Path, idle_seconds: float = 3600) -> tuple[Store, Sessions, Caller, str]:
    store = Store.open(tmp_path)
    store.migrate()
    key, _ = store.create_api_key("team-a")
    caller = store.caller(key)
    assert caller is not None
    return store, Sessions(store, idle_seconds=idle_seconds), caller, key


def test_sessions_are_random_shared_through_the_store_and_forgotten_after_logout_or_idleness(tmp_path: Path) -> None:
    store, sessions, caller, _ = logged_in(tmp_path)

    async def scenario() -> None:
        a, b = await sessions.open(caller), await sessions.open(caller)
        assert a.id != b.id and a.csrf != b.csrf and len(a.id) >= 40
        other_replica = Sessions(store, idle_seconds=3600)  # another process on the same database
        assert await other_replica.get(a.id) == a
        assert await sessions.get("nope") is None and await sessions.get(None) is None
        await sessions.close(a.id)
        assert await other_replica.get(a.id) is None and await sessions.get(b.id) == b
        idle = Sessions(store, idle_seconds=-1)
        assert await idle.get(b.id) is None

    asyncio.run(scenario())
    with store._read() as s:  # the database holds neither the cookie's id nor the key
        rows = s.scalars(select(DashboardSession)).all()
    assert all(len(r.id_hash) == 64 for r in rows)


def test_revoking_the_key_ends_its_sessions(tmp_path: Path) -> None:
    store, sessions, caller, key = logged_in(tmp_path)

    async def scenario() -> None:
        session = await sessions.open(caller)
        store.revoke_api_key(key)
        assert await sessions.get(session.id) is None

    asyncio.run(scenario())


def test_csrf_needs_the_sessions_own_token(tmp_path: Path) -> None:
    _, sessions, caller, _ = logged_in(tmp_path)
    mine, other = asyncio.run(sessions.open(caller)), asyncio.run(sessions.open(caller))
    check_csrf(mine, mine.csrf)
    for sent in (None, "", other.csrf, mine.csrf[:-1]):
        with pytest.raises(UserError) as refused:
            check_csrf(mine, sent)
        assert refused.value.status == 403


def test_origin_must_be_this_host() -> None:
    check_origin(conn({"host": "127.0.0.1:3000", "origin": "http://127.0.0.1:3000"}))
    check_origin(conn({"host": "127.0.0.1:3000"}))  # no Origin: the CSRF token still decides
    for headers in ({"host": "127.0.0.1:3000", "origin": "http://evil.example"},
                    {"host": "127.0.0.1:3000", "origin": "null"}):
        with pytest.raises(UserError):
            check_origin(conn(headers))
    with pytest.raises(UserError):
        check_origin(conn({"host": "127.0.0.1:3000"}), required=True)  # the terminal's socket


def test_assets_are_a_fixed_list_of_names() -> None:
    for name in ("../routes.py", "..%2Froutes.py", "/etc/passwd", "node_modules/htmx.org/package.json"):
        assert assets.asset(name).status_code == 404
    assert set(assets.FILES) >= {"htmx.min.js", "xterm.js", "uPlot.iife.min.js", "dashboard.js"}
