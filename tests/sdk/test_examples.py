"""The seed's two examples (examples/*.py) run verbatim as programs, configured only by the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.sdk.conftest import Live

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(live: Live, name: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E2B_", "SANDHIVE_"))}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], env={**env, **live.env}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def running(live: Live) -> list[str]:
    with httpx.Client(base_url=live.url, headers={"X-API-Key": live.key}, trust_env=False) as c:
        return [s["sandboxID"] for s in c.get("/v2/sandboxes").json()]


def test_hello_world(live: Live) -> None:
    before = running(live)
    assert run_example(live, "hello_world.py") == "Hello from Sandhive!\n\n"
    assert running(live) == before  # `with Sandbox()` killed its sandbox


def test_data_science(live: Live) -> None:
    before = running(live)
    out = run_example(live, "data_science.py")
    header, *rows = [line.split() for line in out.strip().splitlines()]
    assert header == ["temperature", "humidity"]
    assert [r[0] for r in rows] == ["count", "mean", "std", "min", "25%", "50%", "75%", "max"]
    assert rows[0][1:] == ["6.000000", "6.000000"] and rows[1][1:] == ["22.750000", "48.500000"]
    assert running(live) == before  # sandbox.close() killed it
