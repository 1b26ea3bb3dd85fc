"""Metrics across teams (issue 18): another team learns nothing of a sandbox's use or of a team's activity.

Team A runs a sandbox; team B, an ordinary key holder of the same server, asks for its metrics history by id (404,
exactly as for an id nobody has), for it in the batch route (simply absent, as an unknown id is), for team A's
team metrics and their maximum by A's team id or slug (403, as E2B answers), and for the operator's Prometheus
page (403: it names every sandbox and team). Team A itself sees its sandbox's samples throughout, so the refusals
are not an empty server's.

Promise: a sandbox's metrics and a team's metrics are the team's own (docs/security.md 31).
"""

from __future__ import annotations

import uuid

import httpx

from tests.api.rig import create_key
from tests.hostile.conftest import Live


def _client(live: Live, key: str | None) -> httpx.Client:
    headers = {"X-API-Key": key} if key else {}
    return httpx.Client(base_url=live.url, headers=headers, trust_env=False, timeout=120)


def test_another_team_cannot_read_a_sandboxs_or_teams_metrics(live: Live) -> None:
    other = create_key(live.server.data_dir, f"metrics-other-{uuid.uuid4().hex[:8]}")
    team_a = live.server.store.authenticate(live.key)
    team_b = live.server.store.authenticate(other)
    assert team_a and team_b and team_a != team_b
    with _client(live, live.key) as a, _client(live, other) as b, _client(live, None) as stranger:
        r = a.post("/v2/sandboxes", json={"templateID": "base", "timeout": 120})
        assert r.status_code == 201, r.text
        sandbox_id = r.json()["sandboxID"]
        try:
            mine = a.get(f"/sandboxes/{sandbox_id}/metrics")
            assert mine.status_code == 200 and mine.json(), mine.text  # the owner sees samples
            assert sandbox_id in a.get("/sandboxes/metrics", params={"sandbox_ids": sandbox_id}).json()["sandboxes"]

            theirs = b.get(f"/sandboxes/{sandbox_id}/metrics")
            nobody = b.get("/sandboxes/inosuchsandbox0000000/metrics")
            assert theirs.status_code == nobody.status_code == 404
            assert theirs.json()["message"].replace(sandbox_id, "X") == nobody.json()["message"].replace(
                "inosuchsandbox0000000", "X")  # the same answer as for no sandbox at all
            for ids in (sandbox_id, f"{sandbox_id},inosuchsandbox0000000"):
                r = b.get("/sandboxes/metrics", params={"sandbox_ids": ids})
                assert r.status_code == 200 and r.json() == {"sandboxes": {}}, r.text

            slug_a = live.server.store.team_slug_of(team_a)
            for path, params in ((f"/teams/{team_a}/metrics", {}), (f"/teams/{slug_a}/metrics", {}),
                                 (f"/teams/{team_a}/metrics/max", {"metric": "concurrent_sandboxes"})):
                assert b.get(path, params=params).status_code == 403
                assert a.get(path, params=params).status_code == 200
                assert stranger.get(path, params=params).status_code == 401
            # B's own series counts none of A's sandboxes.
            assert all(p["concurrentSandboxes"] == 0 for p in b.get(f"/teams/{team_b}/metrics").json())

            assert b.get("/metrics").status_code == 403
            assert a.get("/metrics").status_code == 403  # a team's key is no operator's
            assert stranger.get("/metrics").status_code == 401
        finally:
            a.delete(f"/sandboxes/{sandbox_id}")
