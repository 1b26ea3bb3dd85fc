"""Fixtures: one control-plane server (`sandhive serve --backend none`) per test module, and its keys."""

from __future__ import annotations

import pytest

from tests.api.rig import Server, module_server

server = module_server("sandhive")


@pytest.fixture(scope="module")
def api_key(server: Server) -> str:
    return server.key("default")


@pytest.fixture(scope="module")
def team_id(server: Server, api_key: str) -> str:
    team = server.store.authenticate(api_key)
    assert team is not None
    return team
