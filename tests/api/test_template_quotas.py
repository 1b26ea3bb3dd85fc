"""Per-team template quotas on a control-plane server: templates, build minutes and stored upload bytes answer
E2B's 429 with `Retry-After`, for the team over its limit only."""

from __future__ import annotations

import io
import os
import tarfile
import uuid
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from sandhive.store import TemplateBuildRecord
from sandhive.store.store import now_utc
from tests.api.rig import Server, start_server


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("sandhive") / "data", "--max-templates-per-team", "2",
                          "--build-minutes-per-day", "1", "--max-upload-mb-per-team", "1")
    try:
        yield server
    finally:
        server.stop()


def _is_429(r: httpx.Response, words: str) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["code"] == 429 and words in r.json()["message"]
    assert int(r.headers["Retry-After"]) > 0


def test_templates_per_team(small: Server) -> None:
    with small.client(small.key("quota-count")) as c, small.client(small.key("quota-other")) as other:
        for name in ("one", "two"):
            assert c.post("/v3/templates", json={"name": name}).status_code == 202
        assert c.post("/v3/templates", json={"name": "one"}).status_code == 202  # a rebuild is no new template
        _is_429(c.post("/v3/templates", json={"name": "three"}), "limit of 2 templates")
        assert other.post("/v3/templates", json={"name": "three"}).status_code == 202  # another team's count
        assert c.delete("/templates/two").status_code == 204
        assert c.post("/v3/templates", json={"name": "three"}).status_code == 202


def test_build_minutes_per_day(small: Server) -> None:
    key = small.key("quota-minutes")
    team = small.store.authenticate(key)
    assert team is not None
    with small.client(key) as c:
        answer = c.post("/v3/templates", json={"name": "slow"}).json()
        now = now_utc()
        small.store.add_build(TemplateBuildRecord(
            build_id=str(uuid.uuid4()), template_id=answer["templateID"], team_id=team, status="ready", tags=[],
            cpu_count=1, memory_mb=512, disk_mb=1024, created_at=now, updated_at=now,
            started_at=now - timedelta(minutes=3), finished_at=now - timedelta(minutes=1)))
        r = c.post(f"/v2/templates/{answer['templateID']}/builds/{answer['buildID']}",
                   json={"dockerfile": "FROM base\n"})
        _is_429(r, "build minutes")


def test_upload_bytes_per_team(small: Server) -> None:
    with small.client(small.key("quota-bytes")) as c:
        template_id = c.post("/v3/templates", json={"name": "files"}).json()["templateID"]
        data = os.urandom(2 * 2**20)  # incompressible: the stream itself is over the 1 MiB quota
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("big.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        files_hash = uuid.uuid4().hex * 2
        url = c.get(f"/templates/{template_id}/files/{files_hash}").json()["url"]
        _is_429(httpx.put(url, content=buf.getvalue(), trust_env=False), "limit of 1 MiB")
        assert c.get(f"/templates/{template_id}/files/{files_hash}").json()["present"] is False
        # what it unpacks to counts too: 2 MiB of zeros are a few KiB on the wire
        zeros = io.BytesIO()
        with tarfile.open(fileobj=zeros, mode="w:gz") as tar:
            info = tarfile.TarInfo("zeros.bin")
            info.size = 2 * 2**20
            tar.addfile(info, io.BytesIO(bytes(info.size)))
        assert len(zeros.getvalue()) < 2**20
        url = c.get(f"/templates/{template_id}/files/{files_hash}").json()["url"]
        _is_429(httpx.put(url, content=zeros.getvalue(), trust_env=False), "limit of 1 MiB")
        assert c.get(f"/templates/{template_id}/files/{files_hash}").json()["present"] is False
        # nothing of either was kept: no spool, no unpacked files
        root = small.data_dir / "template-files"
        assert not [p for p in root.rglob("*") if p.is_file()]
