"""Dashboard sessions: a random id in a cookie; the key's id and the CSRF token kept server-side, in the store.

The browser never holds the key after login: the cookie carries only a random session id (HttpOnly, so page
scripts cannot read it; SameSite=Strict and Path=/dashboard, so no other site's request carries it). Each
session has its own CSRF token that every state-changing request must echo (form field or header); the
comparison is constant-time. Sessions live in the store (store/dashboard_sessions.py), not in this process, so
every control-plane replica behind a load balancer knows them and a restart logs nobody out; the store keeps the
session id's hash and the key's id, never the key, and a revoked key ends its sessions on every replica at once.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from ...store import Caller, Store
from ...store.store import now_utc

COOKIE = "sandhive_dashboard"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
IDLE_SECONDS = 12 * 3600  # a session unused this long is forgotten


@dataclass(frozen=True)
class Session:
    id: str
    caller: Caller  # the team of the key the session was opened with (re-read from the store on every request)
    csrf: str

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(sent.encode(), self.csrf.encode())  # type: ignore[union-attr]


class Sessions:
    def __init__(self, store: Store, idle_seconds: float = IDLE_SECONDS) -> None:
        self.store = store
        self.idle = timedelta(seconds=idle_seconds)

    async def open(self, caller: Caller) -> Session:
        """A new session of the caller's key (already authenticated by the login)."""
        assert caller.key_id is not None
        await self.prune()  # logins are rare: the moment to forget the sessions nobody came back to
        session = Session(secrets.token_urlsafe(32), caller, secrets.token_urlsafe(32))
        await asyncio.to_thread(self.store.open_dashboard_session, session.id, caller.key_id, session.csrf,
                                now_utc())
        return session

    async def get(self, session_id: str | None) -> Session | None:
        """The live session behind a cookie, or None (unknown, idle too long, or its key revoked)."""
        if not session_id or len(session_id) > 128:
            return None
        view = await asyncio.to_thread(self.store.dashboard_session, session_id, now_utc(), self.idle)
        if view is None:
            return None
        return Session(session_id, Caller(view.team_id, view.admin, view.key_id), view.csrf)

    async def close(self, session_id: str) -> None:
        await asyncio.to_thread(self.store.close_dashboard_session, session_id)

    async def prune(self) -> int:
        """Forget sessions idle for longer than the limit."""
        return await asyncio.to_thread(self.store.prune_dashboard_sessions, now_utc() - self.idle)
