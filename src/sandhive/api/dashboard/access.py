"""Who is looking at the dashboard: the session behind the cookie, its key re-checked through the API's own
`authenticate` (so a revoked key ends its sessions at once), and the CSRF check of state changes."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from ...errors import UserError
from ...store import Caller, Store
from ..auth import authenticate
from .sessions import COOKIE, CSRF_FIELD, CSRF_HEADER, Session, Sessions


class LoginRequired(Exception):
    """No live session: pages redirect to the login form, htmx fragments ask htmx to (HX-Redirect)."""


@dataclass(frozen=True)
class Viewer:
    session: Session
    caller: Caller

    @property
    def team(self) -> str:
        return self.caller.team_id

    @property
    def admin(self) -> bool:
        return self.caller.admin


async def viewer(conn: HTTPConnection, sessions: Sessions, store: Store) -> Viewer:
    session = sessions.get(conn.cookies.get(COOKIE))
    if session is None:
        raise LoginRequired
    try:
        caller = await authenticate(store, session.key)
    except UserError:  # the key was revoked since the login
        sessions.close(session.id)
        raise LoginRequired from None
    return Viewer(session, caller)


def check_csrf(session: Session, sent: str | None) -> None:
    """403 unless `sent` is this session's CSRF token."""
    if not session.csrf_ok(sent):
        raise UserError(403, "Missing or wrong CSRF token: reload the page and try again")


async def changing(conn: HTTPConnection, sessions: Sessions, store: Store, form_token: str | None = None) -> Viewer:
    """The viewer of a state-changing request, after its CSRF token (header, or form field) is checked."""
    seen = await viewer(conn, sessions, store)
    check_csrf(seen.session, conn.headers.get(CSRF_HEADER) or form_token)
    return seen


__all__ = ["CSRF_FIELD", "LoginRequired", "Viewer", "changing", "check_csrf", "viewer"]
