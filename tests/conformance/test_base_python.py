"""Issue 13 item 9: the `base` template has `python` as well as `python3`, as E2B's base image does
(agents call `python` all the time)."""

from __future__ import annotations

import asyncio

import pytest
from e2b import AsyncSandbox, Sandbox

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]


def test_python_runs_in_a_base_sandbox_sync() -> None:
    sbx = Sandbox.create(timeout=120)
    try:
        result = sbx.commands.run("python --version && python -c 'import sys; print(sys.executable)'")
        assert result.exit_code == 0
        version, executable = result.stdout.splitlines()
        assert version.startswith("Python 3.") and executable.endswith("/python")
        assert sbx.commands.run("python3 --version").stdout.strip() == version
    finally:
        sbx.kill()


def test_python_runs_in_a_base_sandbox_async() -> None:
    async def scenario() -> str:
        sbx = await AsyncSandbox.create(timeout=120)
        try:
            return (await sbx.commands.run("python -c 'print(6 * 7)'")).stdout
        finally:
            await sbx.kill()

    assert asyncio.run(scenario()) == "42\n"
