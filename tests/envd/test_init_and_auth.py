"""`/init`, the access token, signed file URLs, `/envs` and `/metrics` on a fresh envd of their own."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from e2b.exceptions import AuthenticationException

from sandhive.envd.auth import file_signature
from tests.helpers import stop_process_group

from .conftest import Envd, start_envd

TOKEN = "secret-token-123"
START = time.time()


@pytest.fixture(scope="module")
def inited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envd]:
    server = start_envd(tmp_path_factory.mktemp("envd-auth"))
    r = httpx.post(f"{server.url}/init", json={
        "envVars": {"TEAM_VAR": "from-init"}, "accessToken": TOKEN, "defaultUser": "user",
        "defaultWorkdir": "/home/user", "sandboxId": "isbx123", "templateId": "tpl42",
        "timestamp": "2001-01-01T00:00:00Z"})
    assert r.status_code == 204, r.text
    yield server
    stop_process_group(server.proc)


def test_rpc_needs_the_token(inited: Envd) -> None:
    with pytest.raises(AuthenticationException):
        inited.sdk().commands.run("true")
    r = httpx.post(f"{inited.url}/process.Process/List", json={})
    assert r.status_code == 401 and r.json()["message"].startswith("unauthorized access")


def test_init_identity_reaches_processes(inited: Envd) -> None:
    out = inited.sdk(TOKEN).commands.run(
        'echo "$TEAM_VAR $E2B_SANDBOX_ID $E2B_TEMPLATE_ID $(whoami) $(pwd)"').stdout
    assert out == "from-init isbx123 tpl42 user /home/user\n"


def test_envs_and_metrics(inited: Envd) -> None:
    headers = {"X-Access-Token": TOKEN}
    assert httpx.get(f"{inited.url}/envs", headers=headers).json() == {"TEAM_VAR": "from-init"}
    metrics = httpx.get(f"{inited.url}/metrics", headers=headers).json()
    assert metrics["mem_total"] > 0 and metrics["disk_total"] > 0 and metrics["cpu_count"] >= 1
    assert 0 <= metrics["cpu_used_pct"] <= 100
    assert httpx.get(f"{inited.url}/metrics").status_code == 401


def test_reinit_needs_the_current_token(inited: Envd) -> None:
    assert httpx.post(f"{inited.url}/init", json={"accessToken": "stolen"}).status_code == 401
    r = httpx.post(f"{inited.url}/init", json={"envVars": {"TEAM_VAR": "from-init"}},
                   headers={"X-Access-Token": TOKEN})
    assert r.status_code == 204


def test_signed_upload_and_download_urls(inited: Envd) -> None:
    sbx = inited.sdk(TOKEN)
    up = sbx.upload_url("/home/user/signed.txt", use_signature_expiration=60)
    assert httpx.post(up, files={"file": ("signed.txt", b"via signed url")}).status_code == 200
    down = sbx.download_url("/home/user/signed.txt")
    assert httpx.get(down).content == b"via signed url"
    assert sbx.files.get_info("/home/user/signed.txt").owner == "user"


def test_bad_and_expired_signatures_are_refused(inited: Envd) -> None:
    path = "/home/user/signed.txt"
    assert httpx.get(f"{inited.url}/files", params={"path": path, "signature": "v1_bogus"}).status_code == 401
    past = int(time.time()) - 10
    sig = file_signature(path, "read", "", TOKEN, past)
    r = httpx.get(f"{inited.url}/files", params={"path": path, "signature": sig, "signature_expiration": past})
    assert r.status_code == 401
    sig = file_signature(path, "write", "", TOKEN, None)  # a write signature does not allow reads
    assert httpx.get(f"{inited.url}/files", params={"path": path, "signature": sig}).status_code == 401


def test_init_never_moves_the_host_clock(inited: Envd) -> None:
    """The fixture's /init asked for 2026-01-01; without --set-clock the clock stays where it was."""
    assert abs(time.time() - START) < 3600


def test_health_stays_open(inited: Envd) -> None:
    assert httpx.get(f"{inited.url}/health").status_code == 204
