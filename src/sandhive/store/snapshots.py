"""The store's snapshot queries (issue 14), mixed into `Store`: every query one short transaction.

Pages are ordered by (created_at, snapshot_id), newest first, with the same opaque cursor format as the
sandbox list (`paging.decode_cursor`).
"""

from __future__ import annotations

import base64
import json
from contextlib import AbstractContextManager
from typing import Protocol

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from .models import SnapshotRecord
from .paging import decode_cursor


def snapshot_cursor(record: SnapshotRecord) -> str:
    raw = json.dumps([record.created_at.isoformat(), record.snapshot_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class _Sessions(Protocol):
    def _read(self: _Sessions) -> AbstractContextManager[Session]: ...
    def _write(self: _Sessions) -> AbstractContextManager[Session]: ...


class SnapshotQueries:
    """Snapshot rows, on the host class's `_read()`/`_write()` sessions (`Store`'s)."""

    def add_snapshot(self: _Sessions, record: SnapshotRecord, replace_name: bool = True) -> str | None:
        """Record a snapshot. A name the team already gave another snapshot moves to this one (E2B: a snapshot
        with an existing name is a new build of that template); the directory of the snapshot it replaced is
        returned for the caller to delete, the row itself is gone."""
        with self._write() as s:
            replaced = None
            if record.name is not None and replace_name:
                old = s.scalars(select(SnapshotRecord).where(SnapshotRecord.team_id == record.team_id,
                                                             SnapshotRecord.name == record.name)).first()
                if old is not None:
                    replaced = old.directory
                    s.delete(old)
                    s.flush()
            s.add(record)
            return replaced

    def get_snapshot(self: _Sessions, snapshot_id: str) -> SnapshotRecord | None:
        with self._read() as s:
            return s.get(SnapshotRecord, snapshot_id)

    def team_snapshot_by_name(self: _Sessions, team_id: str, name: str) -> SnapshotRecord | None:
        with self._read() as s:
            return s.scalars(select(SnapshotRecord).where(SnapshotRecord.team_id == team_id,
                                                          SnapshotRecord.name == name)).first()

    def delete_snapshot(self: _Sessions, snapshot_id: str) -> SnapshotRecord | None:
        """Forget a snapshot; the row as it was (None if it was already gone)."""
        with self._write() as s:
            record = s.get(SnapshotRecord, snapshot_id)
            if record is not None:
                s.delete(record)
            return record

    def rename_snapshot(self: _Sessions, snapshot_id: str, name: str | None) -> None:
        with self._write() as s:
            s.execute(update(SnapshotRecord).where(SnapshotRecord.snapshot_id == snapshot_id).values(name=name))

    def team_snapshot_bytes(self: _Sessions, team_id: str) -> int:
        with self._read() as s:
            return int(s.scalar(select(func.coalesce(func.sum(SnapshotRecord.bytes), 0))
                                .where(SnapshotRecord.team_id == team_id)) or 0)

    def snapshots_of_template(self: _Sessions, template_id: str) -> int:
        with self._read() as s:
            return int(s.scalar(select(func.count()).select_from(SnapshotRecord)
                                .where(SnapshotRecord.template_id == template_id)) or 0)

    def snapshot_directories(self: _Sessions) -> set[str]:
        with self._read() as s:
            return set(s.scalars(select(SnapshotRecord.directory)))

    def list_snapshots(self: _Sessions, team_id: str, *, sandbox_id: str | None = None, name: str | None = None,
                       limit: int = 100, cursor: str | None = None) -> tuple[list[SnapshotRecord], str | None]:
        """A page of the team's snapshots, newest first; the cursor of the next page or None.
        ValueError for a cursor that is not ours."""
        query = select(SnapshotRecord).where(SnapshotRecord.team_id == team_id)
        if sandbox_id:
            query = query.where(SnapshotRecord.source_sandbox_id == sandbox_id)
        if name:
            query = query.where(SnapshotRecord.name == name)
        if cursor:
            when, last_id = decode_cursor(cursor)
            query = query.where(or_(SnapshotRecord.created_at < when,
                                    and_(SnapshotRecord.created_at == when, SnapshotRecord.snapshot_id < last_id)))
        query = query.order_by(SnapshotRecord.created_at.desc(), SnapshotRecord.snapshot_id.desc()).limit(limit + 1)
        with self._read() as s:
            rows = list(s.scalars(query))
        if len(rows) > limit:
            return rows[:limit], snapshot_cursor(rows[limit - 1])
        return rows, None
