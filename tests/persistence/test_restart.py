"""A paused sandbox survives a SIGKILLed server, on the container and the gvisor backend: the restarted server
lists it as paused and `connect` brings it back with its process memory and files (released `e2b` SDK; the
session's server of each backend, SIGKILLed and started again on its data dir). On gvisor the sandbox stayed
frozen in place while no server ran. A pause whose dump finished but whose store record did not (a crash in
between) is recovered as paused."""

from __future__ import annotations

import time

import pytest
from e2b import Sandbox
from sqlalchemy import update

from sandhive.store import SandboxRecord
from tests.api.rig import Server
from tests.helpers import wait_until

from .conftest import Live, counter, start_counter

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]


def _forget_the_pause(server: Server, sandbox_id: str) -> None:
    """What a server that died after the dump but before recording it leaves: a "running" row, a whole pause."""
    with server.store._write() as s:
        s.execute(update(SandboxRecord).where(SandboxRecord.sandbox_id == sandbox_id)
                  .values(state="running", saved=None, paused_at=None))


def test_a_paused_sandbox_resumes_after_the_server_is_sigkilled(live: Live) -> None:
    sandbox = Sandbox.create(timeout=300)
    unrecorded = Sandbox.create(timeout=300)
    try:
        start_counter(sandbox)
        before = wait_until(lambda: counter(sandbox) >= 3 and counter(sandbox), 30, "the counter to count")
        counted_from = time.monotonic()
        assert sandbox.pause() is True
        ran_before = time.monotonic() - counted_from  # the pause takes a while (gvisor: its files read out first)
        unrecorded.files.write("/home/user/kept.txt", "also kept")
        assert unrecorded.pause() is True
        _forget_the_pause(live.server, unrecorded.sandbox_id)

        live.sigkill_and_restart()

        assert Sandbox.get_info(sandbox.sandbox_id).state.value == "paused"
        resuming = time.monotonic()
        resumed = Sandbox.connect(sandbox.sandbox_id, timeout=120)
        after = counter(resumed)
        # From memory, not restarted; and still while paused (no server): a tick per 0.1 s it ran at most.
        ran = ran_before + time.monotonic() - resuming
        assert before <= after <= before + ran / 0.1 + 2, (before, after, ran)
        wait_until(lambda: counter(resumed) > after, 30, "the counter to go on counting")
        assert resumed.files.read("/home/user/kept.txt") == "kept"

        # The pause the store never heard of was found by its record file: paused and whole, not lost.
        assert Sandbox.get_info(unrecorded.sandbox_id).state.value == "paused"
        assert Sandbox.connect(unrecorded.sandbox_id).files.read("/home/user/kept.txt") == "also kept"
    except BaseException:
        print(live.server.output()[-6000:])
        raise
    finally:
        Sandbox.kill(sandbox.sandbox_id)
        Sandbox.kill(unrecorded.sandbox_id)
