"""`GET /templates` (added for `sandhive template list`) on a server without a backend: auth, and an empty list."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.rig import Server, start_server


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("sandhive") / "data")  # --backend none
    try:
        yield server
    finally:
        server.stop()


def test_needs_a_key(bare: Server) -> None:
    with bare.client() as c:
        r = c.get("/templates")
    assert r.status_code == 401 and r.json()["code"] == 401


def test_no_backend_no_templates(bare: Server) -> None:
    with bare.client(bare.key()) as c:
        r = c.get("/templates")
    assert r.status_code == 200 and r.json() == []
