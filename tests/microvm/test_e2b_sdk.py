"""End to end: the released e2b SDK, unchanged, against `sandhive serve --backend microvm`.

The seed example (create, run, files, kill) and what a microVM clone must get right on top: its own
random bytes and its own clock. Timeouts are sized for TCG (the first create waits for the base
template's snapshot: a guest boot, emulated).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import Sandbox

from tests.api.rig import Server, kill_team_sandboxes, start_server

from .leftovers import leftovers, sandbox_leftovers

pytestmark = [pytest.mark.microvm, pytest.mark.timeout(900)]
TEAM = "microvm"
REQUEST_TIMEOUT = 600  # seconds: the first create builds the template's snapshot
COMMAND_TIMEOUT = 120


@pytest.fixture(scope="module")
def live(microvm_root: Path) -> Iterator[Server]:
    # No warm pool: every create below is a snapshot clone made on the request path.
    server = start_server(microvm_root / "server", "--pool-size", "0", backend="microvm", timeout=900)
    try:
        yield server
    finally:
        try:
            kill_team_sandboxes(server, server.key(TEAM))
        finally:
            server.stop()


@pytest.fixture(scope="module", autouse=True)
def e2b_env(live: Server) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("E2B_API_URL", live.url)
        mp.setenv("E2B_SANDBOX_URL", live.url)
        mp.setenv("E2B_API_KEY", live.key(TEAM))
        mp.delenv("E2B_DEBUG", raising=False)
        mp.delenv("E2B_DOMAIN", raising=False)
        yield


def create() -> Sandbox:
    return Sandbox.create(timeout=300, request_timeout=REQUEST_TIMEOUT)


def run(sbx: Sandbox, line: str) -> str:
    return sbx.commands.run(line, timeout=COMMAND_TIMEOUT, request_timeout=COMMAND_TIMEOUT).stdout


def test_the_seed_example(live: Server) -> None:
    """Sandbox.create(), commands.run('echo Hello'), files write/read, kill — and kill leaves nothing."""
    with live.client() as c:
        health = c.get("/health").json()
        assert health["backend"] == "microvm" and health["accelerator"] in ("kvm", "tcg")
    sbx = create()
    try:
        assert run(sbx, "echo Hello") == "Hello\n"
        sbx.files.write("/home/user/hello.txt", "Hello from a microVM\n")
        assert sbx.files.read("/home/user/hello.txt") == "Hello from a microVM\n"
        assert run(sbx, "cat /home/user/hello.txt; whoami") == "Hello from a microVM\nuser\n"
        assert run(sbx, "uname -r") != Path("/proc/sys/kernel/osrelease").read_text()  # its own kernel
    finally:
        sbx.kill()
    assert sbx.sandbox_id not in [s.sandbox_id for s in Sandbox.list().next_items()]
    assert sandbox_leftovers(live.data_dir, sbx.sandbox_id) == []


def test_clones_have_their_own_randomness_and_clock() -> None:
    a, b = create(), create()
    try:
        ra, rb = run(a, "head -c16 /dev/urandom | od -An -tx1"), run(b, "head -c16 /dev/urandom | od -An -tx1")
        assert len(ra.split()) == 16 and ra != rb
        for sbx in (a, b):
            assert abs(int(run(sbx, "date +%s")) - time.time()) < 5
    finally:
        a.kill()
        b.kill()


def test_nothing_is_left_after_the_team_is_killed(live: Server) -> None:
    sbx = create()
    kill_team_sandboxes(live, live.key(TEAM))
    assert sandbox_leftovers(live.data_dir, sbx.sandbox_id) == []
    assert leftovers(live.data_dir) == []
