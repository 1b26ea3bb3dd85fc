"""Sandhive's own SDK (`sandhive.Sandbox.pause/resume`, sync and async) and CLI (`sandhive sandbox pause|resume`)
against the live server: the client layer, the same whatever the backend (`one_backend`: container)."""

from __future__ import annotations

import asyncio

import pytest

import sandhive
from tests.api.rig import cli

from .conftest import Live

pytestmark = [pytest.mark.needs_backend, pytest.mark.one_backend, pytest.mark.timeout(600)]


def test_sdk_pause_and_resume_sync_and_async(live: Live) -> None:
    sandbox = sandhive.Sandbox.create(timeout=300, api_url=live.url, api_key=live.key)
    try:
        sandbox.files.write("/home/user/note", "sync")
        assert sandbox.pause() is True
        assert sandbox.pause() is False  # paused already: E2B's meaning
        assert sandbox.get_info().state.value == "paused"
        sandbox.resume(timeout=120)
        assert sandbox.get_info().state.value == "running"
        assert sandbox.files.read("/home/user/note") == "sync"

        async def async_face() -> str:
            assert await sandhive.AsyncSandbox.pause(sandbox.sandbox_id, mode="filesystem", api_url=live.url,
                                                     api_key=live.key) is True
            resumed = await sandhive.AsyncSandbox.resume(sandbox.sandbox_id, api_url=live.url, api_key=live.key)
            return await resumed.files.read("/home/user/note")

        assert asyncio.run(async_face()) == "sync"
    finally:
        sandhive.Sandbox.kill(sandbox.sandbox_id, api_url=live.url, api_key=live.key)


def test_cli_pause_and_resume(live: Live) -> None:
    target = ("--url", live.url, "--api-key", live.key)
    sandbox_id = cli("sandbox", "create", *target).stdout.strip()
    try:
        assert f"Paused {sandbox_id}" in cli("sandbox", "pause", sandbox_id, "--filesystem", *target).stdout
        assert "paused already" in cli("sandbox", "pause", sandbox_id, *target).stdout
        assert sandbox_id in cli("sandbox", "list", "--state", "paused", *target).stdout
        assert f"Resumed {sandbox_id}" in cli("sandbox", "resume", sandbox_id, *target).stdout
        assert cli("sandbox", "info", sandbox_id, "--json", *target).stdout.count('"running"') == 1
    finally:
        cli("sandbox", "kill", sandbox_id, *target, check=False)
