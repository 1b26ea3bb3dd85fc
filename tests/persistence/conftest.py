"""Pause and resume (issue 14) through the released `e2b` SDK against a live `sandhive serve` on the container
backend (the gvisor and microvm suites are their backends' own). One server for the session (`live`), a small
paused-sandbox quota so that its 429 is cheap to reach, and the SDK pointed at it through the environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.api.rig import Server, container_server
from tests.helpers import read_count

TEAM = "persistence"
PAUSED_QUOTA = 2


@dataclass
class Live:
    server: Server
    key: str

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def live() -> Iterator[Live]:
    with container_server("persistence", TEAM, "--max-paused-per-team", str(PAUSED_QUOTA), "--pool-size", "1",
                          backend="container") as server:
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
