"""The store's queries that let any control-plane replica serve any template build (issue 17), mixed into `Store`.

- A build is *claimed* by the replica that starts it (`owner`, `heartbeat_at`): one conditional UPDATE, so two
  replicas asked to start the same build at once cannot both run it. The owner refreshes `heartbeat_at` while
  the build runs; a build whose owner went quiet for longer than the caller's cutoff is failed by whoever looks
  (`fail_orphaned_builds`), so a replica that restarts never fails the builds other live replicas are running.
- Log entries are rows `(build_id, seq)`, appended in batches by the owner, read by all.
- A template's aliases and tags, changed after its build, are columns of its `team_templates` row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .models import TemplateBuildLogEntry, TemplateBuildRecord, TemplateOwner

MAX_LOG_ENTRIES = 20_000  # per build, in the store: a build printing more keeps its first ones (and its status)


class BuildSharingQueries:
    """Build ownership, shared build logs and template names (see the module)."""

    _read: Callable[[], AbstractContextManager[Session]]  # provided by Store
    _write: Callable[[], AbstractContextManager[Session]]

    def claim_build(self, build_id: str, owner: str, now: datetime) -> bool:
        """Make `owner` the runner of a waiting, unclaimed build; False if it is started or claimed already."""
        with self._write() as s:
            result = s.execute(update(TemplateBuildRecord)
                               .where(TemplateBuildRecord.build_id == build_id,
                                      TemplateBuildRecord.status == "waiting",
                                      TemplateBuildRecord.owner.is_(None))
                               .values(owner=owner, heartbeat_at=now, updated_at=now))
            return bool(getattr(result, "rowcount", 0))

    def heartbeat_builds(self, owner: str, build_ids: Sequence[str], now: datetime) -> None:
        if not build_ids:
            return
        with self._write() as s:
            s.execute(update(TemplateBuildRecord)
                      .where(TemplateBuildRecord.owner == owner, TemplateBuildRecord.build_id.in_(list(build_ids)))
                      .values(heartbeat_at=now))

    def fail_orphaned_builds(self, before: datetime, message: str, now: datetime) -> list[str]:
        """Fail the claimed, unfinished builds whose owner has not refreshed them since `before`; their ids."""
        with self._write() as s:
            ids = list(s.scalars(select(TemplateBuildRecord.build_id).where(
                TemplateBuildRecord.status.in_(("waiting", "building")), TemplateBuildRecord.owner.is_not(None),
                TemplateBuildRecord.heartbeat_at < before)))
            if ids:
                s.execute(update(TemplateBuildRecord).where(TemplateBuildRecord.build_id.in_(ids),
                                                            TemplateBuildRecord.status.in_(("waiting", "building")))
                          .values(status="error", reason={"message": message}, updated_at=now, finished_at=now))
            return ids

    def append_build_log(self, build_id: str, first_seq: int, entries: Sequence[dict[str, Any]]) -> None:
        entries = entries[:max(0, MAX_LOG_ENTRIES - first_seq)]
        if not entries:
            return
        with self._write() as s:
            s.add_all(TemplateBuildLogEntry(build_id=build_id, seq=first_seq + i, entry=dict(e))
                      for i, e in enumerate(entries))

    def build_log(self, build_id: str) -> list[dict[str, Any]]:
        with self._read() as s:
            return [dict(e) for e in s.scalars(select(TemplateBuildLogEntry.entry)
                                               .where(TemplateBuildLogEntry.build_id == build_id)
                                               .order_by(TemplateBuildLogEntry.seq))]

    def forget_build_logs(self, before: datetime) -> int:
        """Drop the log rows of builds that finished before `before`; how many rows."""
        with self._write() as s:
            old = select(TemplateBuildRecord.build_id).where(TemplateBuildRecord.finished_at < before)
            result = s.execute(delete(TemplateBuildLogEntry).where(TemplateBuildLogEntry.build_id.in_(old)))
            return int(getattr(result, "rowcount", 0) or 0)

    def template_names(self, template_id: str) -> tuple[list[str] | None, list[str] | None] | None:
        """(aliases, tags) set after the template's build (None each: as its image says); None without a row."""
        with self._read() as s:
            row = s.execute(select(TemplateOwner.aliases, TemplateOwner.tags)
                            .where(TemplateOwner.template_id == template_id)).first()
        if row is None:
            return None
        return (list(row[0]) if row[0] is not None else None, list(row[1]) if row[1] is not None else None)

    def set_template_names(self, template_id: str, **values: list[str]) -> bool:
        """Set `aliases=` and/or `tags=` of an owned template; False if no team owns it."""
        with self._write() as s:
            result = s.execute(update(TemplateOwner).where(TemplateOwner.template_id == template_id)
                               .values(**{k: list(v) for k, v in values.items() if k in ("aliases", "tags")}))
            return bool(getattr(result, "rowcount", 0))
