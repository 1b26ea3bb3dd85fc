"""The store and `sandhive serve` on a real PostgreSQL: a private cluster in a temp dir, on a unix socket.

The cluster runs as the `postgres` user from Debian's `postgresql` package (scripts/install-debian-packages.sh
installs it) and is stopped and deleted after the module. Without the package or root, the tests skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandhive.store import Store, database_url
from tests.api.rig import insert_sandbox, start_server
from tests.api.test_store import check_schema, exercise_concurrent_writes, exercise_idempotency, exercise_paging


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _skip_reason() -> str | None:
    if _bindir() is None:
        return "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; apt-get install postgresql)"
    if os.geteuid() != 0:
        return "starting a private PostgreSQL cluster needs root (to run it as the postgres user)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres user"
    return None


def _as_postgres(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True, timeout=120,
                          check=True)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    reason = _skip_reason()
    if reason:
        print(f"skipping PostgreSQL tests: {reason}")
        pytest.skip(reason)
    bindir = _bindir()
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="sandhive-pg-", dir="/tmp"))
    root.chmod(0o755)
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    shutil.chown(root, "postgres")
    shutil.chown(sock, "postgres")
    started = False
    try:
        _as_postgres(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "-o",
                     f"-k {sock} -c listen_addresses='' -c fsync=off", "start")
        started = True
        yield f"postgresql://postgres@/postgres?host={sock}"
    finally:
        if started:
            _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def pg_store(pg_url: str, tmp_path: Path) -> Iterator[Store]:
    store = Store.open(tmp_path, pg_url)
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def test_migrations_up_on_postgres(pg_store: Store) -> None:
    pg_store.migrate()
    check_schema(pg_store.url)
    assert pg_store.url.startswith("postgresql+psycopg://")


def test_idempotency_on_postgres(pg_store: Store) -> None:
    exercise_idempotency(pg_store)


def test_paging_on_postgres(pg_store: Store) -> None:
    exercise_paging(pg_store)


def test_concurrent_writers_on_postgres(pg_url: str, tmp_path: Path) -> None:
    stores = [Store(database_url(tmp_path, pg_url)) for _ in range(3)]
    try:
        exercise_concurrent_writes(stores)
    finally:
        for s in stores:
            s.close()


def test_serve_on_postgres(pg_url: str, tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", database_url=pg_url)
    try:
        key = server.key("pg-team")
        row = insert_sandbox(server.store, server.store.authenticate(key), meta={"db": "postgres"})
        with server.client(key) as c:
            listed = c.get("/v2/sandboxes", params={"metadata": "db=postgres"}).json()
            assert [s["sandboxID"] for s in listed] == [row.sandbox_id]
            assert c.delete(f"/sandboxes/{row.sandbox_id}").status_code == 204
            assert c.get(f"/sandboxes/{row.sandbox_id}").status_code == 404
        assert not (tmp_path / "data" / "sandhive.db").exists()
    finally:
        server.stop()


def test_audit_log_on_postgres(pg_store: Store) -> None:
    """The audit log's queries (store/audit.py) on PostgreSQL: ordered batch inserts, team-scoped pages, pruning."""
    from datetime import UTC, datetime, timedelta
    from uuid import uuid4

    from sandhive.store import AuditEntry

    mine, theirs = uuid4().hex, uuid4().hex
    now = datetime.now(UTC)
    pg_store.add_audit_events([AuditEntry(time=now, team_id=mine, action="process.start", sandbox_id="s1",
                                          target=f"cmd{i}", detail={"args": [str(i)]}) for i in range(5)]
                              + [AuditEntry(time=now, team_id=theirs, action="sandbox.kill", sandbox_id="s1"),
                                 AuditEntry(time=now - timedelta(days=9), team_id=mine, action="old")])
    page, token = pg_store.list_audit_events(mine, sandbox_id="s1", limit=3)
    assert [e.target for e in page] == ["cmd0", "cmd1", "cmd2"] and page[0].detail == {"args": ["0"]}
    rest, last = pg_store.list_audit_events(mine, sandbox_id="s1", limit=3, cursor=token)
    assert [e.target for e in rest] == ["cmd3", "cmd4"] and last is None
    assert [e.action for e in pg_store.list_audit_events(theirs)[0]] == ["sandbox.kill"]
    assert pg_store.prune_audit_events(now - timedelta(days=7)) >= 1
    assert "old" not in [e.action for e in pg_store.list_audit_events(mine)[0]]
