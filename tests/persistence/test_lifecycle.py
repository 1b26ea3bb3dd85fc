"""E2B's lifecycle with the released `e2b` SDK, on the container and the gvisor backend: a timeout pauses instead
of killing (`on_timeout: "pause"`), `connect` resumes with everything, and with `auto_resume` the first proxied
request to one of the sandbox's ports wakes it (on gvisor the same frozen process answers). That a sandbox
without auto-resume stays paused is the proxy's decision, the same whatever the backend (`one_backend`)."""

from __future__ import annotations

import httpx
import pytest
from e2b import Sandbox

from tests.helpers import wait_until

from .conftest import Live, counter, start_counter

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(600)]


def _state(sandbox_id: str) -> str:
    return Sandbox.get_info(sandbox_id).state.value


def test_timeout_pauses_and_connect_resumes_with_everything(live: Live) -> None:
    sandbox = Sandbox.create(timeout=6, lifecycle={"on_timeout": "pause"})
    try:
        info = Sandbox.get_info(sandbox.sandbox_id)
        assert info.lifecycle is not None and info.lifecycle["on_timeout"] == "pause"
        start_counter(sandbox)
        before = wait_until(lambda: counter(sandbox) >= 3 and counter(sandbox), 30, "the counter to count")
        wait_until(lambda: _state(sandbox.sandbox_id) == "paused", 120, "the timeout to pause the sandbox")
        resumed = Sandbox.connect(sandbox.sandbox_id, timeout=120)
        assert _state(sandbox.sandbox_id) == "running"
        after = counter(resumed)
        assert after >= before  # went on from memory (it counted until the pause, then stood still)
        wait_until(lambda: counter(resumed) > after, 30, "the counter to go on counting")
        assert resumed.files.read("/home/user/kept.txt") == "kept"
    finally:
        Sandbox.kill(sandbox.sandbox_id)


def test_a_proxied_request_resumes_an_auto_resume_sandbox(live: Live) -> None:
    sandbox = Sandbox.create(timeout=300, lifecycle={"on_timeout": "pause", "auto_resume": True})
    headers = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "8000"}
    try:
        info = Sandbox.get_info(sandbox.sandbox_id)
        assert info.lifecycle == {"on_timeout": "pause", "auto_resume": True}
        sandbox.files.write("/home/user/www/index.html", "hello from before the pause")
        sandbox.commands.run("cd /home/user/www && python3 -m http.server 8000", background=True)

        def served() -> str | None:
            r = httpx.get(live.url, headers=headers, trust_env=False, timeout=30)
            return r.text if r.status_code == 200 else None

        assert wait_until(served, 60, "the sandbox's web server") == "hello from before the pause"
        assert sandbox.pause() is True
        assert _state(sandbox.sandbox_id) == "paused"
        # The first request after the pause wakes it; the server inside is the same process, still listening.
        assert httpx.get(live.url, headers=headers, trust_env=False, timeout=120).text == "hello from before the pause"
        assert _state(sandbox.sandbox_id) == "running"
    finally:
        Sandbox.kill(sandbox.sandbox_id)


@pytest.mark.one_backend
def test_a_sandbox_without_auto_resume_stays_paused_on_traffic(live: Live) -> None:
    sandbox = Sandbox.create(timeout=300)
    try:
        assert sandbox.pause(mode="filesystem") is True
        r = httpx.get(live.url, headers={"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "8000"},
                      trust_env=False, timeout=30)
        assert r.status_code == 502 or r.status_code == 404, r.text
        assert _state(sandbox.sandbox_id) == "paused"
    finally:
        Sandbox.kill(sandbox.sandbox_id)
