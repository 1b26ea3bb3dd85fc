"""Pause and resume (issue 14) through the released `e2b` SDK against a live `sandhive serve`, once on each OCI
backend (`live[container]`, `live[gvisor]`): what docs/persistence.md's matrix promises on both runs on both.
What only the container backend offers (memory snapshots, forks) is marked `backends("container")`, or lives
in modules with servers of their own; the gvisor 409 for them is tested in
tests/conformance/test_unsupported_routes.py. One server per backend for the session (pytest finishes the
container cases before the gvisor server starts), a small paused-sandbox quota so that its 429 is cheap to
reach, and the SDK pointed at it through the environment.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.api.rig import BACKENDS, Server, container_server, start_server
from tests.helpers import read_count

TEAM = "persistence"
PAUSED_QUOTA = 2
SERVER_ARGS = ("--max-paused-per-team", str(PAUSED_QUOTA), "--pool-size", "1")


@dataclass
class Live:
    server: Server
    key: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def backend(self) -> str:
        return self.server.backend

    def sigkill_and_restart(self, meanwhile: Callable[[], object] | None = None) -> None:
        """SIGKILL the server, call `meanwhile` (e.g. a simulated host reboot), and start another server on the
        same data dir, port and flags: what survives a crash of the server survives this (its sandboxes outlive
        it by design). The fixture's cleanup then talks to, and stops, the new one."""
        os.kill(self.server.proc.pid, signal.SIGKILL)
        self.server.proc.wait(10)
        if meanwhile is not None:
            meanwhile()
        port = int(self.url.rsplit(":", 1)[1])
        restarted = start_server(self.server.data_dir, *SERVER_ARGS, backend=self.backend, port=port, timeout=300)
        self.server.proc, self.server.log = restarted.proc, restarted.log


@pytest.fixture(scope="package", params=BACKENDS)
def live(request: pytest.FixtureRequest) -> Iterator[Live]:
    with container_server("persistence", TEAM, *SERVER_ARGS, backend=request.param) as server:
        yield Live(server, server.key(TEAM))


@pytest.fixture(autouse=True)
def e2b_env(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2B_API_URL", live.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", live.url)
    monkeypatch.setenv("E2B_API_KEY", live.key)
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    monkeypatch.delenv("E2B_DOMAIN", raising=False)


# A background shell loop whose only state is in memory: after a memory pause it must go on from where it
# was (not from 1), after a filesystem pause it must be gone.
COUNTER_LOOP = "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done"


def start_counter(sandbox) -> None:
    sandbox.files.write("/home/user/kept.txt", "kept")
    sandbox.commands.run(COUNTER_LOOP, background=True)


def counter(sandbox) -> int:
    return read_count(lambda: sandbox.commands.run("cat /tmp/counter 2>/dev/null || true").stdout)
