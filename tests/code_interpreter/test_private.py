"""A code interpreter with private ports (issue 15 through issue 16's proxy): the released
`e2b_code_interpreter` sends `E2B-Traffic-Access-Token` on every call to port 49999 when the create answered a
`trafficAccessToken`, so `run_code` works; a caller without it gets E2B's 403."""

from __future__ import annotations

import httpx
import pytest
from e2b_code_interpreter import Sandbox

from tests.api.rig import Server

pytestmark = [pytest.mark.timeout(1200), pytest.mark.one_backend]


def test_run_code_works_on_a_private_sandbox_and_strangers_get_403(
        sandbox: Sandbox, live: tuple[Server, str]) -> None:
    # `sandbox` (the session's) made sure the template is built; this one starts from it in seconds
    private = Sandbox.create(timeout=300, network={"allow_public_traffic": False})
    try:
        assert private.traffic_access_token
        assert private.run_code("6*7").text == "42"
        server, _ = live
        headers = {"E2b-Sandbox-Id": private.sandbox_id, "E2b-Sandbox-Port": "49999",
                   "X-Access-Token": private._envd_access_token or ""}
        refused = httpx.post(f"{server.url}/execute", json={"code": "1"}, headers=headers, timeout=30,
                             trust_env=False)
        assert refused.status_code == 403 and "traffic access token" in refused.json()["message"]
    finally:
        private.kill()
