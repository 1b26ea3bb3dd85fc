"""`sandhive sandbox ...` and `sandhive template list` against a live server: `--json` parsed, tables read,
`exec` streaming and exit codes."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from tests.api.rig import SANDHIVE
from tests.cli.conftest import Cli

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]  # the first create may build `base`


def test_create_prints_the_id_and_json_describes_it(cli: Cli) -> None:
    sandbox_id = cli.create()
    assert sandbox_id.startswith("i") and len(sandbox_id) == 21 and "\n" not in sandbox_id
    data = json.loads(cli.ok("sandbox", "create", "--json", "-m", "owner=cli", "-m", "eq=a=b", "--timeout", "120"))
    cli.created.append(data["sandbox_id"])
    assert data["template_id"] == "base" and data["state"] == "running"
    assert data["metadata"] == {"owner": "cli", "eq": "a=b"}
    assert data["cpu_count"] >= 1 and data["memory_mb"] > 0
    lifetime = datetime.fromisoformat(data["end_at"]) - datetime.fromisoformat(data["started_at"])
    assert 110 <= lifetime.total_seconds() <= 130


def test_list_filters_by_metadata_and_state(cli: Cli) -> None:
    run = uuid.uuid4().hex[:8]
    ids = {cli.create("-m", f"run={run}") for _ in range(2)}
    listed = json.loads(cli.ok("sandbox", "list", "--json", "-m", f"run={run}"))
    assert {s["sandbox_id"] for s in listed} == ids
    assert all(s["metadata"] == {"run": run} and s["state"] == "running" for s in listed)
    assert json.loads(cli.ok("sandbox", "list", "--json", "-m", f"run={run}", "--state", "paused")) == []
    assert len(json.loads(cli.ok("sandbox", "list", "--json", "-m", f"run={run}", "--state", "running"))) == 2
    table = cli.ok("sandbox", "list", "-m", f"run={run}")
    assert all(sandbox_id in table for sandbox_id in ids) and "SANDBOX ID" in table
    assert "No sandboxes match" in cli.ok("sandbox", "list", "-m", "run=nothing-has-this")


def test_info_and_metrics(cli: Cli, sandbox_id: str) -> None:
    info = json.loads(cli.ok("sandbox", "info", sandbox_id, "--json"))
    assert info["sandbox_id"] == sandbox_id and info["template_id"] == "base" and info["envd_version"]
    assert sandbox_id in cli.ok("sandbox", "info", sandbox_id)
    samples = json.loads(cli.ok("sandbox", "metrics", sandbox_id, "--json"))
    assert len(samples) >= 1  # sampled at once, then every 5 s (node/metrics_history.py)
    m = samples[0]
    assert m["cpu_count"] >= 1 and m["cpu_used_pct"] >= 0 and 0 < m["mem_used"] <= m["mem_total"]
    assert m["disk_total"] > 0
    assert "MEMORY USED" in cli.ok("sandbox", "metrics", sandbox_id)


def test_kill_several_then_not_found(cli: Cli) -> None:
    a, b = cli.create(), cli.create()
    out = cli.ok("sandbox", "kill", a, b)
    assert f"Killed {a}" in out and f"Killed {b}" in out
    again = cli("sandbox", "kill", a, "inothere000000000000")
    assert again.returncode == 3 and a in again.stderr and "not found" in again.stderr
    assert cli("sandbox", "info", a).returncode == 3


def test_exec_exit_code_and_separate_streams(cli: Cli, sandbox_id: str) -> None:
    assert cli("sandbox", "exec", sandbox_id, "--", "sh", "-c", "exit 7").returncode == 7
    proc = cli("sandbox", "exec", sandbox_id, "--", "echo out; echo err >&2; exit 3")
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
    proc = cli("sandbox", "exec", sandbox_id, "--", "echo", "a  b", "$HOME")  # several args: an argv, quoted
    assert (proc.returncode, proc.stdout) == (0, "a  b $HOME\n")
    proc = cli("sandbox", "exec", "--cwd", "/tmp", "-e", "X=1", sandbox_id, "--", "echo $X $(pwd) $(whoami)")
    assert proc.stdout == "1 /tmp user\n"


def test_exec_streams_output_as_it_comes(cli: Cli, sandbox_id: str) -> None:
    cmd = [str(SANDHIVE), "sandbox", "exec", sandbox_id, "--", "echo first; sleep 4; echo second"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=cli.env)
    try:  # measured between the two lines, not from the CLI's start (a loaded host takes seconds to start Python)
        assert proc.stdout is not None and proc.stdout.readline() == "first\n"
        first = time.monotonic()
        assert proc.stdout.readline() == "second\n"
        assert time.monotonic() - first > 2.0, "the first line waited for the command to end (4 s apart in it)"
        assert proc.wait(30) == 0 and proc.stdout.read() == ""
    finally:
        proc.kill()
        proc.wait()


def test_exec_timeout_and_env_from_create(cli: Cli) -> None:
    sandbox_id = cli.create("-e", "GREETING=hi there")
    assert cli.ok("sandbox", "exec", sandbox_id, "--", "echo $GREETING") == "hi there\n"
    proc = cli("sandbox", "exec", "--timeout", "1", sandbox_id, "--", "sleep 30")
    assert proc.returncode == 124 and "--timeout" in proc.stderr


def test_logs_and_follow(cli: Cli, live_log: Path, sandbox_id: str) -> None:
    log = live_log / sandbox_id / "envd.log"  # what the container runtime serves as the sandbox's logs
    with log.open("a") as f:
        f.write("line one\nline two\n")
    assert cli.ok("sandbox", "logs", sandbox_id).splitlines()[-2:] == ["line one", "line two"]
    out = cli.ok("sandbox", "logs", sandbox_id, "--json", "--limit", "1")
    entries = [json.loads(line) for line in out.splitlines()]
    assert [e["line"] for e in entries] == ["line two"] and entries[0]["timestamp"]

    follow = subprocess.Popen([str(SANDHIVE), "sandbox", "logs", sandbox_id, "--follow", "--limit", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli.env)
    try:
        assert follow.stdout is not None and follow.stdout.readline() == "line two\n"
        with log.open("a") as f:
            f.write("line three\n")
        assert follow.stdout.readline() == "line three\n"
        cli.ok("sandbox", "kill", sandbox_id)
        assert follow.wait(30) == 0, "--follow did not end with the sandbox"
        assert "has ended" in (follow.stderr.read() if follow.stderr else "")
    finally:
        follow.kill()
        follow.wait()


def test_template_list(cli: Cli, sandbox_id: str) -> None:
    templates = json.loads(cli.ok("template", "list", "--json"))
    base = next(t for t in templates if t["template_id"] == "base")
    assert base["build_status"] == "ready" and base["public"] is True and "base" in base["aliases"]
    assert base["cpu_count"] >= 1 and base["memory_mb"] > 0 and base["disk_size_mb"] > 0 and base["created_at"]
    assert "TEMPLATE ID" in cli.ok("template", "list")


@pytest.fixture()
def live_log(cli: Cli) -> Path:
    """Where the container runtime keeps each sandbox's files (its envd.log is what the logs API reads)."""
    return cli.server.data_dir / "sandboxes"
