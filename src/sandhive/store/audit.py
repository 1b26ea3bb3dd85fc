"""The store's audit-log queries (issue 18), mixed into `Store`: batched inserts, team-scoped pages, pruning.

Pages are ordered by the event's id (the order events were recorded), oldest first. The page cursor is the
last id of the page in decimal: `sandhive audit --follow` asks for what came after the last event it saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, delete, insert, select
from sqlalchemy.orm import Session

from .models import AuditEvent


@dataclass(frozen=True)
class AuditEntry:
    """One event as recorded, before (and independent of) its row."""

    time: datetime
    team_id: str
    action: str
    key_id: str | None = None
    sandbox_id: str | None = None
    target: str | None = None
    detail: dict[str, Any] | None = field(default=None, compare=False)


class _Sessions(Protocol):
    def _read(self: _Sessions) -> AbstractContextManager[Session]: ...
    def _write(self: _Sessions) -> AbstractContextManager[Session]: ...


def decode_audit_cursor(cursor: str) -> int:
    """The id a page cursor stands for; ValueError when it is not one of ours."""
    if not cursor.isdecimal() or len(cursor) > 19:
        raise ValueError("not an audit cursor")
    return int(cursor)


class AuditQueries:
    """Audit rows, on the host class's `_read()`/`_write()` sessions (`Store`'s)."""

    def add_audit_events(self: _Sessions, entries: Sequence[AuditEntry]) -> None:
        """Insert `entries` in one statement, in their order (their ids follow it)."""
        if not entries:
            return
        rows = [{"time": e.time, "team_id": e.team_id, "key_id": e.key_id, "sandbox_id": e.sandbox_id,
                 "action": e.action, "target": e.target, "detail": e.detail} for e in entries]
        with self._write() as s:  # executemany: the rows are inserted in order, so their ids follow it
            s.execute(insert(AuditEvent), rows)

    def list_audit_events(self: _Sessions, team_id: str, *, sandbox_id: str | None = None,
                          action: str | None = None, since: datetime | None = None, limit: int = 100,
                          cursor: str | None = None) -> tuple[list[AuditEvent], str | None]:
        """A page of the team's events, oldest first, and the cursor of the next page (None: this is the last).
        ValueError for a cursor that is not ours."""
        query = select(AuditEvent).where(AuditEvent.team_id == team_id)
        if sandbox_id:
            query = query.where(AuditEvent.sandbox_id == sandbox_id)
        if action:
            if action.endswith("*"):  # a family: `process.*`
                query = query.where(AuditEvent.action.startswith(action[:-1], autoescape=True))
            else:
                query = query.where(AuditEvent.action == action)
        if since is not None:
            query = query.where(AuditEvent.time >= since)
        if cursor:
            query = query.where(AuditEvent.id > decode_audit_cursor(cursor))
        query = query.order_by(AuditEvent.id).limit(limit + 1)
        with self._read() as s:
            rows = list(s.scalars(query))
        if len(rows) > limit:
            return rows[:limit], str(rows[limit - 1].id)
        return rows, None

    def prune_audit_events(self: _Sessions, before: datetime) -> int:
        """Forget events older than `before` (the retention); how many went."""
        with self._write() as s:
            result = cast(CursorResult[Any], s.execute(delete(AuditEvent).where(AuditEvent.time < before)))
            return int(result.rowcount or 0)
