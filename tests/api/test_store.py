"""The store on its own: migrations, idempotency claims, paging cursors, and SQLite under concurrent writers."""

from __future__ import annotations

import concurrent.futures
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from sandhive.store import ClaimOutcome, SandboxQuery, Store
from sandhive.store.models import Base
from tests.api.rig import insert_sandbox

TABLES = {"teams", "api_keys", "sandboxes", "idempotency_records", "team_templates", "template_builds",
          "alembic_version"}


def migrated(tmp_path: Path) -> Store:
    store = Store.open(tmp_path)
    store.migrate()
    return store


def check_schema(url: str) -> None:
    """Every table exists at the head revision, and the migrations build exactly what the models declare."""
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0011"
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
    finally:
        engine.dispose()


def test_migrations_up_on_sqlite(tmp_path: Path) -> None:
    store = migrated(tmp_path)
    store.migrate()  # a second start finds the schema at head and changes nothing
    store.close()
    check_schema(f"sqlite:///{tmp_path / 'sandhive.db'}")


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = migrated(tmp_path)
    store.create_api_key("default")
    store.close()
    engine = create_engine(f"sqlite:///{tmp_path / 'sandhive.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def exercise_idempotency(store: Store) -> None:
    team = store.ensure_team("idem").id
    assert store.claim_idempotency(team, "k1", "hash-a").outcome is ClaimOutcome.CLAIMED
    assert store.claim_idempotency(team, "k1", "hash-a").outcome is ClaimOutcome.IN_PROGRESS
    assert store.claim_idempotency(team, "k1", "hash-b").outcome is ClaimOutcome.MISMATCH
    store.finish_idempotency(team, "k1", "isandbox", {"sandboxID": "isandbox"})
    replay = store.claim_idempotency(team, "k1", "hash-a")
    assert replay.outcome is ClaimOutcome.REPLAY and replay.response == {"sandboxID": "isandbox"}
    assert store.claim_idempotency(team, "k1", "hash-b").outcome is ClaimOutcome.MISMATCH
    # keys are per team
    other = store.ensure_team("idem-other").id
    assert store.claim_idempotency(other, "k1", "hash-b").outcome is ClaimOutcome.CLAIMED
    # a failed create releases its claim, so a retry may try again
    assert store.claim_idempotency(team, "k2", "hash-a").outcome is ClaimOutcome.CLAIMED
    store.release_idempotency(team, "k2")
    assert store.claim_idempotency(team, "k2", "hash-b").outcome is ClaimOutcome.CLAIMED
    # an unfinished claim of a crashed server goes stale; a finished one expires after a day
    later = datetime.now(UTC) + timedelta(minutes=11)
    assert store.claim_idempotency(team, "k2", "hash-c", now=later).outcome is ClaimOutcome.CLAIMED
    tomorrow = datetime.now(UTC) + timedelta(hours=25)
    assert store.claim_idempotency(team, "k1", "hash-b", now=tomorrow).outcome is ClaimOutcome.CLAIMED


def test_idempotency_claims(tmp_path: Path) -> None:
    store = migrated(tmp_path)
    try:
        exercise_idempotency(store)
    finally:
        store.close()


def test_concurrent_claims_of_one_key_have_one_winner(tmp_path: Path) -> None:
    stores = [migrated(tmp_path) for _ in range(4)]  # four "processes" on one SQLite file
    team = stores[0].ensure_team("race").id
    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(lambda i: stores[i % 4].claim_idempotency(team, "same", "h").outcome, range(32)))
    finally:
        for s in stores:
            s.close()
    assert outcomes.count(ClaimOutcome.CLAIMED) == 1
    assert outcomes.count(ClaimOutcome.IN_PROGRESS) == 31


def exercise_concurrent_writes(stores: list[Store]) -> None:
    team = stores[0].ensure_team("busy").id

    def work(i: int) -> str:
        store = stores[i % len(stores)]
        record = insert_sandbox(store, team, sandbox_id=f"ibusy{i:016d}", meta={"busy": "yes"})
        store.set_end_at(record.sandbox_id, datetime.now(UTC) + timedelta(hours=1))
        key, _ = store.create_api_key("busy")
        assert store.authenticate(key) == team
        if i % 3 == 0:
            store.mark_killed(record.sandbox_id)
        return record.sandbox_id

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(work, range(64)))
    page, _ = stores[0].list_sandboxes(team, SandboxQuery(metadata={"busy": "yes"}, limit=100))
    assert {r.sandbox_id for r in page} == {i for n, i in enumerate(ids) if n % 3}


def test_sqlite_many_writers(tmp_path: Path) -> None:
    stores = [migrated(tmp_path) for _ in range(4)]
    try:
        exercise_concurrent_writes(stores)
    finally:
        for s in stores:
            s.close()


def exercise_paging(store: Store) -> None:
    team = store.ensure_team("pages").id
    same_start = datetime.now(UTC).replace(microsecond=0)
    ids = sorted(insert_sandbox(store, team, started_at=same_start, meta={"p": "1"}).sandbox_id for _ in range(5))
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = store.list_sandboxes(team, SandboxQuery(metadata={"p": "1"}, limit=2, cursor=cursor))
        seen += [r.sandbox_id for r in page]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # equal start times: the id breaks the tie, nothing repeats or goes missing
    with pytest.raises(ValueError):
        store.list_sandboxes(team, SandboxQuery(cursor="not-a-cursor"))


def test_paging_is_exact_with_equal_start_times(tmp_path: Path) -> None:
    store = migrated(tmp_path)
    try:
        exercise_paging(store)
    finally:
        store.close()


def test_migration_0003_keeps_existing_templates_with_their_teams(tmp_path: Path) -> None:
    """Data of a 0002 database: its templates keep their ids and names, stay with their teams (private), and
    teams get distinct slugs even when their names slug alike."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from sandhive.store.engine import MIGRATIONS

    store = Store.open(tmp_path)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store._write_engine.begin() as conn:  # noqa: SLF001 — the test drives the migrations itself
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
        conn.execute(text("INSERT INTO teams (id, name, created_at) VALUES ('t1', 'Team A', '2026-01-01'), "
                          "('t2', 'team_a', '2026-01-02')"))
        conn.execute(text("INSERT INTO template_owners (template_id, team_id, name, created_at) "
                          "VALUES ('my-app', 't1', 'my-app', '2026-01-01')"))
    store.migrate()
    owner = store.team_template("t1", "my-app")
    assert owner is not None and owner.template_id == "my-app" and owner.public is False
    assert store.team_template("t2", "my-app") is None
    assert (store.team_slug_of("t1"), store.team_slug_of("t2")) == ("team-a", "team-a-2")
    assert store.claim_template("x" * 20, "t2", "my-app").template_id == "x" * 20  # names are per team now
    store.close()
