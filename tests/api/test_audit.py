"""The action audit log end to end (issue 18) on a live `sandhive serve` (container backend), driven by the
released `e2b` SDK: a sandbox's trail (create, `echo audit-me` with exit code 0, a file write with its path, its
kill, in that order), key and network changes, the key id (never the key) on API actions, and
`sandhive audit --follow` printing an event that happens while it runs. Every wait is on a condition.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from e2b import CommandExitException, Sandbox

from tests.api.rig import SANDHIVE, Server, cli, container_server, create_key
from tests.helpers import stop_process_group, wait_until

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(600)]
TEAM = "auditors"


@pytest.fixture(scope="module")
def live() -> Iterator[Server]:
    with container_server("audit", TEAM, "--pool-size", "1") as server:
        yield server


@pytest.fixture(scope="module")
def key(live: Server) -> str:
    return live.key(TEAM)


def events(live: Server, key: str, **params: Any) -> list[dict[str, Any]]:
    with live.client(key) as c:
        response = c.get("/sandhive/audit", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return list(response.json())


def test_a_sandbox_trail_holds_create_command_write_and_kill_in_order(live: Server, key: str) -> None:
    sbx = Sandbox.create(timeout=120, api_key=key, api_url=live.url, sandbox_url=live.url)
    try:
        assert sbx.commands.run("echo audit-me").stdout == "audit-me\n"
        sbx.files.write("/tmp/audited.txt", "twelve bytes")
        sbx.files.remove("/tmp/audited.txt")
    finally:
        sbx.kill()

    def complete() -> list[dict[str, Any]] | None:
        trail = events(live, key, sandboxID=sbx.sandbox_id)
        return trail if any(e["action"] == "sandbox.kill" for e in trail) else None

    trail = wait_until(complete, 30, "the sandbox's kill in its audit log")
    actions = [e["action"] for e in trail]
    start = next(e for e in trail if e["action"] == "process.start" and "echo audit-me" in e["detail"]["args"])
    end = next(e for e in trail if e["action"] == "process.end" and e["detail"]["pid"] == start["detail"]["pid"])
    write = next(e for e in trail if e["action"] == "file.write")
    order = [actions.index("sandbox.create"), trail.index(start), trail.index(end), trail.index(write),
             actions.index("file.remove"), actions.index("sandbox.kill")]
    assert order == sorted(order), actions
    assert start["detail"]["cmd"] == "/bin/bash" and start["detail"]["pid"] > 0
    assert end["detail"]["exitCode"] == 0 and end["detail"]["durationMs"] is not None
    assert write["target"] == "/tmp/audited.txt" and write["detail"]["bytes"] >= len("twelve bytes")
    caller = live.store.caller(key)
    assert caller is not None and caller.key_id
    created = trail[actions.index("sandbox.create")]
    assert created["keyID"] == caller.key_id and key not in json.dumps(trail)
    assert start["keyID"] is None  # envd traffic carries the sandbox's token, not an API key
    assert [e["action"] for e in events(live, key, sandboxID=sbx.sandbox_id, action="process.*")][:2] == \
        ["process.start", "process.end"]


def test_a_background_command_left_unwatched_is_detached_then_ends_on_reconnect(live: Server, key: str) -> None:
    """A client that starts a background command and goes away leaves `process.detach`, not a start without an
    end; a client that reconnects and sees it end records its `process.end` (once)."""
    sbx = Sandbox.create(timeout=120, api_key=key, api_url=live.url, sandbox_url=live.url)
    try:
        handle = sbx.commands.run("while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 7", background=True)
        pid = handle.pid
        handle.disconnect()

        def detached() -> dict[str, Any] | None:
            return next((e for e in events(live, key, sandboxID=sbx.sandbox_id, action="process.detach")
                         if e["detail"]["pid"] == pid), None)

        wait_until(detached, 30, "the unwatched command's process.detach")
        again = sbx.commands.connect(pid)
        sbx.files.write("/tmp/go", "")
        with pytest.raises(CommandExitException) as ended:
            again.wait()
        assert ended.value.exit_code == 7

        def ended_once() -> list[dict[str, Any]] | None:
            ends = [e for e in events(live, key, sandboxID=sbx.sandbox_id, action="process.end")
                    if e["detail"]["pid"] == pid]
            return ends or None

        ends = wait_until(ended_once, 30, "the reconnected command's process.end")
        assert len(ends) == 1 and ends[0]["detail"]["exitCode"] == 7 and ends[0]["detail"]["reconnected"] is True
    finally:
        sbx.kill()


def test_key_create_revoke_and_network_change_appear(live: Server, key: str) -> None:
    other = create_key(live.data_dir, TEAM)
    prefix = other[:12]
    cli("keys", "revoke", prefix, "--data-dir", str(live.data_dir))
    sbx = Sandbox.create(timeout=120, api_key=key, api_url=live.url, sandbox_url=live.url)
    try:
        with live.client(key) as c:
            response = c.put(f"/sandboxes/{sbx.sandbox_id}/network", json={"denyOut": ["192.0.2.0/24"]})
        assert response.status_code == 204, response.text
    finally:
        sbx.kill()
    keys = [e for e in events(live, key, action="key.*") if e["detail"]["prefix"] == prefix]
    assert [e["action"] for e in keys] == ["key.create", "key.revoke"]
    network = events(live, key, sandboxID=sbx.sandbox_id, action="sandbox.network")
    assert len(network) == 1 and network[0]["detail"]["network"]["denyOut"] == ["192.0.2.0/24"]


def test_follow_prints_an_event_that_happens_while_it_runs(live: Server, key: str) -> None:
    env = {**os.environ, "SANDHIVE_API_URL": live.url, "SANDHIVE_API_KEY": key}
    proc = subprocess.Popen([str(SANDHIVE), "audit", "--follow", "--json", "--action", "key.create"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True).start()
    try:
        before = len(events(live, key, action="key.create"))
        wait_until(lambda: lines.qsize() >= before, 30, "the existing events printed")
        new = create_key(live.data_dir, TEAM)
        seen: list[dict[str, Any]] = []

        def printed() -> bool:
            while not lines.empty():
                seen.append(json.loads(lines.get()))
            return any(e["detail"]["prefix"] == new[:12] for e in seen)

        wait_until(printed, 30, "`sandhive audit --follow` printing the new key's creation",
                   show=lambda: (proc.poll(), seen))
    finally:
        stop_process_group(proc)


def test_pause_resume_snapshot_and_timeout_appear(live: Server, key: str) -> None:
    with live.client() as c:
        persistence = c.get("/health").json().get("persistence") or {}
    short = Sandbox.create(timeout=2, api_key=key, api_url=live.url, sandbox_url=live.url)
    sbx = Sandbox.create(timeout=120, api_key=key, api_url=live.url, sandbox_url=live.url)
    try:
        expected = ["sandbox.create"]
        if persistence.get("pauseModes"):
            assert sbx.pause() is True
            Sandbox.connect(sbx.sandbox_id, timeout=120, api_key=key, api_url=live.url, sandbox_url=live.url)
            expected += ["sandbox.pause", "sandbox.resume", "sandbox.connect"]
        if persistence.get("memorySnapshots"):
            snapshot = sbx.create_snapshot()
            assert Sandbox.delete_snapshot(snapshot.snapshot_id, api_key=key, api_url=live.url) is True
            expected += ["snapshot.create", "snapshot.delete"]
    finally:
        sbx.kill()
    actions = [e["action"] for e in events(live, key, sandboxID=sbx.sandbox_id)]
    assert actions == [*expected, "sandbox.kill"], (persistence, actions)
    timed_out = wait_until(lambda: events(live, key, sandboxID=short.sandbox_id, action="sandbox.timeout"), 60,
                           "the short sandbox's end at its timeout")
    assert timed_out[0]["keyID"] is None


def test_bad_queries_get_e2b_shaped_errors(live: Server, key: str) -> None:
    with live.client(key) as c:
        for params in ({"nextToken": "not-a-token"}, {"limit": 0}, {"limit": 1001}, {"since": "yesterday"}):
            answer = c.get("/sandhive/audit", params=params)
            assert answer.status_code == 400, (params, answer.text)
            assert answer.json()["code"] == 400 and answer.json()["message"], answer.text
        assert c.get("/sandhive/audit", params={"since": "2999-01-01T00:00:00Z"}).json() == []
    with live.client("e2b_" + "0" * 40) as stranger:
        assert stranger.get("/sandhive/audit").status_code == 401
