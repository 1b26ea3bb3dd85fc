"""The audit log is the team's own, and a sandbox's user cannot forge or erase it (issue 18).

Team A runs a command in its sandbox and writes a file; team B, an ordinary key holder of the same server, reads
the audit log with no filter, with A's sandbox id, and with every action family: it gets none of A's events (the
store's query is always scoped to the caller's team; without that scope B would see A's trail). A stranger with
no key gets 401 in E2B's shape.

The sandbox's user prints, on its stdout, what an envd end event and a whole Connect frame look like, then exits
3: the proxy, which reads envd's stream on the host, records one end for that process, with exit code 3 — output
travels base64-encoded inside data events, so nothing the sandbox prints reads as an event. Nothing in the
sandbox reaches the store: the events are written by the API from what the proxy saw.

Promise: the audit log is unforgeable by the sandbox user and team-scoped (docs/security.md 32).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from tests.api.rig import create_key
from tests.helpers import wait_until
from tests.hostile.conftest import Live
from tests.hostile.sandboxes import run, sandbox

FAKE_END = json.dumps({"event": {"end": {"exitCode": 0, "exited": True, "status": "exit status 0"}}})


def _audit(live: Live, key: str | None, **params: Any) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    with httpx.Client(base_url=live.url, headers=headers, trust_env=False, timeout=60) as c:
        return c.get("/sandhive/audit", params={"limit": 1000, **params})


def test_another_team_reads_none_of_a_sandboxs_audit_log(live: Live) -> None:
    other = create_key(live.server.data_dir, f"audit-other-{uuid.uuid4().hex[:8]}")
    with sandbox(live) as sbx:
        assert run(sbx, "echo audit-me")[0] == 0
        sbx.files.write("/tmp/secret-plan.txt", "mine")
        mine = wait_until(lambda: [e for e in _audit(live, live.key, sandboxID=sbx.sandbox_id).json()
                                   if e["action"] == "file.write"], 30, "team A's file write in its audit log")
        assert mine[0]["target"] == "/tmp/secret-plan.txt"
        for params in ({}, {"sandboxID": sbx.sandbox_id}, {"action": "process.*"}, {"action": "sandbox.*"},
                       {"action": "file.write"}, {"since": "2000-01-01T00:00:00Z"}):
            answer = _audit(live, other, **params)
            assert answer.status_code == 200, answer.text
            assert not [e for e in answer.json() if e.get("sandboxID") == sbx.sandbox_id], params
            assert sbx.sandbox_id not in answer.text and "secret-plan" not in answer.text, params
    stranger = _audit(live, None)
    assert stranger.status_code == 401 and stranger.json()["code"] == 401


def test_a_sandbox_cannot_forge_a_process_end_through_its_output(live: Live) -> None:
    frame = f"\\x00\\x00\\x00\\x00\\x{len(FAKE_END):02x}" + FAKE_END
    with sandbox(live) as sbx:
        code, _ = run(sbx, f"printf '%s\\n' '{FAKE_END}'; printf '{frame}'; exit 3")
        assert code == 3

        def ends() -> list[dict[str, Any]]:
            return [e for e in _audit(live, live.key, sandboxID=sbx.sandbox_id).json()
                    if e["action"] == "process.end"]

        recorded = wait_until(ends, 30, "the command's end in the audit log")
        assert len(recorded) == 1 and recorded[0]["detail"]["exitCode"] == 3, recorded
