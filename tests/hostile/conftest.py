"""Attacks on a live `sandhive serve`, each tried as an API key holder (or a stranger) would, each checked from the
host side: no file written, no secret read, memory bounded, no other team's template used.

Every test here failed against the code before its fix (issue 12) and names the promise it enforces in
docs/security.md. Sandbox-facing attacks run once per backend ([container] and [gvisor]). Modules that need a
server with other flags start their own with `tests.api.rig.container_server`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.api.rig import BACKENDS, Server, container_server
from tests.leak_guard import LeakGuard, guarding

TEAM = "hostile"


@dataclass
class Live:
    """A running server and an API key of the attacking team."""

    server: Server
    key: str

    @property
    def url(self) -> str:
        return self.server.url

    def e2b_env(self) -> dict[str, str]:
        return {"E2B_API_URL": self.url, "E2B_SANDBOX_URL": self.url, "E2B_API_KEY": self.key}


@pytest.fixture(scope="package", params=BACKENDS)
def live(request: pytest.FixtureRequest) -> Iterator[Live]:
    """One server per backend for the whole hostile package (sandboxes of the team are killed at the end)."""
    with container_server("hostile", TEAM, backend=request.param) as server:
        yield Live(server, server.key(TEAM))


@pytest.fixture(scope="module")
def e2b_env(live: Live) -> Iterator[None]:
    """The released `e2b` SDK pointed at `live` as the attacking team (no E2B_DOMAIN or debug mode in the way)."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in live.e2b_env().items():
            mp.setenv(name, value)
        mp.delenv("E2B_DEBUG", raising=False)
        mp.delenv("E2B_DOMAIN", raising=False)
        yield


@pytest.fixture(scope="package")
def leak_guard() -> Iterator[LeakGuard]:
    """Counts what watched sandboxes send beyond this machine (tests/leak_guard.py); suites watch their own."""
    with guarding() as guard:
        yield guard
