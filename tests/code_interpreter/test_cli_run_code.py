"""`sandhive sandbox run-code` (the console script, in a subprocess) against this suite's live server and its
session sandbox: output streamed, results printed, images saved, errors and timeouts as exit codes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from e2b_code_interpreter import Sandbox

from tests.api.rig import SANDHIVE, Server
from tests.cli.conftest import clean_env

pytestmark = [pytest.mark.timeout(600), pytest.mark.one_backend]
PLOT = """
import pandas as pd
import matplotlib.pyplot as plt
print("printed first", flush=True)
plt.plot([1, 2, 3], [1, 4, 9])
plt.title("squares")
plt.show()
pd.DataFrame({"a": [1, 2]})
"""


def run_code(live: tuple[Server, str], home: Path, sandbox_id: str, *args: str,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    server, key = live
    home.mkdir(exist_ok=True)
    env = clean_env(home, SANDHIVE_API_URL=server.url, SANDHIVE_API_KEY=key)
    proc = subprocess.run([str(SANDHIVE), "sandbox", "run-code", sandbox_id, *args], input=stdin, cwd=home,
                          capture_output=True, text=True, timeout=120, env=env)
    assert "Traceback (most recent call last)" not in proc.stderr or "ZeroDivisionError" in proc.stderr, proc.stderr
    return proc


def test_output_results_and_a_saved_png(sandbox: Sandbox, live: tuple[Server, str], tmp_path: Path) -> None:
    code = tmp_path / "analysis.py"
    code.write_text(PLOT)
    proc = run_code(live, tmp_path / "home", sandbox.sandbox_id, str(code), "--out-dir", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("printed first\n")
    assert proc.stdout.splitlines()[1:] == ["   a", "0  1", "1  2"]  # the DataFrame's text; the figure's repr is not
    png = tmp_path / "out" / "analysis-1.png"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"PNG saved to {png}" in proc.stderr and "a line chart 'squares'" in proc.stderr
    assert "HTML representation" in proc.stderr


def test_stdin_an_error_and_its_exit_code(sandbox: Sandbox, live: tuple[Server, str], tmp_path: Path) -> None:
    proc = run_code(live, tmp_path, sandbox.sandbox_id, "-", stdin="print('before')\n1/0\n")
    assert proc.returncode == 1
    assert proc.stdout == "before\n"
    assert "ZeroDivisionError: division by zero" in proc.stderr and "1/0" in proc.stderr
    assert "\x1b[" not in proc.stderr  # no colours off a terminal


def test_a_context_and_a_timeout(sandbox: Sandbox, live: tuple[Server, str], tmp_path: Path) -> None:
    ctx = sandbox.create_code_context(cwd="/home/user/cli-ctx")
    try:
        proc = run_code(live, tmp_path, sandbox.sandbox_id, "-", "--context", ctx.id,
                        stdin="import os\nos.getcwd()")
        assert (proc.returncode, proc.stdout) == (0, "/home/user/cli-ctx\n"), proc.stderr
        proc = run_code(live, tmp_path, sandbox.sandbox_id, "-", "--context", ctx.id,
                        "--timeout", "1", stdin="while True:\n    pass\n")
        assert proc.returncode == 124 and "--timeout 1s" in proc.stderr, proc.stderr
        proc = run_code(live, tmp_path, sandbox.sandbox_id, "-", "--context", ctx.id,
                        stdin="6 * 7")
        assert proc.stdout == "42\n"  # the interrupted context goes on
    finally:
        sandbox.remove_code_context(ctx)
    proc = run_code(live, tmp_path, "inotasandbox000000000", "-", stdin="1")
    assert proc.returncode == 3 and "not found" in proc.stderr
