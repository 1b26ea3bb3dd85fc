"""`sandhive serve --max-lifetime`: longer timeouts are refused (400) and no deadline passes start + maximum."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.api.rig import Server, insert_sandbox, start_server


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("limited") / "data", "--max-lifetime", "3600")
    try:
        yield server
    finally:
        server.stop()


def test_timeouts_over_the_maximum_are_400(limited: Server) -> None:
    key = limited.key()
    row = insert_sandbox(limited.store, limited.store.authenticate(key))
    with limited.client(key) as c:
        r = c.post("/v2/sandboxes", json={"templateID": "base", "timeout": 3601})
        assert r.status_code == 400 and r.json() == {"code": 400, "message": "Timeout cannot be greater than 1 hour"}
        r = c.post(f"/sandboxes/{row.sandbox_id}/timeout", json={"timeout": 7200})
        assert r.status_code == 400 and "cannot be greater than 1 hour" in r.json()["message"]
        r = c.post(f"/v2/sandboxes/{row.sandbox_id}/connect", json={"timeout": 3601})
        assert r.status_code == 400


def test_deadline_never_passes_start_plus_maximum(limited: Server) -> None:
    key = limited.key()
    started = datetime.now(UTC) - timedelta(minutes=50)
    row = insert_sandbox(limited.store, limited.store.authenticate(key), started_at=started)
    with limited.client(key) as c:
        assert c.post(f"/sandboxes/{row.sandbox_id}/timeout", json={"timeout": 3000}).status_code == 204
        end = datetime.fromisoformat(c.get(f"/sandboxes/{row.sandbox_id}").json()["endAt"])
    assert abs((end - (started + timedelta(hours=1))).total_seconds()) < 1
