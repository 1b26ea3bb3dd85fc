"""The store's queries about volumes, mixed into `Store` (kept apart so the volume feature reads in one place).

A volume is in use while a live sandbox (running or paused) has a mount row for it; rows of killed sandboxes
are history and count for nothing, so a sandbox's end needs no extra write to free its volumes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import cast

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .models import SandboxRecord, VolumeMountRecord, VolumeRecord

LIVE_STATES = ("running", "paused")


class VolumeNameTaken(Exception):
    """The team already has a volume of this name."""


class VolumeQueries:
    """Volume rows, one short transaction each (see `Store`)."""

    _read: Callable[[], AbstractContextManager[Session]]  # provided by Store
    _write: Callable[[], AbstractContextManager[Session]]

    def add_volume(self, record: VolumeRecord) -> None:
        """Raises `VolumeNameTaken` when the team has a volume of that name already."""
        try:
            with self._write() as s:
                s.add(record)
        except IntegrityError:
            raise VolumeNameTaken(record.name) from None

    def get_volume(self, volume_id: str) -> VolumeRecord | None:
        with self._read() as s:
            return s.get(VolumeRecord, volume_id)

    def team_volume(self, team_id: str, name: str) -> VolumeRecord | None:
        with self._read() as s:
            return s.scalar(select(VolumeRecord).where(VolumeRecord.team_id == team_id, VolumeRecord.name == name))

    def team_volumes(self, team_id: str) -> list[VolumeRecord]:
        with self._read() as s:
            return list(s.scalars(select(VolumeRecord).where(VolumeRecord.team_id == team_id)
                                  .order_by(VolumeRecord.created_at, VolumeRecord.volume_id)))

    def team_volume_mb(self, team_id: str) -> int:
        with self._read() as s:
            return int(s.scalar(select(func.coalesce(func.sum(VolumeRecord.size_mb), 0))
                                .where(VolumeRecord.team_id == team_id)) or 0)

    def volume_users(self, volume_id: str) -> list[str]:
        """Ids of the live sandboxes that mount the volume."""
        with self._read() as s:
            return list(s.scalars(select(VolumeMountRecord.sandbox_id)
                                  .join(SandboxRecord, SandboxRecord.sandbox_id == VolumeMountRecord.sandbox_id)
                                  .where(VolumeMountRecord.volume_id == volume_id,
                                         SandboxRecord.state.in_(LIVE_STATES))))

    def add_volume_mounts(self, sandbox_id: str, mounts: Sequence[tuple[str, str]]) -> None:
        """Record that `sandbox_id` mounts each (volume_id, path)."""
        with self._write() as s:
            for volume_id, path in mounts:
                s.add(VolumeMountRecord(sandbox_id=sandbox_id, volume_id=volume_id, path=path))

    def sandbox_volume_mounts(self, sandbox_id: str) -> list[VolumeMountRecord]:
        """What a sandbox mounts (for a resume or restore, which must mount the same again)."""
        with self._read() as s:
            return list(s.scalars(select(VolumeMountRecord).where(VolumeMountRecord.sandbox_id == sandbox_id)))

    def delete_volume(self, volume_id: str) -> bool:
        """Forget the volume and its mount history; False if it was not there."""
        with self._write() as s:
            s.execute(delete(VolumeMountRecord).where(VolumeMountRecord.volume_id == volume_id))
            result = s.execute(delete(VolumeRecord).where(VolumeRecord.volume_id == volume_id))
            return cast(CursorResult, result).rowcount > 0
