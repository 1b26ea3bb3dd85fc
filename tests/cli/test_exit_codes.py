"""Exit codes scripts rely on (docs/cli.md), each with a message that says what to do and no traceback."""

from __future__ import annotations

import pytest

from tests.api.rig import Server
from tests.cli.conftest import Cli, clean_env, run
from tests.helpers import free_port

pytestmark = pytest.mark.needs_backend

MISSING = "inothere000000000000"


@pytest.mark.parametrize("args", [("sandbox", "info", MISSING), ("sandbox", "metrics", MISSING),
                                  ("sandbox", "logs", MISSING), ("sandbox", "kill", MISSING),
                                  ("sandbox", "exec", MISSING, "--", "true"), ("sandbox", "create", "-t", "no-such")])
def test_not_found_is_3(cli: Cli, args: tuple[str, ...]) -> None:
    proc = cli(*args)
    assert proc.returncode == 3, proc.stderr
    assert "not found" in proc.stderr


def test_wrong_key_is_4(cli: Cli) -> None:
    for args in (("sandbox", "list"), ("template", "list"), ("sandbox", "info", MISSING)):
        proc = cli(*args, SANDHIVE_API_KEY="e2b_" + "0" * 40)
        assert proc.returncode == 4, proc.stderr
        assert "refused" in proc.stderr and "sandhive keys create" in proc.stderr


def test_no_key_anywhere_is_4(live: Server, tmp_path) -> None:
    proc = run("sandbox", "list", env=clean_env(tmp_path, SANDHIVE_API_URL=live.url))
    assert proc.returncode == 4 and "no API key" in proc.stderr and "sandhive auth login" in proc.stderr


@pytest.mark.parametrize("args", [("sandbox", "list", "--json"), ("sandbox", "create"), ("template", "list"),
                                  ("sandbox", "exec", MISSING, "--", "true"), ("auth", "login", "--api-key", "k")])
def test_no_server_is_5(tmp_path, args: tuple[str, ...]) -> None:
    env = clean_env(tmp_path, SANDHIVE_API_URL=f"http://127.0.0.1:{free_port()}", SANDHIVE_API_KEY="e2b_x")
    proc = run(*args, env=env)
    assert proc.returncode == 5, proc.stderr
    assert "is `sandhive serve` running? start it with `make up` (as root)" in proc.stderr.lower()
    assert proc.stdout == ""


@pytest.mark.parametrize("args", [("sandbox", "create", "-m", "no-equals-sign"), ("sandbox", "list", "--state", "x"),
                                  ("sandbox", "exec", MISSING), ("sandbox", "list", "--url", "not-a-url"),
                                  ("sandbox", "shell", MISSING)])
def test_usage_errors_are_2(cli: Cli, args: tuple[str, ...]) -> None:
    proc = cli(*args)  # `shell` with no terminal on stdin is one: subprocess gives it a pipe
    assert proc.returncode == 2, proc.stderr


def test_exec_propagates_the_commands_exit_code(cli: Cli, sandbox_id: str) -> None:
    assert cli("sandbox", "exec", sandbox_id, "--", "exit 7").returncode == 7
    assert cli("sandbox", "exec", sandbox_id, "--", "true").returncode == 0
