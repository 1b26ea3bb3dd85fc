"""The SDK's template build flow, both faces, against `httpx.MockTransport` standing in for the API.

Every request of a build — the REST calls and the tar's upload to its signed URL — goes through the SDK's one
transport (`sdk/transport.py`), so it carries the SDK's User-Agent, and an upload's failure surfaces as
`FileUploadException` naming what was uploaded.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import httpx
import pytest

from sandhive import AsyncTemplate, FileUploadException, Template
from sandhive.sdk.config import USER_AGENT

API = "http://api.test"
KEY = "e2b_" + "1" * 40


class FakeApi:
    """Answers a build's calls as the server does; records what it was sent."""

    def __init__(self, upload_status: int = 201) -> None:
        self.upload_status = upload_status
        self.requests: list[httpx.Request] = []
        self.uploaded = b""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if request.method == "POST" and path == "/v3/templates":
            return httpx.Response(202, json={"templateID": "t1", "buildID": "b1", "tags": ["default"]})
        if request.method == "GET" and path.startswith("/templates/t1/files/"):
            return httpx.Response(201, json={"present": False, "url": f"{API}/upload/t1?signature=s"})
        if request.method == "PUT" and path == "/upload/t1":
            self.uploaded = request.content
            return httpx.Response(self.upload_status, json={"code": self.upload_status, "message": "disk full"})
        if request.method == "POST" and path == "/v2/templates/t1/builds/b1":
            return httpx.Response(202)
        if request.method == "GET" and path == "/templates/t1/builds/b1/status":
            entries = [{"timestamp": "2026-12-05T00:00:00Z", "level": "info", "message": "step 1"}]
            offset = int(request.url.params.get("logsOffset", 0))
            return httpx.Response(200, json={"buildID": "b1", "templateID": "t1", "status": "ready",
                                             "logEntries": entries[offset:]})
        return httpx.Response(404, json={"code": 404, "message": f"no such route: {request.method} {path}"})


def _template(root: Path, face: type[Template] | type[AsyncTemplate]) -> object:
    (root / "Dockerfile").write_text("FROM debian:bookworm\nCOPY app.txt /app.txt\n")
    (root / "app.txt").write_text("hello\n")
    return face(file_context_path=root).from_dockerfile("Dockerfile")


def _names(body: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(body))) as tar:
        return sorted(tar.getnames())


def _check_build(api: FakeApi) -> None:
    steps = [(r.method, r.url.path) for r in api.requests]
    assert steps[0] == ("POST", "/v3/templates") and ("PUT", "/upload/t1") in steps
    assert steps[-1] == ("GET", "/templates/t1/builds/b1/status")
    assert all(r.headers["User-Agent"] == USER_AGENT for r in api.requests)  # the SDK's transport sent each
    put = next(r for r in api.requests if r.method == "PUT")
    assert "X-API-Key" not in put.headers  # the signed URL authorises the upload
    assert int(put.headers["Content-Length"]) == len(api.uploaded) > 0
    assert "app.txt" in _names(api.uploaded)


def test_a_sync_build_goes_through_the_transport(tmp_path: Path) -> None:
    api, logs = FakeApi(), []
    info = Template.build(_template(tmp_path, Template), "app", on_build_logs=logs.append, api_key=KEY,  # type: ignore[arg-type]
                          api_url=API, transport=httpx.MockTransport(api))
    assert (info.template_id, info.build_id) == ("t1", "b1")
    assert "step 1" in [entry.message for entry in logs]
    _check_build(api)


async def test_an_async_build_goes_through_the_transport(tmp_path: Path) -> None:
    api = FakeApi()
    info = await AsyncTemplate.build(_template(tmp_path, AsyncTemplate), "app", api_key=KEY,  # type: ignore[arg-type]
                                     api_url=API, transport=httpx.MockTransport(api))
    assert (info.template_id, info.build_id) == ("t1", "b1")
    _check_build(api)


def test_a_failed_upload_says_what_it_was_uploading(tmp_path: Path) -> None:
    api = FakeApi(upload_status=500)
    with pytest.raises(FileUploadException, match=r"uploading the build context .* failed: .*disk full"):
        Template.build(_template(tmp_path, Template), "app", api_key=KEY, api_url=API,  # type: ignore[arg-type]
                       transport=httpx.MockTransport(api))
    assert not any(r.url.path.startswith("/v2/templates/") for r in api.requests)  # never started
