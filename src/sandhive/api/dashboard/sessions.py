"""Dashboard sessions: a random id in a cookie, the API key and CSRF token kept server-side.

The browser never holds the key after login: the cookie carries only a random session id (HttpOnly, so page
scripts cannot read it; SameSite=Strict and Path=/dashboard, so no other site's request carries it). Each
session has its own CSRF token that every state-changing request must echo (form field or header); the
comparison is constant-time. Sessions live in memory: a restart logs everyone out, which is the safe default.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

COOKIE = "sandhive_dashboard"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
IDLE_SECONDS = 12 * 3600  # a session unused this long is forgotten
MAX_SESSIONS = 10_000  # the oldest go first beyond this (a flood of logins cannot grow memory without bound)


@dataclass
class Session:
    id: str
    key: str  # the API key: re-checked on every request, so a revoked key ends its sessions
    csrf: str
    seen: float = field(default_factory=time.monotonic)

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(sent.encode(), self.csrf.encode())  # type: ignore[union-attr]


class Sessions:
    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self._by_id: dict[str, Session] = {}
        self._idle = idle_seconds

    def open(self, key: str) -> Session:
        self._sweep()
        session = Session(secrets.token_urlsafe(32), key, secrets.token_urlsafe(32))
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        session = self._by_id.get(session_id or "")
        if session is None:
            return None
        now = time.monotonic()
        if now - session.seen > self._idle:
            self._by_id.pop(session.id, None)
            return None
        session.seen = now
        return session

    def close(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)

    def _sweep(self) -> None:
        now = time.monotonic()
        for sid in [s.id for s in self._by_id.values() if now - s.seen > self._idle]:
            del self._by_id[sid]
        while len(self._by_id) >= MAX_SESSIONS:
            del self._by_id[min(self._by_id.values(), key=lambda s: s.seen).id]
