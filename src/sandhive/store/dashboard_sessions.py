"""The store's dashboard-session queries (issue 18), mixed into `Store`.

A session is found by the sha256 of the cookie's id, and answers with the caller of its key only while that key
is live and the session was used within `idle`: so revoking a key, or leaving the dashboard alone, ends it, on
every replica at once. `seen_at` is written at most once a minute per session (a page load is not a write).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .models import ApiKey, DashboardSession

SEEN_RESOLUTION = timedelta(minutes=1)
MAX_PER_KEY = 100  # a key's oldest sessions go beyond this: logins in a loop cannot grow the table without bound


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class SessionView:
    """What a live session stands for: its key's team, whether the key is an admin's, its id, and the CSRF
    token pages echo."""

    team_id: str
    admin: bool
    key_id: str
    csrf: str


class DashboardSessionQueries:
    """Dashboard session rows, one short transaction each (see `Store`)."""

    _read: Callable[[], AbstractContextManager[Session]]  # provided by Store
    _write: Callable[[], AbstractContextManager[Session]]

    def open_dashboard_session(self, session_id: str, key_id: str, csrf: str, now: datetime) -> None:
        with self._write() as s:
            s.add(DashboardSession(id_hash=session_hash(session_id), key_id=key_id, csrf=csrf, created_at=now,
                                   seen_at=now))
            s.flush()
            keep = select(DashboardSession.id_hash).where(DashboardSession.key_id == key_id) \
                .order_by(DashboardSession.seen_at.desc()).limit(MAX_PER_KEY)
            s.execute(delete(DashboardSession).where(DashboardSession.key_id == key_id,
                                                     DashboardSession.id_hash.not_in(keep.scalar_subquery())))

    def dashboard_session(self, session_id: str, now: datetime, idle: timedelta) -> SessionView | None:
        """The session's view if it is live (its key too), else None."""
        digest = session_hash(session_id)
        with self._read() as s:
            row = s.execute(select(DashboardSession, ApiKey).join(ApiKey, ApiKey.id == DashboardSession.key_id)
                            .where(DashboardSession.id_hash == digest)).first()
        if row is None:
            return None
        session, key = row
        if key.revoked_at is not None or now - session.seen_at > idle:
            self.close_dashboard_session(session_id)
            return None
        if now - session.seen_at > SEEN_RESOLUTION:
            with self._write() as s:
                s.execute(update(DashboardSession).where(DashboardSession.id_hash == digest).values(seen_at=now))
        return SessionView(key.team_id, bool(key.admin), key.id, session.csrf)

    def close_dashboard_session(self, session_id: str) -> None:
        with self._write() as s:
            s.execute(delete(DashboardSession).where(DashboardSession.id_hash == session_hash(session_id)))

    def prune_dashboard_sessions(self, before: datetime) -> int:
        """Remove the sessions unused since `before`; how many."""
        with self._write() as s:
            result = s.execute(delete(DashboardSession).where(DashboardSession.seen_at < before))
            return int(getattr(result, "rowcount", 0) or 0)
