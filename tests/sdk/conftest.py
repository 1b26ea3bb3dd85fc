"""Sandhive's own SDK against a live `sandhive serve` (one server per backend for the whole `tests/sdk` session:
every test runs on the container backend and on gvisor, as [container] and [gvisor]).

The server comes from `tests.api.rig.container_server`: a data dir under /tmp (mode 0711, so sandboxes'
unprivileged host uids can reach their root filesystems), every sandbox of the team killed at the end, the
server stopped by PID. Tests also kill what they create, so a failure leaves nothing running.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.api.rig import BACKENDS, Server, container_server

TEAM = "sdk"


@dataclass
class Live:
    """The running server and an API key for it."""

    server: Server
    key: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def env(self) -> dict[str, str]:
        """What the SDK (and the examples run as subprocesses) read to find the server."""
        return {"SANDHIVE_API_URL": self.url, "SANDHIVE_API_KEY": self.key}


@pytest.fixture(scope="package", params=BACKENDS)
def live(request: pytest.FixtureRequest) -> Iterator[Live]:
    with container_server("sdk", TEAM, backend=request.param) as server:
        yield Live(server, server.key(TEAM))


@pytest.fixture(scope="module")
def sdk_env(live: Live) -> Iterator[None]:
    """The SDK finds the server through SANDHIVE_*; E2B's variables are cleared so they cannot interfere.
    Modules that need it say `pytestmark = pytest.mark.usefixtures("sdk_env")`."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY", "SANDHIVE_SANDBOX_URL"):
            mp.delenv(name, raising=False)
        for name, value in live.env.items():
            mp.setenv(name, value)
        yield
