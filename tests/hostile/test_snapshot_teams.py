"""Snapshots across teams, and the snapshot-bytes quota (issue 14).

A snapshot holds a sandbox's whole memory: its envd token, its env vars, whatever secrets its processes hold.
Team A snapshots a sandbox; team B, an ordinary key holder of the same server, tries every way of naming it
(raw id, `id:default`, `team-slug/name:default` percent-encoded as the SDK sends it): listing, starting a
sandbox from it, deleting it, forking or snapshotting A's sandbox. Each must be "not found", and A's snapshot
must be untouched afterwards (checked in the store, on the host side). Then a team snapshotting without end
meets its byte quota: 429 with Retry-After, and nothing of the refused snapshot is kept on disk.

Promises: a team's snapshots are its own (docs/security.md 22); a team's snapshots are bounded in bytes
(docs/security.md 23).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.persistence.snapshot_rig import OTHER_TEAM, Live, live_server

QUOTA_MB = 100  # a base sandbox's snapshot is ~30 MB (envd's Python in memory): the 2nd to 4th is refused


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    yield from live_server("snapshot-teams", "--max-snapshot-mb-per-team", str(QUOTA_MB))


def _client(live: Live, key: str) -> httpx.Client:
    return httpx.Client(base_url=live.url, headers={"X-API-Key": key}, trust_env=False, timeout=120)


def test_another_team_cannot_list_start_delete_or_fork_a_snapshot(live: Live) -> None:
    with _client(live, live.key) as a, _client(live, live.other_key) as b:
        r = a.post("/v2/sandboxes", json={"templateID": "base", "timeout": 120})
        assert r.status_code == 201, r.text
        source = r.json()["sandboxID"]
        r = a.post(f"/sandboxes/{source}/snapshots", json={"name": "secret"})
        assert r.status_code == 201, r.text
        named = r.json()["snapshotID"]
        r = a.post(f"/sandboxes/{source}/snapshots", json={})
        assert r.status_code == 201, r.text
        unnamed = r.json()["snapshotID"]
        raw_id = unnamed.partition(":")[0]
        record = live.server.store.get_snapshot(raw_id)
        assert record is not None and Path(record.directory).is_dir()

        assert b.get("/snapshots").json() == []
        assert b.get("/snapshots", params={"sandboxID": source}).json() == []
        assert b.get("/snapshots", params={"name": "secret"}).json() == []
        for ref in (named, unnamed, raw_id, "secret", named.partition(":")[0]):
            r = b.post("/v2/sandboxes", json={"templateID": ref, "timeout": 60})
            assert r.status_code == 404, (ref, r.status_code, r.text)
            r = b.delete(f"/templates/{urllib.parse.quote(ref, safe='')}")
            assert r.status_code == 404, (ref, r.status_code, r.text)
        assert b.post(f"/sandboxes/{source}/fork", json={"count": 1}).status_code == 404
        assert b.post(f"/sandboxes/{source}/snapshots", json={}).status_code == 404

        # Host side: A's snapshots are whole, and team B owns no sandbox.
        for ref in (named, unnamed):
            assert ref in [s["snapshotID"] for s in a.get("/snapshots").json()]
        record = live.server.store.get_snapshot(raw_id)
        assert record is not None and Path(record.directory).is_dir()
        assert b.get("/v2/sandboxes").json() == []

        # The owner can delete them, by either form of their names.
        assert a.delete(f"/templates/{urllib.parse.quote(named, safe='')}").status_code == 204
        assert a.delete(f"/templates/{urllib.parse.quote(unnamed, safe='')}").status_code == 204
        assert not Path(record.directory).exists()
        assert a.get("/snapshots").json() == []
        a.delete(f"/sandboxes/{source}")


def test_snapshot_bytes_are_bounded_per_team(live: Live) -> None:
    with _client(live, live.other_key) as c:
        r = c.post("/v2/sandboxes", json={"templateID": "base", "timeout": 120})
        assert r.status_code == 201, r.text
        source = r.json()["sandboxID"]
        refused = None
        for _ in range(QUOTA_MB // 10):  # snapshots are well over 10 MB: the quota is met before the loop ends
            r = c.post(f"/sandboxes/{source}/snapshots", json={})
            if r.status_code == 429:
                refused = r
                break
            assert r.status_code == 201, r.text
        assert refused is not None, "the snapshot quota never applied"
        assert refused.headers["Retry-After"] and refused.json()["code"] == 429
        kept = live.server.store.list_snapshots(live.server.store.ensure_team(OTHER_TEAM).id)[0]
        assert sum(s.bytes for s in kept) <= QUOTA_MB * 2**20
        on_disk = {p.name for p in (live.server.data_dir / "snapshots").iterdir()}
        assert on_disk == {s.snapshot_id for s in kept}, "a refused snapshot left files behind"
        # The source ran on through all of it.
        assert c.get(f"/sandboxes/{source}").json()["state"] == "running"
        for s in kept:
            assert c.delete(f"/templates/{s.snapshot_id}").status_code == 204
        c.delete(f"/sandboxes/{source}")
