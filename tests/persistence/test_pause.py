"""Pause, list and connect with the released `e2b` SDK, on the container and the gvisor backend: a memory pause
keeps a background process and its in-memory state (CRIU on container, frozen in place on gvisor); a filesystem
pause keeps the files and drops the processes. The API's own answers (status codes, the quota) are the same code
whatever the backend and run on container only (`one_backend`), as does the second pause with a snapshot and a
fork (memory snapshots are the container backend's alone: docs/persistence.md)."""

from __future__ import annotations

import time

import httpx
import pytest
from e2b import Sandbox, SandboxQuery, SandboxState

from tests.helpers import wait_until

from .conftest import Live, counter, start_counter

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(600)]


def _listed(states: list[SandboxState]) -> set[str]:
    return {s.sandbox_id for s in Sandbox.list(query=SandboxQuery(state=states)).next_items()}


def _state(sandbox_id: str) -> str:
    return Sandbox.get_info(sandbox_id).state.value


def test_pause_then_connect_keeps_process_memory_and_files(live: Live) -> None:
    sandbox = Sandbox.create(timeout=300)
    try:
        start_counter(sandbox)
        before = wait_until(lambda: counter(sandbox) >= 3 and counter(sandbox), 30, "the counter to count")
        counted_from = time.monotonic()
        assert sandbox.pause() is True
        ran_before = time.monotonic() - counted_from  # the pause takes a while (gvisor: its files read out first)
        assert _state(sandbox.sandbox_id) == "paused"
        assert sandbox.sandbox_id in _listed([SandboxState.PAUSED])
        assert sandbox.sandbox_id in _listed([SandboxState.RUNNING, SandboxState.PAUSED])
        assert sandbox.sandbox_id not in _listed([SandboxState.RUNNING])
        time.sleep(1.0)  # nothing counts while paused

        resuming = time.monotonic()
        resumed = Sandbox.connect(sandbox.sandbox_id, timeout=120)
        assert _state(sandbox.sandbox_id) == "running"
        after = counter(resumed)
        # Went on from memory, not restarted at 1, and stood still while paused: at most a tick per 0.1 s of
        # the time it ran (during the pause and from the connect on).
        ran = ran_before + time.monotonic() - resuming
        assert before <= after <= before + ran / 0.1 + 2, (before, after, ran)
        wait_until(lambda: counter(resumed) > after, 30, "the counter to go on counting")
        assert resumed.files.read("/home/user/kept.txt") == "kept"
    finally:
        Sandbox.kill(sandbox.sandbox_id)


def test_filesystem_pause_keeps_files_not_processes(live: Live) -> None:
    sandbox = Sandbox.create(timeout=300)
    try:
        start_counter(sandbox)
        wait_until(lambda: counter(sandbox) >= 2, 30, "the counter to count")
        assert sandbox.pause(mode="filesystem") is True
        assert _state(sandbox.sandbox_id) == "paused"
        resumed = Sandbox.connect(sandbox.sandbox_id, timeout=120)
        assert resumed.files.read("/home/user/kept.txt") == "kept"
        first = counter(resumed)
        time.sleep(0.5)
        assert counter(resumed) == first  # the loop did not survive: only the files did
        assert resumed.commands.run("echo $HOME", user="user").stdout.strip() == "/home/user"  # /init ran again
    finally:
        Sandbox.kill(sandbox.sandbox_id)


@pytest.mark.one_backend
def test_connect_status_and_pause_errors(live: Live) -> None:
    """201 from connect when it resumed, 200 when it ran; 409 for a second pause, 404 for an unknown id and for
    another team's sandbox."""
    sandbox = Sandbox.create(timeout=300)
    other = live.server.key("persistence-other")
    try:
        with live.server.client(live.key) as api, live.server.client(other) as intruder:
            assert api.post(f"/sandboxes/{sandbox.sandbox_id}/connect", json={"timeout": 60}).status_code == 200
            assert intruder.post(f"/sandboxes/{sandbox.sandbox_id}/pause", json={}).status_code == 404
            assert api.post(f"/sandboxes/{sandbox.sandbox_id}/pause", json={}).status_code == 204
            second = api.post(f"/sandboxes/{sandbox.sandbox_id}/pause", json={})
            assert second.status_code == 409 and second.json()["code"] == 409
            assert intruder.post(f"/sandboxes/{sandbox.sandbox_id}/connect", json={"timeout": 60}).status_code == 404
            assert api.post("/sandboxes/inope00000000000000000/pause", json={}).status_code == 404
            resumed = api.post(f"/v2/sandboxes/{sandbox.sandbox_id}/connect", json={"timeout": 60})
            assert resumed.status_code == 201, resumed.text
            assert resumed.json()["sandboxID"] == sandbox.sandbox_id
            assert api.post(f"/sandboxes/{sandbox.sandbox_id}/resume", json={}).status_code == 409  # running
            health = httpx.get(f"{live.url}/health", trust_env=False).json()
            assert health["persistence"]["pauseModes"] == ["memory", "filesystem"]
        assert Sandbox.connect(sandbox.sandbox_id).commands.run("echo ok").stdout == "ok\n"
    finally:
        Sandbox.kill(sandbox.sandbox_id)


@pytest.mark.one_backend
def test_paused_quota_answers_429(live: Live) -> None:
    from .conftest import PAUSED_QUOTA

    team = live.server.key("persistence-quota")
    ids: list[str] = []
    try:
        with live.server.client(team) as api:
            for _ in range(PAUSED_QUOTA + 1):
                created = api.post("/v2/sandboxes", json={"templateID": "base", "timeout": 300})
                assert created.status_code == 201, created.text
                ids.append(created.json()["sandboxID"])
            for sandbox_id in ids[:PAUSED_QUOTA]:
                assert api.post(f"/sandboxes/{sandbox_id}/pause", json={"memory": False}).status_code == 204
            refused = api.post(f"/sandboxes/{ids[-1]}/pause", json={"memory": False})
            assert refused.status_code == 429 and refused.headers["Retry-After"]
            assert api.get(f"/sandboxes/{ids[-1]}").json()["state"] == "running"  # refused: it runs on
            # a paused sandbox is killed like any other, and frees its place in the quota
            assert api.delete(f"/sandboxes/{ids[0]}").status_code == 204
            assert api.get(f"/sandboxes/{ids[0]}").status_code == 404
            assert api.post(f"/sandboxes/{ids[-1]}/pause", json={"memory": False}).status_code == 204
    finally:
        with live.server.client(team) as api:
            for sandbox_id in ids:
                api.delete(f"/sandboxes/{sandbox_id}")


# A web server whose only state is in memory: each GET answers one more than the last.
COUNTING_SERVER = """
import http.server
hits = 0
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global hits
        hits += 1
        body = str(hits).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"""


@pytest.mark.backends("container")
def test_a_resumed_sandbox_with_a_listening_server_pauses_and_snapshots_again(live: Live) -> None:
    """Issue 14's second pause: a resumed sandbox (its envd brought back by CRIU) in which envd then acted as
    a user (a file write) and a process listens on a port must dump again, for a pause, a snapshot and a fork
    (`acting_user._set_dumpable`)."""
    sandbox = Sandbox.create(timeout=300)
    copies: list[Sandbox] = []

    def hit(sandbox_id: str) -> int | None:
        r = httpx.get(live.url, headers={"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": "8000"},
                      trust_env=False, timeout=60)
        return int(r.text) if r.status_code == 200 else None

    try:
        sandbox.files.write("/home/user/serve.py", COUNTING_SERVER)
        sandbox.commands.run("python3 /home/user/serve.py", background=True)
        assert wait_until(lambda: hit(sandbox.sandbox_id), 60, "the sandbox's web server") == 1
        assert sandbox.pause() is True
        resumed = Sandbox.connect(sandbox.sandbox_id, timeout=120)
        assert hit(sandbox.sandbox_id) == 2
        resumed.files.write("/home/user/after.txt", "after")  # envd acts as the user in its restored memory

        assert resumed.pause() is True
        again = Sandbox.connect(sandbox.sandbox_id, timeout=120)
        assert hit(sandbox.sandbox_id) == 3  # the same server process, its count in memory
        assert again.files.read("/home/user/after.txt") == "after"

        snap = again.create_snapshot()
        copies.append(Sandbox.create(snap.snapshot_id, timeout=120))
        assert hit(copies[0].sandbox_id) == 4
        assert hit(sandbox.sandbox_id) == 4  # the source runs on, its own count

        # A sandbox restored from a snapshot is dumped again too: a fork of it after envd acted as the user.
        copies[0].files.write("/home/user/copy.txt", "copy")
        (fork,) = copies[0].fork(count=1, timeout=120)
        assert isinstance(fork, Sandbox), fork
        copies.append(fork)
        assert hit(fork.sandbox_id) == 5
        assert fork.files.read("/home/user/copy.txt") == "copy"
    finally:
        for copy in copies:
            Sandbox.kill(copy.sandbox_id)
        Sandbox.kill(sandbox.sandbox_id)
