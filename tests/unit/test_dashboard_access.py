"""The dashboard's session, CSRF, origin and asset rules as pure functions (the browser tests drive them live)."""

from __future__ import annotations

import pytest
from starlette.requests import HTTPConnection

from sandhive.api.dashboard import assets
from sandhive.api.dashboard.access import check_csrf, check_origin
from sandhive.api.dashboard.sessions import Sessions
from sandhive.errors import UserError


def conn(headers: dict[str, str]) -> HTTPConnection:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return HTTPConnection({"type": "http", "headers": raw, "path": "/", "query_string": b""})


def test_sessions_are_random_and_forgotten_after_logout_or_idleness() -> None:
    sessions = Sessions(idle_seconds=3600)
    a, b = sessions.open("key-a"), sessions.open("key-a")
    assert a.id != b.id and a.csrf != b.csrf and len(a.id) >= 40
    assert sessions.get(a.id) is a and sessions.get("nope") is None and sessions.get(None) is None
    sessions.close(a.id)
    assert sessions.get(a.id) is None
    idle = Sessions(idle_seconds=-1)
    assert idle.get(idle.open("k").id) is None


def test_csrf_needs_the_sessions_own_token() -> None:
    sessions = Sessions()
    mine, other = sessions.open("k"), sessions.open("k")
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
