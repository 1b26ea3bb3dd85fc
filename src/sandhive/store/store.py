"""`Store`: every query the control plane makes, one short transaction each.

The methods are synchronous (SQLAlchemy's plain engine); the API calls them through `asyncio.to_thread`,
so a slow disk never stalls the event loop, and the CLI calls them directly. Rows come back detached
(`expire_on_commit=False`) and can be read after their session is gone.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .audit import AuditQueries
from .build_sharing import BuildSharingQueries
from .dashboard_sessions import DashboardSessionQueries
from .engine import database_url, is_sqlite, make_engine, migrate
from .models import ApiKey, AuditEvent, IdempotencyRecord, SandboxRecord, Team, TemplateBuildRecord, TemplateOwner
from .paging import SandboxQuery, decode_cursor, encode_cursor
from .snapshots import SnapshotQueries
from .volumes import VolumeQueries

KEY_PREFIX = "e2b_"  # keys look like E2B's, so tools that check the shape accept them
KEY_HEX_CHARS = 40
DISPLAY_PREFIX_LEN = len(KEY_PREFIX) + 8
LAST_USED_RESOLUTION = timedelta(seconds=60)  # write last_used_at at most once a minute per key
IDEMPOTENCY_TTL = timedelta(hours=24)
IDEMPOTENCY_STALE = timedelta(minutes=10)  # an unfinished claim this old belonged to a crashed server
LIVE_STATES = ("running", "paused")
UNFINISHED_BUILD_STATES = ("waiting", "building")


def now_utc() -> datetime:
    return datetime.now(UTC)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    """An API key as `sandhive keys list` shows it (never the key itself)."""

    prefix: str
    team: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    admin: bool = False


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the team of its key, and whether the key is an operator's (`keys create --admin`)."""

    team_id: str
    admin: bool = False
    key_id: str | None = None  # the key's id (never the key): what the audit log names the caller by


def _key_event(action: str, team_id: str, key: ApiKey) -> AuditEvent:
    """The audit row of a key's creation or revocation (keys are managed on the host, `sandhive keys`)."""
    return AuditEvent(time=now_utc(), team_id=team_id, key_id=None, action=action, target=key.id,
                      detail={"prefix": key.prefix, "admin": bool(key.admin)})


def team_slug(name: str) -> str:
    """A team's namespace in template names (`slug/name`): its name in lowercase letters, digits and '-'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "team"


class ClaimOutcome(Enum):
    CLAIMED = "claimed"  # first time: go ahead and create, then finish_idempotency
    REPLAY = "replay"  # done before with the same body: answer `response` again
    MISMATCH = "mismatch"  # the key was used with another body
    IN_PROGRESS = "in_progress"  # the first request is still creating


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    response: dict[str, Any] | None = None


class Store(SnapshotQueries, VolumeQueries, AuditQueries, DashboardSessionQueries, BuildSharingQueries):
    """The database behind one control plane: SQLite file by default, PostgreSQL by URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._read_engine = make_engine(url)
        self._write_engine = make_engine(url, immediate=True) if is_sqlite(url) else self._read_engine
        self._reader = sessionmaker(self._read_engine, expire_on_commit=False)
        self._writer = sessionmaker(self._write_engine, expire_on_commit=False)

    @classmethod
    def open(cls, data_dir: Path, url: str | None = None) -> Store:
        return cls(database_url(data_dir, url))

    def migrate(self) -> None:
        migrate(self._write_engine)

    def close(self) -> None:
        self._read_engine.dispose()
        if self._write_engine is not self._read_engine:
            self._write_engine.dispose()

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._reader() as session, session.begin():
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._writer() as session, session.begin():
            yield session

    # ---- teams and API keys -------------------------------------------------------------------------

    def ensure_team(self, name: str) -> Team:
        """The team called `name`, created if it does not exist yet."""
        for _ in range(2):  # a concurrent creator may win the unique name; then read theirs
            try:
                with self._write() as s:
                    team = s.scalar(select(Team).where(Team.name == name))
                    if team is None:
                        team = Team(id=uuid.uuid4().hex, name=name, slug=_free_slug(s, team_slug(name)),
                                    created_at=now_utc())
                        s.add(team)
                    return team
            except IntegrityError:
                continue
        raise RuntimeError(f"could not create team {name!r}")

    def create_api_key(self, team_name: str, admin: bool = False) -> tuple[str, KeyInfo]:
        """Mint a key for `team_name` (creating the team); the key is returned once and stored hashed.
        An `admin` key is also the operator's: it sees the whole node, every team's pools included."""
        team = self.ensure_team(team_name)
        key = KEY_PREFIX + secrets.token_hex(KEY_HEX_CHARS // 2)
        row = ApiKey(id=uuid.uuid4().hex, team_id=team.id, prefix=key[:DISPLAY_PREFIX_LEN], hash=hash_key(key),
                     created_at=now_utc(), admin=admin)
        with self._write() as s:
            s.add(row)
            s.add(_key_event("key.create", team.id, row))  # with the key, or not at all
        return key, KeyInfo(row.prefix, team.name, row.created_at, None, None, admin)

    def list_api_keys(self) -> list[KeyInfo]:
        with self._read() as s:
            rows = s.execute(select(ApiKey, Team.name).join(Team, Team.id == ApiKey.team_id)
                             .order_by(ApiKey.created_at)).all()
        return [KeyInfo(k.prefix, name, k.created_at, k.last_used_at, k.revoked_at, bool(k.admin))
                for k, name in rows]

    def revoke_api_key(self, prefix_or_key: str) -> KeyInfo:
        """Revoke the one live key whose display prefix starts with `prefix_or_key` (or that is this key).

        LookupError when none matches, ValueError when the prefix matches more than one key.
        """
        with self._write() as s:
            cond = or_(ApiKey.hash == hash_key(prefix_or_key), ApiKey.prefix.startswith(prefix_or_key, autoescape=True))
            rows = s.execute(select(ApiKey, Team.name).join(Team, Team.id == ApiKey.team_id)
                             .where(ApiKey.revoked_at.is_(None), cond)).all()
            if not rows:
                raise LookupError(f"no active API key matches {prefix_or_key!r}")
            if len(rows) > 1:
                raise ValueError(f"{prefix_or_key!r} matches {len(rows)} keys "
                                 f"({', '.join(k.prefix for k, _ in rows)}); give a longer prefix")
            key, team = rows[0]
            key.revoked_at = now_utc()
            s.add(_key_event("key.revoke", key.team_id, key))
            return KeyInfo(key.prefix, team, key.created_at, key.last_used_at, key.revoked_at)

    def authenticate(self, key: str) -> str | None:
        """The team id of a live key, or None. Marks the key used (coarsely, to keep writes rare)."""
        caller = self.caller(key)
        return caller.team_id if caller else None

    def caller(self, key: str) -> Caller | None:
        """The team of a live key and whether it is an admin key, or None. Marks the key used."""
        digest = hash_key(key)
        with self._read() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.hash == digest))
        if row is None or row.revoked_at is not None:
            return None
        now = now_utc()
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
            with self._write() as s:
                s.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
        return Caller(row.team_id, bool(row.admin), row.id)

    # ---- sandboxes ----------------------------------------------------------------------------------

    def add_sandbox(self, record: SandboxRecord) -> None:
        with self._write() as s:
            s.add(record)

    def get_sandbox(self, sandbox_id: str) -> SandboxRecord | None:
        with self._read() as s:
            return s.get(SandboxRecord, sandbox_id)

    def list_sandboxes(self, team_id: str, query: SandboxQuery) -> tuple[list[SandboxRecord], str | None]:
        """One page of a team's sandboxes and the cursor of the next page (None on the last one).

        Metadata is matched in Python while the rows stream in start order, so paging stays exact for any
        filter and the same code serves SQLite and PostgreSQL.
        """
        desc = query.order != "asc"
        stmt = select(SandboxRecord).where(SandboxRecord.team_id == team_id, SandboxRecord.state.in_(query.states))
        if query.template:
            stmt = stmt.where(or_(SandboxRecord.template_id == query.template, SandboxRecord.alias == query.template))
        if query.started_after is not None:
            stmt = stmt.where(SandboxRecord.started_at >= query.started_after)
        if query.cursor:
            at, last_id = decode_cursor(query.cursor)
            if desc:
                after = or_(SandboxRecord.started_at < at,
                            and_(SandboxRecord.started_at == at, SandboxRecord.sandbox_id < last_id))
            else:
                after = or_(SandboxRecord.started_at > at,
                            and_(SandboxRecord.started_at == at, SandboxRecord.sandbox_id > last_id))
            stmt = stmt.where(after)
        if desc:
            stmt = stmt.order_by(SandboxRecord.started_at.desc(), SandboxRecord.sandbox_id.desc())
        else:
            stmt = stmt.order_by(SandboxRecord.started_at.asc(), SandboxRecord.sandbox_id.asc())
        page: list[SandboxRecord] = []
        with self._read() as s:
            for record in s.scalars(stmt.execution_options(yield_per=200)):
                if query.matches_metadata(record):
                    page.append(record)
                    if len(page) > query.limit:
                        break
        if len(page) > query.limit:
            return page[:query.limit], encode_cursor(page[query.limit - 1])
        return page, None

    def live_sandboxes(self) -> list[SandboxRecord]:
        """Every sandbox the store believes runs (or is paused): what a starting server reconciles."""
        with self._read() as s:
            return list(s.scalars(select(SandboxRecord).where(SandboxRecord.state.in_(LIVE_STATES))))

    def expired_sandboxes(self, now: datetime) -> list[SandboxRecord]:
        with self._read() as s:
            return list(s.scalars(select(SandboxRecord).where(SandboxRecord.state == "running",
                                                              SandboxRecord.end_at <= now)))

    def set_end_at(self, sandbox_id: str, end_at: datetime) -> bool:
        """Move a live sandbox's deadline; False when it is no longer live."""
        with self._write() as s:
            statement = (update(SandboxRecord)
                         .where(SandboxRecord.sandbox_id == sandbox_id, SandboxRecord.state.in_(LIVE_STATES))
                         .values(end_at=end_at))
            result = cast(CursorResult[Any], s.execute(statement))  # an UPDATE answers with a cursor result
            return result.rowcount > 0

    def set_network(self, sandbox_id: str, network: dict[str, Any] | None, allow_internet_access: bool) -> bool:
        """Replace a live sandbox's network settings (`PUT /sandboxes/{id}/network`); False when it is not live."""
        with self._write() as s:
            statement = (update(SandboxRecord)
                         .where(SandboxRecord.sandbox_id == sandbox_id, SandboxRecord.state.in_(LIVE_STATES))
                         .values(network=network, allow_internet_access=allow_internet_access))
            return cast(CursorResult[Any], s.execute(statement)).rowcount > 0

    def mark_killed(self, sandbox_id: str, at: datetime | None = None) -> bool:
        """Record a sandbox as killed; False when it already was (so only one caller reports the kill)."""
        with self._write() as s:
            statement = (update(SandboxRecord)
                         .where(SandboxRecord.sandbox_id == sandbox_id, SandboxRecord.state != "killed")
                         .values(state="killed", killed_at=at or now_utc()))
            result = cast(CursorResult[Any], s.execute(statement))  # an UPDATE answers with a cursor result
            return result.rowcount > 0

    def mark_paused(self, sandbox_id: str, saved: dict[str, Any], at: datetime | None = None) -> bool:
        """Record a running sandbox as paused with its saved state; False when it was not running."""
        with self._write() as s:
            statement = (update(SandboxRecord)
                         .where(SandboxRecord.sandbox_id == sandbox_id, SandboxRecord.state == "running")
                         .values(state="paused", saved=saved, paused_at=at or now_utc()))
            return cast(CursorResult[Any], s.execute(statement)).rowcount > 0

    def mark_resumed(self, sandbox_id: str, address: str, runtime_state: dict[str, Any], end_at: datetime) -> bool:
        """Record a paused sandbox as running again; False when it was not paused."""
        with self._write() as s:
            statement = (update(SandboxRecord)
                         .where(SandboxRecord.sandbox_id == sandbox_id, SandboxRecord.state == "paused")
                         .values(state="running", saved=None, paused_at=None, address=address,
                                 runtime_state=runtime_state, end_at=end_at))
            return cast(CursorResult[Any], s.execute(statement)).rowcount > 0

    def paused_count(self, team_id: str) -> int:
        with self._read() as s:
            return len(list(s.scalars(select(SandboxRecord.sandbox_id).where(
                SandboxRecord.team_id == team_id, SandboxRecord.state == "paused"))))

    # ---- idempotency --------------------------------------------------------------------------------

    def claim_idempotency(self, team_id: str, key: str, request_hash: str, now: datetime | None = None) -> Claim:
        """Claim `key` for a create with body hash `request_hash`, or say what became of an earlier claim."""
        now = now or now_utc()
        for _ in range(2):  # on PostgreSQL a concurrent claim can win the insert; then read it
            try:
                with self._write() as s:
                    record = s.get(IdempotencyRecord, (team_id, key))
                    if record is not None and _expired(record, now):
                        s.delete(record)
                        s.flush()
                        record = None
                    if record is None:
                        s.add(IdempotencyRecord(team_id=team_id, key=key, request_hash=request_hash, created_at=now))
                        return Claim(ClaimOutcome.CLAIMED)
                    if record.request_hash != request_hash:
                        return Claim(ClaimOutcome.MISMATCH)
                    if record.response is None:
                        return Claim(ClaimOutcome.IN_PROGRESS)
                    return Claim(ClaimOutcome.REPLAY, record.response)
            except IntegrityError:
                continue
        raise RuntimeError("idempotency claim kept conflicting")

    def finish_idempotency(self, team_id: str, key: str, sandbox_id: str, response: dict[str, Any]) -> None:
        with self._write() as s:
            s.execute(update(IdempotencyRecord).where(IdempotencyRecord.team_id == team_id,
                                                      IdempotencyRecord.key == key)
                      .values(sandbox_id=sandbox_id, response=response))

    def release_idempotency(self, team_id: str, key: str) -> None:
        """Forget an unfinished claim (the create failed), so that a retry with the same key can try again."""
        with self._write() as s:
            s.execute(delete(IdempotencyRecord).where(IdempotencyRecord.team_id == team_id,
                                                      IdempotencyRecord.key == key,
                                                      IdempotencyRecord.response.is_(None)))

    def live_sandbox_count(self, template_id: str) -> int:
        """How many running or paused sandboxes were created from the template."""
        with self._read() as s:
            return s.scalar(select(func.count()).select_from(SandboxRecord).where(
                SandboxRecord.template_id == template_id, SandboxRecord.state.in_(LIVE_STATES))) or 0

    # ---- templates and their builds -----------------------------------------------------------------

    def claim_template(self, template_id: str, team_id: str, name: str) -> TemplateOwner:
        """The team's template called `name`, created with id `template_id` if the team has none by that name.

        Names are unique per team, not per server: another team's `name` is another template.
        """
        for _ in range(2):  # a concurrent claim may win the insert; then read the winner
            try:
                with self._write() as s:
                    owner = s.scalar(select(TemplateOwner).where(TemplateOwner.team_id == team_id,
                                                                 TemplateOwner.name == name))
                    if owner is None:
                        owner = TemplateOwner(template_id=template_id, team_id=team_id, name=name, public=False,
                                              created_at=now_utc())
                        s.add(owner)
                    return owner
            except IntegrityError:
                continue
        raise RuntimeError(f"could not claim template {name!r}")

    def template_owner(self, template_id: str) -> TemplateOwner | None:
        with self._read() as s:
            return s.get(TemplateOwner, template_id)

    def team_template(self, team_id: str, name: str) -> TemplateOwner | None:
        """The team's own template called `name` (its id or its name in the team's namespace)."""
        with self._read() as s:
            return s.scalar(select(TemplateOwner).where(TemplateOwner.team_id == team_id,
                                                        or_(TemplateOwner.template_id == name,
                                                            TemplateOwner.name == name)))

    def public_template(self, slug: str, name: str) -> TemplateOwner | None:
        """The public template `slug/name`: the template `name` of the team with that slug, if it is public."""
        with self._read() as s:
            return s.scalar(select(TemplateOwner).join(Team, Team.id == TemplateOwner.team_id)
                            .where(Team.slug == slug, TemplateOwner.name == name, TemplateOwner.public.is_(True)))

    def team_templates(self, team_id: str) -> list[TemplateOwner]:
        with self._read() as s:
            return list(s.scalars(select(TemplateOwner).where(TemplateOwner.team_id == team_id)
                                  .order_by(TemplateOwner.created_at, TemplateOwner.template_id)))

    def owned_template_ids(self) -> set[str]:
        """Ids of every team's templates: a built template not among them is one of the server's built-ins."""
        with self._read() as s:
            return set(s.scalars(select(TemplateOwner.template_id)))

    def set_template_public(self, template_id: str, public: bool) -> None:
        with self._write() as s:
            s.execute(update(TemplateOwner).where(TemplateOwner.template_id == template_id).values(public=public))

    def team_slug_of(self, team_id: str) -> str:
        with self._read() as s:
            team = s.get(Team, team_id)
        return (team.slug or team_slug(team.name)) if team else "team"

    def team_name_of(self, team_id: str) -> str | None:
        """The name of team `team_id` (its API keys are listed and minted by name), or None."""
        with self._read() as s:
            team = s.get(Team, team_id)
        return team.name if team else None

    def team_template_count(self, team_id: str) -> int:
        with self._read() as s:
            return s.scalar(select(func.count()).select_from(TemplateOwner)
                            .where(TemplateOwner.team_id == team_id)) or 0

    def build_seconds_since(self, team_id: str, since: datetime) -> float:
        """Seconds the team's builds ran since `since` (finished ones, and running ones up to now)."""
        now = now_utc()
        with self._read() as s:
            rows = s.execute(select(TemplateBuildRecord.started_at, TemplateBuildRecord.finished_at)
                             .where(TemplateBuildRecord.team_id == team_id, TemplateBuildRecord.started_at.is_not(None),
                                    or_(TemplateBuildRecord.finished_at.is_(None),
                                        TemplateBuildRecord.finished_at >= since))).all()
        total = 0.0
        for started, finished in rows:
            if started is None:  # excluded by the query; narrows the type
                continue
            begin = max(started, since)
            end = finished or now
            if end > begin:
                total += (end - begin).total_seconds()
        return total

    def forget_template(self, template_id: str) -> None:
        """Drop the owner row (the template was deleted): its name is free again. Build records stay."""
        with self._write() as s:
            s.execute(delete(TemplateOwner).where(TemplateOwner.template_id == template_id))

    def add_build(self, record: TemplateBuildRecord) -> None:
        with self._write() as s:
            s.add(record)

    def get_build(self, build_id: str) -> TemplateBuildRecord | None:
        with self._read() as s:
            return s.get(TemplateBuildRecord, build_id)

    def update_build(self, build_id: str, **values: Any) -> None:
        """Set fields of a build record (status, reason, started_at, finished_at, tags); `updated_at` is now."""
        with self._write() as s:
            s.execute(update(TemplateBuildRecord).where(TemplateBuildRecord.build_id == build_id)
                      .values(updated_at=now_utc(), **values))

    def template_builds(self, template_id: str) -> list[TemplateBuildRecord]:
        """The template's builds, newest first."""
        with self._read() as s:
            return list(s.scalars(select(TemplateBuildRecord).where(TemplateBuildRecord.template_id == template_id)
                                  .order_by(TemplateBuildRecord.created_at.desc(),
                                            TemplateBuildRecord.build_id.desc())))

    def fail_unfinished_builds(self, message: str) -> list[str]:
        """Mark every waiting or building build failed with `message` (at a server start, none of them can still
        run: builds run inside the server process). Returns their ids."""
        now = now_utc()
        with self._write() as s:
            ids = list(s.scalars(select(TemplateBuildRecord.build_id)
                                 .where(TemplateBuildRecord.status.in_(UNFINISHED_BUILD_STATES))))
            if ids:
                s.execute(update(TemplateBuildRecord).where(TemplateBuildRecord.build_id.in_(ids))
                          .values(status="error", reason={"message": message}, updated_at=now, finished_at=now))
            return ids


def _free_slug(s: Session, slug: str) -> str:
    """`slug`, or `slug-2`, `slug-3`... if another team has it."""
    candidate, n = slug, 1
    while s.scalar(select(Team.id).where(Team.slug == candidate)) is not None:
        n += 1
        candidate = f"{slug[:36]}-{n}"
    return candidate


def _expired(record: IdempotencyRecord, now: datetime) -> bool:
    if record.response is None:
        return now - record.created_at > IDEMPOTENCY_STALE
    return now - record.created_at > IDEMPOTENCY_TTL
