"""Snapshots survive a server restart (issue 14): files under the data dir, recorded in the store. A sandbox
started from one after the restart still carries the memory and files of the moment it was taken."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
from e2b import Sandbox

from tests.api.rig import start_server
from tests.persistence.snapshot_rig import Live, counter, live_server, point_sdk, start_counting


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    yield from live_server("snapshot-restart")


def test_a_snapshot_survives_a_server_restart(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    point_sdk(monkeypatch, live)
    source = Sandbox.create(timeout=300)
    start_counting(source)
    snap = source.create_snapshot(name="kept")
    at_snapshot = counter(source)
    source.kill()

    server = live.server
    server.stop()
    # The same data dir and port: the rig's cleanup then talks to (and stops) the new server.
    again = start_server(server.data_dir, backend="container", port=urlparse(server.url).port, timeout=900)
    server.proc = again.proc

    assert [s.snapshot_id for s in Sandbox.list_snapshots().next_items()] == [snap.snapshot_id]
    copy = Sandbox.create(snap.snapshot_id, timeout=60)
    try:
        assert at_snapshot - 20 <= counter(copy) <= at_snapshot + 300
        assert copy.files.read("/home/user/kept") == "kept\n"
    finally:
        copy.kill()
    assert Sandbox.delete_snapshot(snap.snapshot_id)
