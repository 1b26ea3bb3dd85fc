"""Who is looking at the dashboard: the session behind the cookie, whose key the store re-checks on every request
(so a revoked key ends its sessions at once), and the CSRF check of state changes."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import FormData
from starlette.requests import HTTPConnection, Request

from ...errors import UserError
from ...store import Caller
from ..audit import CURRENT_KEY
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


async def viewer(conn: HTTPConnection, sessions: Sessions) -> Viewer:
    session = await sessions.get(conn.cookies.get(COOKIE))
    if session is None:  # none, idle too long, or its key was revoked since the login
        raise LoginRequired
    CURRENT_KEY.set(session.caller.key_id)  # the audit log names the dashboard's actions by the key's id
    return Viewer(session, session.caller)


def check_csrf(session: Session, sent: str | None) -> None:
    """403 unless `sent` is this session's CSRF token."""
    if not session.csrf_ok(sent):
        raise UserError(403, "Missing or wrong CSRF token: reload the page and try again")


def check_origin(conn: HTTPConnection, required: bool = False) -> None:
    """403 when the request says it comes from a page of another origin (or from an opaque `null` one).
    Browsers send `Origin` on every POST and WebSocket handshake; `required`: its absence is refused too."""
    origin = conn.headers.get("origin")
    if origin is None and not required:
        return
    if origin is None or urlsplit(origin).netloc != conn.headers.get("host"):
        raise UserError(403, "Cross-origin request refused")


async def changing(conn: HTTPConnection, sessions: Sessions, form_token: str | None = None) -> Viewer:
    """The viewer of a state-changing request, after its origin and CSRF token (header, or form field) are
    checked."""
    check_origin(conn)
    seen = await viewer(conn, sessions)
    check_csrf(seen.session, conn.headers.get(CSRF_HEADER) or form_token)
    return seen


async def posted_form(request: Request, sessions: Sessions, max_bytes: int = 2**20) -> tuple[Viewer, FormData]:
    """A state-changing form post: its sender is logged in and same-origin before the body is parsed, the body
    is at most `max_bytes` (as declared), and the form's (or header's) CSRF token is the session's."""
    check_origin(request)
    await viewer(request, sessions)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise UserError(413, f"The form is larger than {max_bytes // 2**20} MiB")
    form = await request.form(max_part_size=max_bytes)
    sent = form.get(CSRF_FIELD)
    return await changing(request, sessions, sent if isinstance(sent, str) else None), form


__all__ = ["CSRF_FIELD", "LoginRequired", "Viewer", "changing", "check_csrf", "check_origin", "posted_form", "viewer"]
