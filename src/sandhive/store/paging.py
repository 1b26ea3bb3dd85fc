"""List paging: opaque cursors over (started_at, sandbox_id), and the filter a list call asks for."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime

from .models import SandboxRecord


@dataclass(frozen=True)
class SandboxQuery:
    """What `GET /v2/sandboxes` asks for; states default to every listable state (not killed)."""

    states: tuple[str, ...] = ("running", "paused")
    metadata: dict[str, str] = field(default_factory=dict)
    template: str | None = None
    started_after: datetime | None = None
    order: str = "desc"  # by start time; asc | desc
    limit: int = 100
    cursor: str | None = None

    def matches_metadata(self, record: SandboxRecord) -> bool:
        meta = record.meta or {}
        return all(meta.get(k) == v for k, v in self.metadata.items())


def encode_cursor(record: SandboxRecord) -> str:
    """A cursor positioned after `record`: it is opaque to clients and survives nothing but decode_cursor."""
    raw = json.dumps([record.started_at.isoformat(), record.sandbox_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[datetime, str]:
    """(started_at, sandbox_id) of the last row of the previous page; ValueError if the token is not ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        started, sandbox_id = json.loads(raw)
        when = datetime.fromisoformat(started)
    except Exception as exc:  # any garbage a client sends is just "invalid"
        raise ValueError("invalid next token") from exc
    if when.tzinfo is None or not isinstance(sandbox_id, str):
        raise ValueError("invalid next token")
    return when, sandbox_id
