"""Sandhive's own SDK against `httpx.MockTransport`: how each wire answer becomes a typed exception, and what a
call sends (no server). The SDK retries nothing itself: a refused call raises at once, and its message says when
a retry is worth it; these tests pin that down too (one request per call)."""

from __future__ import annotations

import json

import httpx
import pytest

from sandhive.sdk import AsyncSandbox, Sandbox
from sandhive.sdk.exceptions import (
    AuthenticationException,
    InvalidArgumentException,
    RateLimitException,
    SandboxException,
    SandboxNotFoundException,
    ServerUnreachableException,
)

SID = "iabcdefghij0123456789"


class Api:
    """A fake control plane: answers each request with `answer`, records what was asked."""

    def __init__(self, status: int, body: object = None) -> None:
        self.status, self.body = status, body
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if isinstance(self.body, Exception):
            raise self.body
        return httpx.Response(self.status, json=self.body)

    def opts(self) -> dict:
        return {"api_key": "sh_test", "api_url": "http://sandhive.test", "transport": httpx.MockTransport(self)}


def e2b_error(code: int, message: str) -> dict:
    return {"code": code, "message": message}


@pytest.mark.parametrize(("status", "exc", "words"), [
    (404, SandboxNotFoundException, f"sandbox {SID} not found"),
    (401, AuthenticationException, "sandhive keys create"),
    (429, RateLimitException, "wait and retry"),
    (400, InvalidArgumentException, "Timeout must be greater than 0"),
    (503, SandboxException, "retry shortly"),
])
def test_error_answers_map_to_typed_exceptions(status: int, exc: type[Exception], words: str) -> None:
    api = Api(status, e2b_error(status, "Timeout must be greater than 0" if status == 400 else "nope"))
    with pytest.raises(exc, match=words.replace("(", r"\(")):
        Sandbox.get_info(SID, **api.opts())
    assert len(api.requests) == 1, "the SDK retries nothing by itself"
    assert api.requests[0].url.path == f"/sandboxes/{SID}"
    assert api.requests[0].headers["X-API-Key"] == "sh_test"


def test_a_404_is_not_mistaken_for_success_and_kill_of_a_missing_sandbox_is_false() -> None:
    api = Api(404, e2b_error(404, f"sandbox {SID} not found"))
    assert Sandbox.kill(SID, **api.opts()) is False
    assert [r.method for r in api.requests] == ["DELETE"]


def test_nobody_listening_says_how_to_start_a_server() -> None:
    api = Api(0, httpx.ConnectError("connection refused"))
    with pytest.raises(ServerUnreachableException, match="no server at http://sandhive.test"):
        Sandbox.get_info(SID, **api.opts())


def test_a_read_timeout_is_a_timeout_exception() -> None:
    api = Api(0, httpx.ReadTimeout("slow"))
    with pytest.raises(TimeoutError):
        Sandbox.get_info(SID, **api.opts())


def test_a_non_json_error_body_still_maps_by_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, text="<html>slow down</html>")

    with pytest.raises(RateLimitException, match="slow down"):
        Sandbox.get_info(SID, api_key="k", api_url="http://sandhive.test", transport=httpx.MockTransport(handler))


async def test_the_async_face_maps_errors_the_same_way() -> None:
    api = Api(404, e2b_error(404, "gone"))
    with pytest.raises(SandboxNotFoundException, match=SID):
        await AsyncSandbox.get_info(SID, **api.opts())
    api401 = Api(401, e2b_error(401, "Invalid API key"))
    with pytest.raises(AuthenticationException):
        await AsyncSandbox.get_info(SID, **api401.opts())


def test_create_sends_the_e2b_body_and_reads_the_answer() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(201, json={"templateID": "base", "sandboxID": SID, "clientID": "sandhive",
                                         "envdVersion": "0.6.4", "envdAccessToken": "tok"})

    sbx = Sandbox.create("base", timeout=30, metadata={"run": "1"}, api_key="k", api_url="http://sandhive.test",
                         transport=httpx.MockTransport(handler))
    assert sbx.sandbox_id == SID
    assert seen[0]["templateID"] == "base" and seen[0]["timeout"] == 30 and seen[0]["metadata"] == {"run": "1"}
