"""A paused sandbox survives a SIGKILLed server: the restarted server lists it as paused and `connect` brings
it back with its process memory and files (released `e2b` SDK, container backend, a server of its own). A pause
whose dump finished but whose store record did not (a crash in between) is recovered as paused."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from e2b import Sandbox
from sqlalchemy import update

from sandhive.store import SandboxRecord
from tests.api.rig import Server, container_server, start_server
from tests.helpers import wait_until

from .conftest import counter, start_counter

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]
TEAM = "persistence-restart"


@pytest.fixture(scope="module")
def restartable() -> Iterator[Server]:
    with container_server("persistence-restart", TEAM, "--pool-size", "0", backend="container") as server:
        yield server


@pytest.fixture(autouse=True)
def e2b_env(restartable: Server, monkeypatch: pytest.MonkeyPatch) -> None:  # overrides the session server's
    monkeypatch.setenv("E2B_API_URL", restartable.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", restartable.url)
    monkeypatch.setenv("E2B_API_KEY", restartable.key(TEAM))


def _forget_the_pause(server: Server, sandbox_id: str) -> None:
    """What a server that died after the dump but before recording it leaves: a "running" row, a whole pause."""
    with server.store._write() as s:
        s.execute(update(SandboxRecord).where(SandboxRecord.sandbox_id == sandbox_id)
                  .values(state="running", saved=None, paused_at=None))


def test_a_paused_sandbox_resumes_after_the_server_is_sigkilled(restartable: Server) -> None:
    sandbox = Sandbox.create(timeout=300)
    unrecorded = Sandbox.create(timeout=300)
    try:
        start_counter(sandbox)
        before = wait_until(lambda: counter(sandbox) >= 3 and counter(sandbox), 30, "the counter to count")
        assert sandbox.pause() is True
        unrecorded.files.write("/home/user/kept.txt", "also kept")
        assert unrecorded.pause() is True
        _forget_the_pause(restartable, unrecorded.sandbox_id)

        os.kill(restartable.proc.pid, signal.SIGKILL)
        restartable.proc.wait(10)
        port = int(restartable.url.rsplit(":", 1)[1])
        restarted = start_server(restartable.data_dir, backend="container", port=port, timeout=300)
        restartable.proc, restartable.log = restarted.proc, restarted.log

        assert Sandbox.get_info(sandbox.sandbox_id).state.value == "paused"
        resumed = Sandbox.connect(sandbox.sandbox_id, timeout=120)
        after = counter(resumed)
        assert before <= after < before + 20, (before, after)
        wait_until(lambda: counter(resumed) > after, 30, "the counter to go on counting")
        assert resumed.files.read("/home/user/kept.txt") == "kept"

        # The pause the store never heard of was found by its record file: paused and whole, not lost.
        assert Sandbox.get_info(unrecorded.sandbox_id).state.value == "paused"
        assert Sandbox.connect(unrecorded.sandbox_id).files.read("/home/user/kept.txt") == "also kept"
    except BaseException:
        print(restartable.output()[-6000:])
        raise
    finally:
        Sandbox.kill(sandbox.sandbox_id)
        Sandbox.kill(unrecorded.sandbox_id)
