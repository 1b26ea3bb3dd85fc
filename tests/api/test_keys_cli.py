"""`sandhive keys create|list|revoke`, and how the CLI reports user errors (a message, no traceback)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import httpx
import pytest

from sandhive.store import Store
from tests.api.rig import Server, cli, create_key

KEY = re.compile(r"^e2b_[0-9a-f]{40}$")


def test_create_quiet_prints_only_an_e2b_style_key(tmp_path: Path) -> None:
    out = cli("keys", "create", "--quiet", "--data-dir", str(tmp_path)).stdout
    assert KEY.match(out.strip()), out
    assert out.count("\n") == 1


def test_create_loud_shows_team_and_key(tmp_path: Path) -> None:
    out = cli("keys", "create", "--team", "research", "--data-dir", str(tmp_path)).stdout
    assert "research" in out
    assert re.search(r"e2b_[0-9a-f]{40}", out)


def test_data_dir_gets_a_private_secret_on_serve_and_db_on_keys(tmp_path: Path, server: Server) -> None:
    create_key(tmp_path / "d")
    assert stat.S_IMODE((tmp_path / "d" / "sandhive.db").stat().st_mode) == 0o600
    secret = server.data_dir / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_text().strip()) == 64


def test_list_shows_prefixes_never_keys(tmp_path: Path) -> None:
    a = create_key(tmp_path, "alpha")
    b = create_key(tmp_path, "beta")
    out = cli("keys", "list", "--data-dir", str(tmp_path)).stdout
    for key, team in ((a, "alpha"), (b, "beta")):
        assert key[:12] in out and team in out
        assert key not in out
    assert out.count("active") == 2


def test_list_when_empty(tmp_path: Path) -> None:
    assert "No API keys" in cli("keys", "list", "--data-dir", str(tmp_path)).stdout


def test_keys_are_stored_hashed(tmp_path: Path) -> None:
    key = create_key(tmp_path)
    assert key.encode() not in (tmp_path / "sandhive.db").read_bytes()


def test_revoke_turns_the_key_into_401(server: Server) -> None:
    key = server.key("revokers")
    with server.client(key) as c:
        assert c.get("/v2/sandboxes").status_code == 200
        out = cli("keys", "revoke", key[:12], "--data-dir", str(server.data_dir)).stdout
        assert f"Revoked {key[:12]}" in out
        r = c.get("/v2/sandboxes")
        assert r.status_code == 401 and r.json()["code"] == 401
    listing = cli("keys", "list", "--data-dir", str(server.data_dir)).stdout
    assert re.search(re.escape(key[:12]) + r".*revoked", listing)


def test_revoke_by_whole_key(tmp_path: Path) -> None:
    key = create_key(tmp_path)
    cli("keys", "revoke", key, "--data-dir", str(tmp_path))
    assert "revoked" in cli("keys", "list", "--data-dir", str(tmp_path)).stdout


def test_revoke_unknown_or_too_short_prefix_fails_cleanly(tmp_path: Path) -> None:
    create_key(tmp_path)
    unknown = cli("keys", "revoke", "e2b_zzzzzz", "--data-dir", str(tmp_path), check=False)
    assert unknown.returncode == 1
    assert "no active API key matches" in unknown.stderr and "Traceback" not in unknown.stderr
    short = cli("keys", "revoke", "e2b_", "--data-dir", str(tmp_path), check=False)
    assert short.returncode == 2
    assert "too short" in short.stderr and "Traceback" not in short.stderr


def test_revoke_refuses_an_ambiguous_prefix(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.migrate()
    try:
        store.create_api_key("a")
        store.create_api_key("b")
        with pytest.raises(ValueError, match="matches 2 keys"):
            store.revoke_api_key("e2b_")
        assert all(k.revoked_at is None for k in store.list_api_keys())
    finally:
        store.close()


def test_unusable_data_dir_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for args in (["keys", "create"], ["keys", "list"], ["serve", "--backend", "none", "--port", "1"]):
        proc = cli(*args, "--data-dir", str(blocker / "data"), check=False)
        assert proc.returncode == 1, proc
        assert "data dir" in proc.stderr and "not usable" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout


def test_bad_database_url_is_a_message(tmp_path: Path) -> None:
    proc = cli("keys", "list", "--data-dir", str(tmp_path), "--database-url",
               "postgresql://sandhive:hunter2@/nodb?host=/nonexistent", check=False)
    assert proc.returncode == 1
    assert "cannot open the database" in proc.stderr
    assert "hunter2" not in proc.stderr and "Traceback" not in proc.stderr


def test_serve_rejects_bad_flags(tmp_path: Path) -> None:
    for args in (["--max-lifetime", "0"], ["--backend", "qemu"], ["--port", "70000"]):
        proc = cli("serve", "--data-dir", str(tmp_path), *args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_server_uses_keys_made_while_it_runs(server: Server) -> None:
    key = server.key("late")
    r = httpx.get(f"{server.url}/v2/sandboxes", headers={"X-API-Key": key}, trust_env=False)
    assert r.status_code == 200 and r.json() == []
