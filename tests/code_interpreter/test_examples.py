"""examples/code_interpreter.py runs verbatim as a program against this suite's live server (the template is built
by the session's first create, the `sandbox` fixture), configured only by the environment, and leaves the HTML
table and the PNG it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.rig import Server

pytestmark = [pytest.mark.timeout(900), pytest.mark.one_backend]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "code_interpreter.py"


def test_the_code_interpreter_example(sandbox: object, live: tuple[Server, str], tmp_path: Path) -> None:
    server, key = live
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E2B_", "SANDHIVE_"))}
    env.update(SANDHIVE_API_URL=server.url, SANDHIVE_API_KEY=key)
    with server.client(key) as c:
        before = {s["sandboxID"] for s in c.get("/v2/sandboxes").json()}
    proc = subprocess.run([sys.executable, str(EXAMPLE)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["temperature", "humidity"]
    assert [line.split()[0] for line in lines[1:9]] == ["count", "mean", "std", "min", "25%", "50%", "75%", "max"]
    assert lines[2].split()[1:] == ["22.750000", "48.500000"]  # the means, as the seed's example prints them
    assert proc.stdout.splitlines()[-2:] == ["describe() as an HTML table saved to weather-summary.html",
                                             "chart saved to weather.png"]
    html = (tmp_path / "weather-summary.html").read_text()
    assert "<table" in html and "<th>mean</th>" in html and "22.750000" in html
    png = tmp_path / "weather.png"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 5000
    assert proc.stderr == "", proc.stderr  # no warning from the kernel (fonts, glyphs, config dirs)
    with server.client(key) as c:
        assert {s["sandboxID"] for s in c.get("/v2/sandboxes").json()} == before  # the `with` killed it
