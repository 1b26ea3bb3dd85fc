"""The control plane's tables: teams, their API keys, sandboxes, idempotency records, and template builds.

Times are stored as naive UTC and handed back timezone-aware (`UTCDateTime`), so SQLite and PostgreSQL
compare and order them the same way and callers never see a naive datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always UTC: stored without a zone, returned with `UTC`."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Team(Base):
    """Who owns sandboxes: every API key belongs to one team and sees only that team's sandboxes."""

    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # the team's namespace in template names (`slug/name`, as E2B's `team-slug/name`): derived from the name
    slug: Mapped[str | None] = mapped_column(String(64), unique=True, index=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiKey(Base):
    """An API key, kept only as its sha256 (keys are random, so no salt is needed) plus a prefix to show."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(32), index=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # an operator's key: sees the whole node (every team's pools), not just its own team's share
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class SandboxRecord(Base):
    """One sandbox, from create to kill; `backend`/`address`/`runtime_state` let a restarted server adopt it."""

    __tablename__ = "sandboxes"
    __table_args__ = (
        Index("ix_sandboxes_team_state_started", "team_id", "state", "started_at"),
        Index("ix_sandboxes_state_end", "state", "end_at"),
    )

    sandbox_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"))
    template_id: Mapped[str] = mapped_column(String(255))
    alias: Mapped[str | None] = mapped_column(String(255), nullable=True)
    client_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # running | paused | killed
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    end_at: Mapped[datetime] = mapped_column(UTCDateTime())
    meta: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    env_vars: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    cpu_count: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(Integer)
    envd_version: Mapped[str] = mapped_column(String(32))
    envd_access_token: Mapped[str] = mapped_column(String(128))
    allow_internet_access: Mapped[bool] = mapped_column(Boolean, default=True)
    backend: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(255))
    runtime_state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    killed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # ---- pause (issue 14, revision 0004) ----
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # while paused: {"directory", "mode", "backend", "state"} of the node's `SavedSandbox`
    saved: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    auto_pause: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # on timeout: pause
    auto_pause_memory: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    auto_resume: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # ---- private ports (issue 16, revision 0007) ----
    network: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # the honoured SandboxNetworkConfig
    traffic_access_token: Mapped[str | None] = mapped_column(String(128), nullable=True)  # set: ports are private


class IdempotencyRecord(Base):
    """A create request seen under an `Idempotency-Key`: what was asked (hash) and what was answered."""

    __tablename__ = "idempotency_records"

    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    sandbox_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TemplateOwner(Base):
    """A template a team built through the API (`POST /v3/templates`): its random id, and the name it has in
    the team's namespace (unique per team: two teams may each have `my-app`).

    Only the owner sees or uses it, unless it is `public`: then every team may start it by `team-slug/name`
    or id. Templates built on the host (`base`) have no row: they are the server's built-ins, usable by all
    and managed by no team.
    """

    __tablename__ = "team_templates"
    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_team_templates_team_name"),)

    template_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    public: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Set after the build on a control plane with remote nodes (the image's template.json is not rewritten there);
    # None: as the image says. See store/build_sharing.py.
    aliases: Mapped[list[str] | None] = mapped_column(JSON, nullable=True, default=None)
    tags: Mapped[list[str] | None] = mapped_column(JSON, nullable=True, default=None)


class TemplateBuildRecord(Base):
    """One build of a template, from `POST /v3/templates` (waiting) to ready or error.

    Log lines live in `<data_dir>/template-builds/<build_id>.jsonl` (see templates/build_service), and on a control
    plane with remote nodes also in `template_build_logs` (templates/build_sharing.py).
    `reason` is `{"message", "step"?}` of a failed build.
    """

    __tablename__ = "template_builds"
    __table_args__ = (Index("ix_template_builds_template_created", "template_id", "created_at"),)

    build_id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a UUID, as E2B's
    template_id: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"))
    status: Mapped[str] = mapped_column(String(16))  # waiting | building | ready | error
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    cpu_count: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(Integer)
    reason: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The control-plane replica running the build, and when it last said so (store/build_sharing.py)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, default=None)


class TemplateBuildLogEntry(Base):
    """One log entry of a template build run by a control plane with remote nodes, readable by every replica."""

    __tablename__ = "template_build_logs"

    build_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry: Mapped[dict[str, Any]] = mapped_column(JSON)


class SnapshotRecord(Base):
    """A snapshot of a running sandbox (E2B's `create_snapshot`; issue 14): the team's, started from by
    `POST /sandboxes {templateID: <snapshot>}`, deleted by `DELETE /templates/<snapshot>`.

    `directory` holds the node's files (CRIU images and the writable layer), `state` the backend's facts about
    them (`SavedSandbox.state`); with `backend` they let any later server restore it. The limits, env and
    template are the source's: a restored sandbox gets the same memory it was dumped with.
    """

    __tablename__ = "snapshots"
    __table_args__ = (
        UniqueConstraint("team_id", "name", name="uq_snapshots_team_name"),
        Index("ix_snapshots_team_created", "team_id", "created_at"),
    )

    snapshot_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"))
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)  # unique per team
    source_sandbox_id: Mapped[str] = mapped_column(String(32), index=True)
    template_id: Mapped[str] = mapped_column(String(255))  # the source's template: its rootfs is the lower layer
    backend: Mapped[str] = mapped_column(String(32))
    directory: Mapped[str] = mapped_column(String(1024))
    bytes: Mapped[int] = mapped_column(Integer)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    cpu_count: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(Integer)
    allow_internet_access: Mapped[bool] = mapped_column(Boolean, default=True)
    env_vars: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    meta: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class VolumeRecord(Base):
    """A team's volume (E2B's beta volumes): a named ext4 image of `size_mb` on the node, kept after the sandboxes
    that mounted it end. Names are unique per team; the id is random (`node/volumes.py` keeps the image)."""

    __tablename__ = "volumes"
    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_volumes_team_name"),)

    volume_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    size_mb: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The remote node whose data dir keeps the image (a control plane with remote nodes); None: this host's own.
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)


class VolumeMountRecord(Base):
    """A volume mounted into a sandbox at `path`: the volume is in use while the sandbox is live (running or
    paused), and a resumed or restored sandbox mounts the same volumes again from these rows."""

    __tablename__ = "volume_mounts"

    sandbox_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    volume_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    path: Mapped[str] = mapped_column(String(1024))


class AuditEvent(Base):
    """One recorded action (issue 18): an API call a key made, or what a client did inside a sandbox through envd
    (seen by the edge proxy, outside the sandbox). Only the API writes these rows; nothing in a sandbox can.
    `id` orders events as they were recorded; `key_id` is the API key's id (never the key), None for envd
    traffic (which carries the sandbox's access token instead)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_team_time", "team_id", "time"),
                      Index("ix_audit_team_sandbox_time", "team_id", "sandbox_id", "time"),
                      Index("ix_audit_time", "time"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    team_id: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    sandbox_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class DashboardSession(Base):
    """A dashboard login (issue 18), kept in the store so that every control-plane replica knows it and a
    restart logs nobody out. The cookie holds the session id; this row holds only its sha256 (a copy of the
    database does not hand out sessions) and the key's id, never the key: the key's row is re-read on every
    request, so revoking it ends its sessions. `csrf` is echoed into pages, so it is kept as is."""

    __tablename__ = "dashboard_sessions"
    __table_args__ = (Index("ix_dashboard_sessions_key_seen", "key_id", "seen_at"),
                      Index("ix_dashboard_sessions_seen", "seen_at"))

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
