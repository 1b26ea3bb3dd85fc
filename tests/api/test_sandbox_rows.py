"""Listing, paging, filters, details, timeouts and kills over sandbox rows put straight into a server's store.

A `--backend none` server starts no sandbox, so rows stand in for created ones; everything the API
does with them (and what the released SDK makes of its answers) is real.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

import pytest
from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import SandboxNotFoundException

from tests.api.rig import Server, insert_sandbox
from tests.helpers import wait_until

DETAIL_KEYS = {"templateID", "sandboxID", "clientID", "startedAt", "endAt", "envdVersion", "cpuCount", "memoryMB",
               "diskSizeMB", "state", "envdAccessToken", "metadata", "alias", "allowInternetAccess", "domain"}
LISTED_KEYS = {"templateID", "sandboxID", "clientID", "startedAt", "endAt", "cpuCount", "memoryMB", "diskSizeMB",
               "state", "envdVersion", "metadata", "alias"}


def sdk_metadata_param(metadata: dict[str, str]) -> str:
    """The `metadata` query value exactly as e2b 2.63 builds it."""
    return urlencode({quote(k): quote(v) for k, v in metadata.items()})


@pytest.fixture(scope="module")
def rows(server: Server, team_id: str) -> list[str]:
    """Five sandboxes of one run (oldest first), tagged so the tests of this module can find them."""
    return [insert_sandbox(server.store, team_id, meta={"run": "paging", "n": str(i), "odd": str(i % 2)}).sandbox_id
            for i in range(5)]


def test_v2_list_pages_with_next_token(server: Server, api_key: str, rows: list[str]) -> None:
    seen: list[str] = []
    token = None
    pages = 0
    with server.client(api_key) as c:
        while True:
            params = {"limit": 2, "metadata": sdk_metadata_param({"run": "paging"})}
            if token:
                params["nextToken"] = token
            r = c.get("/v2/sandboxes", params=params)
            assert r.status_code == 200, r.text
            pages += 1
            items = r.json()
            assert all(set(item) >= LISTED_KEYS for item in items)
            seen += [item["sandboxID"] for item in items]
            token = r.headers.get("x-next-token")
            if not token:
                break
    assert pages == 3
    assert seen == list(reversed(rows))  # newest first by default


def test_v2_list_ascending_order(server: Server, api_key: str, rows: list[str]) -> None:
    with server.client(api_key) as c:
        r = c.get("/v2/sandboxes", params={"order": "asc", "metadata": sdk_metadata_param({"run": "paging"})})
    assert [s["sandboxID"] for s in r.json()] == rows
    assert "x-next-token" not in r.headers


def test_v2_list_filters(server: Server, api_key: str, team_id: str, rows: list[str]) -> None:
    special = insert_sandbox(server.store, team_id, template_id="tpl-special", alias="special",
                             meta={"run": "filters", "who": "a b&c=d/é%"})
    with server.client(api_key) as c:
        def ids(**params: object) -> list[str]:
            r = c.get("/v2/sandboxes", params=params)
            assert r.status_code == 200, r.text
            return [s["sandboxID"] for s in r.json()]

        assert ids(metadata=sdk_metadata_param({"run": "paging", "odd": "1"})) == [rows[3], rows[1]]
        assert ids(metadata=sdk_metadata_param({"who": "a b&c=d/é%"})) == [special.sandbox_id]
        assert ids(metadata=sdk_metadata_param({"who": "a b"})) == []
        assert ids(template="tpl-special") == [special.sandbox_id]
        assert ids(template="special") == [special.sandbox_id]
        assert ids(state="paused") == []
        assert special.sandbox_id in ids(state="running,paused")
        after = (special.started_at - timedelta(microseconds=1)).isoformat()
        assert special.sandbox_id in ids(startedAfter=after)
        assert set(rows).isdisjoint(ids(startedAfter=after))


def test_killed_and_other_teams_sandboxes_are_invisible(server: Server, api_key: str, team_id: str) -> None:
    killed = insert_sandbox(server.store, team_id, state="killed", meta={"run": "hidden"})
    other_team = server.store.authenticate(server.key("other-team"))
    theirs = insert_sandbox(server.store, other_team, meta={"run": "hidden"})
    with server.client(api_key) as c:
        listed = {s["sandboxID"] for s in c.get("/v2/sandboxes", params={"limit": 100}).json()}
        v1 = {s["sandboxID"] for s in c.get("/sandboxes").json()}
        assert killed.sandbox_id not in listed | v1 and theirs.sandbox_id not in listed | v1
        for sandbox_id in (killed.sandbox_id, theirs.sandbox_id):
            r = c.get(f"/sandboxes/{sandbox_id}")
            assert r.status_code == 404 and r.json() == {"code": 404, "message": f"Sandbox {sandbox_id} not found"}
            assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 404
            assert c.post(f"/sandboxes/{sandbox_id}/timeout", json={"timeout": 5}).status_code == 404
    assert server.store.get_sandbox(theirs.sandbox_id).state == "running"  # untouched by the other team's calls


def test_v1_list_and_detail(server: Server, api_key: str, rows: list[str]) -> None:
    with server.client(api_key) as c:
        v1 = c.get("/sandboxes", params={"metadata": sdk_metadata_param({"run": "paging", "n": "2"})}).json()
        assert [s["sandboxID"] for s in v1] == [rows[2]]
        detail = c.get(f"/sandboxes/{rows[2]}").json()
    assert set(detail) >= DETAIL_KEYS
    assert detail["state"] == "running" and detail["diskSizeMB"] == 1024 and detail["domain"] is None
    assert detail["metadata"] == {"run": "paging", "n": "2", "odd": "0"}
    assert detail["lifecycle"] == {"autoResume": False, "onTimeout": "kill"}
    assert datetime.fromisoformat(detail["endAt"]) > datetime.fromisoformat(detail["startedAt"])


def test_sdk_list_info_timeout_kill(server: Server, api_key: str, team_id: str) -> None:
    """The released SDK's paginator, get_info, set_timeout and kill parse these answers."""
    opts = dict(api_url=server.url, api_key=api_key)
    mine = [insert_sandbox(server.store, team_id, meta={"run": "sdk", "i": str(i)}).sandbox_id for i in range(5)]
    paginator = Sandbox.list(query=SandboxQuery(metadata={"run": "sdk"}, state=[SandboxState.RUNNING]), limit=2,
                             **opts)
    pages = []
    while paginator.has_next:
        pages.append([s.sandbox_id for s in paginator.next_items()])
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(sum(pages, [])) == sorted(mine)

    info = Sandbox.get_info(mine[0], **opts)
    assert info.sandbox_id == mine[0] and info.metadata == {"run": "sdk", "i": "0"} and info.state == "running"
    before = info.end_at
    Sandbox.set_timeout(mine[0], 3600, **opts)
    assert Sandbox.get_info(mine[0], **opts).end_at > before + timedelta(minutes=30)
    assert Sandbox.get_metrics(mine[0], **opts) == []  # no backend, so no figures

    assert Sandbox.kill(mine[0], **opts) is True
    assert Sandbox.kill(mine[0], **opts) is False
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(mine[0], **opts)
    assert server.store.get_sandbox(mine[0]).state == "killed"


def test_timeout_connect_and_refresh_rules(server: Server, api_key: str, team_id: str) -> None:
    row = insert_sandbox(server.store, team_id, meta={"run": "timeouts"})
    with server.client(api_key) as c:
        def end_at() -> datetime:
            return datetime.fromisoformat(c.get(f"/sandboxes/{row.sandbox_id}").json()["endAt"])

        assert c.post(f"/sandboxes/{row.sandbox_id}/timeout", json={"timeout": 1000}).status_code == 204
        t = datetime.now(UTC)
        assert abs((end_at() - t).total_seconds() - 1000) < 5
        # connect only extends: a shorter timeout leaves the deadline alone, a longer one moves it
        r = c.post(f"/v2/sandboxes/{row.sandbox_id}/connect", json={"timeout": 10})
        assert r.status_code == 200, r.text
        assert {"sandboxID", "templateID", "clientID", "envdVersion", "envdAccessToken"} <= set(r.json())
        assert abs((end_at() - t).total_seconds() - 1000) < 5
        assert c.post(f"/sandboxes/{row.sandbox_id}/connect", json={"timeout": 2000}).status_code == 200
        assert abs((end_at() - datetime.now(UTC)).total_seconds() - 2000) < 5
        # set_timeout may shorten; refreshes only extend
        assert c.post(f"/sandboxes/{row.sandbox_id}/timeout", json={"timeout": 100}).status_code == 204
        assert abs((end_at() - datetime.now(UTC)).total_seconds() - 100) < 5
        assert c.post(f"/sandboxes/{row.sandbox_id}/refreshes", json={"duration": 10}).status_code == 204
        assert abs((end_at() - datetime.now(UTC)).total_seconds() - 100) < 5
        assert c.post(f"/sandboxes/{row.sandbox_id}/refreshes", json={"duration": 500}).status_code == 204
        assert abs((end_at() - datetime.now(UTC)).total_seconds() - 500) < 5
        assert c.post(f"/sandboxes/{row.sandbox_id}/refreshes").status_code == 204
        assert c.post(f"/sandboxes/{row.sandbox_id}/refreshes", json={"duration": 3601}).status_code == 400
        assert c.post(f"/sandboxes/{row.sandbox_id}/timeout", json={"timeout": 0}).json() == {
            "code": 400, "message": "Timeout must be greater than 0"}
        logs = c.get(f"/sandboxes/{row.sandbox_id}/logs")
        assert logs.status_code == 200 and logs.json() == {"logs": [], "logEntries": []}


def test_expired_rows_are_killed_by_the_timer(server: Server, api_key: str, team_id: str) -> None:
    row = insert_sandbox(server.store, team_id, end_at=datetime.now(UTC) + timedelta(seconds=1),
                         meta={"run": "expiry"})
    with server.client(api_key) as c:
        assert c.get(f"/sandboxes/{row.sandbox_id}").status_code == 200
        began = time.monotonic()
        wait_until(lambda: c.get(f"/sandboxes/{row.sandbox_id}").status_code != 200, 10,
                   "the expiry timer to kill the sandbox", interval=0.2)
        waited = time.monotonic() - began
    assert waited < 4
    record = server.store.get_sandbox(row.sandbox_id)
    assert record.state == "killed" and record.killed_at is not None


def test_many_concurrent_requests(server: Server, api_key: str, team_id: str) -> None:
    """SQLite under concurrent writers (timeouts, kills, key checks) and readers: no 'database is locked'."""
    import concurrent.futures

    rows = [insert_sandbox(server.store, team_id, meta={"run": "busy"}).sandbox_id for _ in range(20)]

    def hammer(sandbox_id: str) -> list[int]:
        with server.client(api_key) as c:
            return [c.post(f"/sandboxes/{sandbox_id}/timeout", json={"timeout": 600}).status_code,
                    c.get("/v2/sandboxes", params={"limit": 5}).status_code,
                    c.post(f"/sandboxes/{sandbox_id}/refreshes", json={"duration": 700}).status_code,
                    c.delete(f"/sandboxes/{sandbox_id}").status_code]

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(hammer, rows))
    assert results == [[204, 200, 204, 204]] * 20
