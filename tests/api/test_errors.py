"""Every error comes back in E2B's shape `{"code", "message"}` with the right status, never a traceback."""

from __future__ import annotations

import httpx
import pytest

from tests.api.rig import Server

JSON = {"Content-Type": "application/json"}


def assert_error(r: httpx.Response, status: int, contains: str = "") -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["code"], int) and body["code"] == status
    assert isinstance(body["message"], str) and body["message"]
    assert contains in body["message"], body
    assert "Traceback" not in r.text
    return body


def test_health_needs_no_key(server: Server) -> None:
    r = httpx.get(f"{server.url}/health", trust_env=False)
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "version": "0.1.0", "backend": "none", "platform": None, "accelerator": None,
                        "persistence": {"pauseModes": [], "memorySnapshots": False}}


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v2/sandboxes"), ("GET", "/sandboxes"), ("POST", "/v2/sandboxes"), ("GET", "/sandboxes/iabc"),
    ("DELETE", "/sandboxes/iabc"), ("POST", "/sandboxes/iabc/timeout"), ("GET", "/sandboxes/iabc/metrics"),
])
def test_missing_key_is_401(server: Server, method: str, path: str) -> None:
    with server.client() as c:
        assert_error(c.request(method, path, json={"templateID": "base"}), 401, "API key")


def test_invalid_key_is_401(server: Server) -> None:
    with server.client("e2b_" + "0" * 40) as c:
        assert_error(c.get("/v2/sandboxes"), 401, "Invalid API key")


def test_key_header_is_case_insensitive(server: Server, api_key: str) -> None:
    for name in ("X-API-KEY", "x-api-key", "X-Api-Key"):
        r = httpx.get(f"{server.url}/v2/sandboxes", headers={name: api_key}, trust_env=False)
        assert r.status_code == 200, (name, r.text)


def test_unknown_route_is_404(server: Server, api_key: str) -> None:
    with server.client(api_key) as c:
        assert_error(c.get("/no/such/route"), 404, "/no/such/route")
        assert_error(c.get("/v3/sandboxes"), 404)


def test_wrong_method_is_405(server: Server, api_key: str) -> None:
    with server.client(api_key) as c:
        r = c.put("/v2/sandboxes", json={})
        assert_error(r, 405, "PUT")
        assert "POST" in r.headers["allow"]
        assert_error(c.post("/health"), 405)


def test_unknown_sandbox_is_404(server: Server, api_key: str) -> None:
    with server.client(api_key) as c:
        for method, path in [("GET", "/sandboxes/inope"), ("DELETE", "/sandboxes/inope"),
                             ("POST", "/v2/sandboxes/inope/connect"), ("POST", "/sandboxes/inope/connect"),
                             ("GET", "/sandboxes/inope/metrics"), ("GET", "/sandboxes/inope/logs"),
                             ("POST", "/sandboxes/inope/refreshes"), ("POST", "/sandboxes/inope/pause"),
                             ("POST", "/sandboxes/inope/resume")]:
            assert_error(c.request(method, path, json={}), 404, "Sandbox inope not found")
        assert_error(c.post("/sandboxes/inope/timeout", json={"timeout": 10}), 404)


@pytest.mark.parametrize(("content", "headers", "message"), [
    (b"{not json", JSON, "not valid JSON"),
    (b"[]", JSON, "JSON object"),
    (b'{"templateID": "base"}', {}, "JSON object"),  # no Content-Type: not parsed as JSON
    (b"{}", JSON, "templateID"),
    (b'{"templateID": "base", "timeout": "soon"}', JSON, "timeout"),
    (b'{"templateID": "base", "metadata": {"a": 1}}', JSON, "metadata"),
    (b'{"templateID": "base", "timeout": 0}', JSON, "Timeout must be greater than 0"),
    (b'{"templateID": "base", "timeout": -5}', JSON, "Timeout must be greater than 0"),
    (b'{"templateID": "base", "timeout": 99999999999999}', JSON, "Timeout cannot be greater than"),
    (b'{"templateID": "base", "autoPause": true}', JSON, "autoPause"),
    (b'{"templateID": "base", "network": {"egressProxy": {"address": "proxy.test:1080"}}}', JSON, "network"),
])
def test_bad_create_bodies_are_400(server: Server, api_key: str, content: bytes, headers: dict, message: str) -> None:
    with server.client(api_key) as c:
        for path in ("/v2/sandboxes", "/sandboxes"):
            assert_error(c.post(path, content=content, headers=headers), 400, message)


def test_bad_idempotency_key_is_400(server: Server, api_key: str) -> None:
    with server.client(api_key) as c:
        assert_error(c.post("/v2/sandboxes", json={"templateID": "base"}, headers={"Idempotency-Key": "Not_Valid"}),
                     400, "Idempotency-Key")


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "nextToken=garbage", "state=killed",
                                   "order=sideways", "startedAfter=yesterday", "startedAfter=2026-01-01T00:00:00"])
def test_bad_list_queries_are_400(server: Server, api_key: str, query: str) -> None:
    with server.client(api_key) as c:
        assert_error(c.get(f"/v2/sandboxes?{query}"), 400)


def test_bad_timeout_bodies_are_400(server: Server, api_key: str) -> None:
    with server.client(api_key) as c:
        for body in ({}, {"timeout": "x"}, {"timeout": 0}):
            assert_error(c.post("/sandboxes/inope/timeout", json=body), 400)


def test_create_without_backend_is_500_e2b_shaped(server: Server, api_key: str) -> None:
    with server.client(api_key) as c:
        body = assert_error(c.post("/v2/sandboxes", json={"templateID": "base"}), 500, "no sandbox backend")
    assert body["error_code"] == "sandbox_no_compatible_node"


def test_failed_create_releases_its_idempotency_key(server: Server, api_key: str) -> None:
    """A create that failed leaves no claim behind: the retry with the same key is tried again (500, not 409)."""
    with server.client(api_key) as c:
        for _ in range(2):
            r = c.post("/v2/sandboxes", json={"templateID": "base"}, headers={"Idempotency-Key": "retry-1"})
            assert_error(r, 500, "no sandbox backend")


def test_sdk_raises_clean_exceptions(server: Server, api_key: str) -> None:
    """The released SDK parses every one of these errors instead of crashing on the body."""
    from e2b import Sandbox
    from e2b.exceptions import AuthenticationException, SandboxException, SandboxNotFoundException

    opts = dict(api_url=server.url, api_key=api_key)
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_url=server.url, api_key="e2b_bad").next_items()
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info("inope", **opts)
    assert Sandbox.kill("inope", **opts) is False
    with pytest.raises(SandboxException, match="500: This server runs no sandbox backend"):
        Sandbox.create(**opts)
