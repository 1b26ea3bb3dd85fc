"""Engines for the store: SQLite (the embedded default) or PostgreSQL, and running migrations.

SQLite is made safe for many concurrent writers in one or more processes: WAL journal, a busy timeout,
and `BEGIN IMMEDIATE` on the write engine so that a transaction takes the write lock up front instead
of failing with "database is locked" when it upgrades a read lock half-way through.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url

BUSY_TIMEOUT_S = 30
MIGRATIONS = Path(__file__).parent / "alembic"
MIGRATION_LOCK_ID = 0x5A4D  # pg_advisory_xact_lock key: one migrating process at a time


def database_url(data_dir: Path, url: str | None = None) -> str:
    """The URL to use: the one given (PostgreSQL URLs get the psycopg 3 driver), or `<data_dir>/sandhive.db`."""
    if not url:
        return f"sqlite:///{Path(data_dir) / 'sandhive.db'}"
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _private_sqlite_file(url: str) -> None:
    """Create the database file 0600 before SQLite does (its -wal and -shm files copy the mode): it holds
    sandboxes' env vars and access tokens, and the data dir itself must stay traversable for sandboxes."""
    path = make_url(url).database
    if path and path != ":memory:" and not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def make_engine(url: str, *, immediate: bool = False) -> Engine:
    """An engine for `url`; with SQLite, `immediate` makes every transaction take the write lock at BEGIN."""
    if not is_sqlite(url):
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    _private_sqlite_file(url)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})
    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy emit BEGIN itself (pysqlite's own is broken)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (`alembic upgrade head`), serialised across processes."""
    from alembic import command  # imported here: it is slow to import and needed once per process
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
