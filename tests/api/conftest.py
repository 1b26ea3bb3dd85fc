"""Fixtures: one control-plane server (`sandhive serve --backend none`) per test module, and its keys."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.rig import Server, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("sandhive") / "data")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def api_key(server: Server) -> str:
    return server.key("default")


@pytest.fixture(scope="module")
def team_id(server: Server, api_key: str) -> str:
    team = server.store.authenticate(api_key)
    assert team is not None
    return team
