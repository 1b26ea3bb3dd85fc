"""E2B conformance: behaviours where Sandhive differed from E2B (issue 13), each driven through the released `e2b`
SDK, sync and async where both exist, against a live `sandhive serve` per OCI backend.

The package-scoped `live` server is shared by every module here; `e2b_env` points the SDK at it for the whole
package. Modules that need other server flags start their own with `tests.api.rig.container_server`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.api.rig import BACKENDS, Server, container_server

TEAM = "conformance"


@dataclass
class Live:
    """A running server and an API key of the conforming team."""

    server: Server
    key: str

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="package", params=BACKENDS)
def live(request: pytest.FixtureRequest) -> Iterator[Live]:
    """One server per backend for the whole conformance package (the team's sandboxes are killed at the end)."""
    with container_server("conformance", TEAM, backend=request.param) as server:
        yield Live(server, server.key(TEAM))


@pytest.fixture(autouse=True)
def e2b_env(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    """The released SDK reads its endpoints and key from the environment, as E2B's users set them."""
    monkeypatch.setenv("E2B_API_URL", live.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", live.url)
    monkeypatch.setenv("E2B_API_KEY", live.key)
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    monkeypatch.delenv("E2B_DOMAIN", raising=False)
