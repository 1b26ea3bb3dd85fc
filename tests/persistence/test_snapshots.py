"""Snapshots with the released e2b SDK against a live server on the container backend (issue 14).

`create_snapshot` of a running sandbox, then two `Sandbox.create(snapshot_id)`: both carry the source's memory
(a background loop goes on from its in-memory count) and files, each is a sandbox of its own, and the source
runs on with its id and end time. Snapshots are listed, paged and deleted as E2B does.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from e2b import Sandbox, SandboxException, SandboxNotFoundException

from tests.persistence.snapshot_rig import Live, counter, live_server, point_sdk, start_counting


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    yield from live_server("snapshots")


@pytest.fixture(autouse=True)
def sdk_env(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    point_sdk(monkeypatch, live)


def test_two_sandboxes_from_one_snapshot_carry_memory_and_files_and_the_source_runs_on(live: Live) -> None:
    source = Sandbox.create(timeout=300)
    try:
        start_counting(source)
        end_before = source.get_info().end_at
        snap = source.create_snapshot()
        at_snapshot = counter(source)
        assert snap.snapshot_id.endswith(":default") and snap.names == []

        copies = [Sandbox.create(snap.snapshot_id, timeout=120) for _ in range(2)]
        ids = {source.sandbox_id, *(c.sandbox_id for c in copies)}
        assert len(ids) == 3
        for copy in copies:
            value = counter(copy)
            # Went on from the snapshot's in-memory count: not restarted at 1, not far past the snapshot point.
            assert at_snapshot - 20 <= value <= at_snapshot + 300, (value, at_snapshot)
            assert copy.files.read("/home/user/kept") == "kept\n"
            assert copy.commands.run("hostname").stdout.strip() == copy.sandbox_id
            assert copy.commands.run("echo $E2B_SANDBOX_ID").stdout.strip() == copy.sandbox_id
            copy.files.write("/home/user/mine", copy.sandbox_id)
        for copy in copies:
            assert copy.files.read("/home/user/mine") == copy.sandbox_id
        assert not source.files.exists("/home/user/mine")

        # The source runs on, counting, with its id and end time.
        assert source.is_running()
        assert counter(source) > at_snapshot
        assert source.get_info().end_at == end_before
        for copy in copies:
            copy.kill()
    finally:
        source.kill()


def test_snapshots_are_listed_named_paged_and_deleted(live: Live) -> None:
    source = Sandbox.create(timeout=120)
    try:
        first = source.create_snapshot(name="first")
        second = Sandbox.create_snapshot(source.sandbox_id)
        assert first.snapshot_id.endswith("/first:default") and first.names == [first.snapshot_id]

        listed = [s.snapshot_id for s in Sandbox.list_snapshots(sandbox_id=source.sandbox_id).next_items()]
        assert set(listed) == {first.snapshot_id, second.snapshot_id}
        with httpx.Client(base_url=live.url, headers={"X-API-Key": live.key}, trust_env=False) as c:
            page = c.get("/snapshots", params={"sandboxID": source.sandbox_id, "limit": 1})
            assert page.status_code == 200 and len(page.json()) == 1 and page.headers["X-Next-Token"]
            rest = c.get("/snapshots", params={"sandboxID": source.sandbox_id, "limit": 1,
                                               "nextToken": page.headers["X-Next-Token"]})
            assert [*page.json(), *rest.json()] == [{"snapshotID": s, "names": n} for s, n in
                                                    ((second.snapshot_id, []), (first.snapshot_id, first.names))]
            assert "X-Next-Token" not in rest.headers
            assert c.get("/snapshots", params={"name": "first"}).json()[0]["snapshotID"] == first.snapshot_id

        # A named snapshot starts by its name too.
        by_name = Sandbox.create("first", timeout=60)
        assert by_name.commands.run("true").exit_code == 0
        by_name.kill()

        assert Sandbox.delete_snapshot(first.snapshot_id) is True
        assert Sandbox.delete_snapshot(second.snapshot_id) is True
        assert Sandbox.delete_snapshot(second.snapshot_id) is False
        assert list(Sandbox.list_snapshots(sandbox_id=source.sandbox_id).next_items()) == []
        with pytest.raises(SandboxException):
            Sandbox.create(second.snapshot_id, timeout=60)
    finally:
        source.kill()


def test_snapshot_errors(live: Live) -> None:
    with pytest.raises(SandboxNotFoundException):
        Sandbox.create_snapshot("inosuchsandbox0000000")
    with httpx.Client(base_url=live.url, headers={"X-API-Key": live.key}, trust_env=False) as c:
        r = c.post("/sandboxes/inosuchsandbox0000000/snapshots", json={})
        assert r.status_code == 404 and r.json()["code"] == 404
        r = c.get("/snapshots", params={"nextToken": "garbage"})
        assert r.status_code == 400
        r = c.post("/sandboxes/inosuchsandbox0000000/snapshots", json={"name": "Bad Name!"})
        assert r.status_code == 400


def test_sandhive_sdk_and_cli_snapshot_fork_list_and_delete(live: Live) -> None:
    """Sandhive's own SDK (both faces, one core) and CLI over the same routes."""
    import asyncio

    import sandhive
    from tests.api.rig import cli

    opts = {"api_key": live.key, "api_url": live.url, "sandbox_url": live.url}
    source = sandhive.Sandbox.create(timeout=120, **opts)
    try:
        source.files.write("/home/user/note", "from the source")
        info = source.create_snapshot(name="sdk")
        assert isinstance(info, sandhive.SnapshotInfo) and info.snapshot_id.endswith("/sdk:default")
        forks = source.fork(count=1, timeout=60)
        assert len(forks) == 1 and isinstance(forks[0], sandhive.Sandbox), forks
        assert forks[0].files.read("/home/user/note") == "from the source"
        forks[0].kill()

        async def async_face() -> str:
            copy = await sandhive.AsyncSandbox.create(info.snapshot_id, timeout=60, **opts)
            try:
                return await copy.files.read("/home/user/note")
            finally:
                await copy.kill()

        assert asyncio.run(async_face()) == "from the source"
        assert [s.snapshot_id for s in sandhive.Sandbox.list_snapshots(source.sandbox_id, **opts)] == [
            info.snapshot_id]

        env = {"SANDHIVE_API_URL": live.url, "SANDHIVE_API_KEY": live.key}
        taken = cli("sandbox", "snapshot", source.sandbox_id, "--name", "cli", env=env).stdout.strip()
        assert taken.endswith("/cli:default")
        listed = cli("snapshot", "list", "--sandbox", source.sandbox_id, env=env).stdout.split()
        assert listed == [taken, info.snapshot_id]
        copies = cli("sandbox", "fork", source.sandbox_id, "--count", "2", "--timeout", "60", env=env).stdout.split()
        assert len(copies) == 2 and source.sandbox_id not in copies
        cli("sandbox", "kill", *copies, env=env)
        cli("snapshot", "delete", taken, info.snapshot_id, env=env)
        assert cli("snapshot", "delete", taken, env=env, check=False).returncode == 3
        assert sandhive.Sandbox.list_snapshots(source.sandbox_id, **opts) == []
    finally:
        source.kill()
