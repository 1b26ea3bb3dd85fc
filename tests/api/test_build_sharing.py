"""Template builds shared by control-plane replicas (issue 17, store/build_sharing.py, templates/build_sharing.py):
one replica claims a build; a replica that stops heartbeating has its builds failed by another with a clear
reason, while a replica that (re)starts fails nothing another live replica runs; log lines appended in batches
read back in order from any replica; names set after a build overlay the image's."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

from sandhive.store import Store, TemplateBuildRecord
from sandhive.store.store import now_utc
from sandhive.templates.build_logs import BuildLogs
from sandhive.templates.build_sharing import ORPHANED, STALE_SECONDS, BuildSharing
from sandhive.templates.info import TemplateInfo


def migrated(tmp_path: Path) -> Store:
    store = Store.open(tmp_path)
    store.migrate()
    return store


def add_build(store: Store, team_id: str, template_id: str = "t" * 20) -> str:
    now = now_utc()
    build_id = str(uuid.uuid4())
    store.add_build(TemplateBuildRecord(build_id=build_id, template_id=template_id, team_id=team_id,
                                        status="waiting", tags=[], cpu_count=1, memory_mb=256, disk_mb=1024,
                                        created_at=now, updated_at=now))
    return build_id


def sharing(store: Store, data_dir: Path) -> BuildSharing:
    return BuildSharing(store, BuildLogs(data_dir), uploads=None)  # type: ignore[arg-type]  # no uploads here


def test_one_replica_claims_a_build(tmp_path: Path) -> None:
    store = migrated(tmp_path)
    team = store.ensure_team("default").id
    build_id = add_build(store, team)
    a, b = sharing(store, tmp_path / "a"), sharing(store, tmp_path / "b")
    assert asyncio.run(a.claim(build_id)) is True
    assert asyncio.run(b.claim(build_id)) is False
    assert asyncio.run(a.claim(build_id)) is False  # a second start through the same replica too
    assert store.get_build(build_id).owner == a.owner  # type: ignore[union-attr]


def test_a_silent_replicas_builds_fail_and_a_live_ones_run_on(tmp_path: Path) -> None:
    store = migrated(tmp_path)
    team = store.ensure_team("default").id
    dead_build, live_build, unstarted = add_build(store, team), add_build(store, team), add_build(store, team)
    dead, live = sharing(store, tmp_path / "dead"), sharing(store, tmp_path / "live")
    asyncio.run(dead.claim(dead_build))
    asyncio.run(live.claim(live_build))
    store.update_build(dead_build, status="building")
    long_ago = now_utc() - timedelta(seconds=STALE_SECONDS + 5)
    store.heartbeat_builds(dead.owner, [dead_build], long_ago)  # its replica died: no heartbeat since
    store.heartbeat_builds(live.owner, [live_build], now_utc())
    restarted = sharing(store, tmp_path / "restarted")
    asyncio.run(restarted.fail_orphaned())  # what a (re)starting replica, and each replica's periodic check, does
    failed = store.get_build(dead_build)
    assert failed is not None and failed.status == "error" and failed.reason == {"message": ORPHANED}
    assert "replica running this build stopped" in ORPHANED
    assert store.get_build(live_build).status == "waiting"  # type: ignore[union-attr]
    assert store.get_build(unstarted).status == "waiting"  # type: ignore[union-attr]  # registered, not started


def test_log_lines_read_the_same_through_another_replica(tmp_path: Path) -> None:
    store = migrated(tmp_path)
    team = store.ensure_team("default").id
    build_id = add_build(store, team)
    runner, reader = sharing(store, tmp_path / "a"), sharing(store, tmp_path / "b")
    log = runner.logs.open(build_id)

    async def scenario() -> list[str]:
        for i in range(5):
            log.add(f"line {i}")
        await runner.flush()
        log.add("line 5", "error")
        await runner.flush(build_id)
        await runner.flush()  # nothing new: nothing appended twice
        return [e["message"] for e in (await reader.read_log(build_id)).entries()]

    assert asyncio.run(scenario()) == [f"line {i}" for i in range(6)]
    errors = asyncio.run(reader.read_log(build_id)).entries(level="error")
    assert [e["message"] for e in errors] == ["line 5"]
    runner.logs.close()


def test_names_set_after_a_build_overlay_the_image(tmp_path: Path) -> None:
    from sandhive.cluster.template_names import overlay, set_aliases, set_tags

    store = migrated(tmp_path)
    team = store.ensure_team("default").id
    store.claim_template("a" * 20, team, "app")
    info = TemplateInfo.from_json(TemplateInfo(id="a" * 20, aliases=("app",)).to_json())
    assert overlay(info, store) == info
    set_aliases(store, lambda i: overlay(info, store) if i == info.id else None, info.id, ["app", "app2"], [info.id])
    set_tags(store, lambda i: overlay(info, store) if i == info.id else None, info.id, ["v1", "v2"])
    seen = overlay(info, store)
    assert seen.aliases == ("app", "app2") and seen.build["tags"] == ["v1", "v2"]
