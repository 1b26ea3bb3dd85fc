"""The API's timers and a restart's reconcile on the fake runtime and a real SQLite store (no server, no runc)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from sandhive.api.sandboxes import SandboxService
from sandhive.api.settings import Settings
from sandhive.api.timers import run_expiry
from sandhive.node.admission import Kind
from sandhive.node.runtime import SandboxHandle
from sandhive.store import Store
from tests.api.rig import insert_sandbox
from tests.unit.fakes import Rig, make_node, settle


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[SandboxService, Rig]]:
    rig = make_node()
    store = Store.open(tmp_path)
    store.migrate()
    service = SandboxService(Settings(data_dir=tmp_path), store, rig.node, None, clock=rig.clock.utc)
    yield service, rig
    await service.close()


def team(svc: SandboxService) -> str:
    return svc.store.ensure_team("unit").id


def running(rig: Rig, sandbox_id: str) -> None:
    rig.runtime.running[sandbox_id] = SandboxHandle(sandbox_id, "fake", address=f"fake-{sandbox_id}")


async def test_expiry_kills_exactly_the_sandboxes_whose_deadline_passed(
        service: tuple[SandboxService, Rig]) -> None:
    svc, rig = service
    now = rig.clock.utc()
    due = insert_sandbox(svc.store, team(svc), backend="fake", end_at=now + timedelta(seconds=5)).sandbox_id
    later = insert_sandbox(svc.store, team(svc), backend="fake", end_at=now + timedelta(seconds=60)).sandbox_id
    running(rig, due)
    running(rig, later)

    await svc.expire_due()
    assert rig.runtime.stopped == []
    rig.clock.advance(6)
    await svc.expire_due()
    assert rig.runtime.stopped == [due]
    assert svc.store.get_sandbox(due).state == "killed" and svc.store.get_sandbox(later).state == "running"


async def test_run_expiry_passes_once_per_interval_and_survives_a_failing_pass(
        service: tuple[SandboxService, Rig]) -> None:
    svc, _ = service
    passes: list[str] = []
    slept: list[float] = []

    async def expire_due() -> None:
        passes.append("pass")
        if len(passes) == 1:
            raise OSError("database is locked")

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    svc.expire_due = expire_due  # type: ignore[method-assign]  # count passes, fail the first
    timer = asyncio.create_task(run_expiry(svc, 2.5, sleep=sleep))
    await settle(lambda: len(passes) >= 3)
    timer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await timer
    assert set(slept) == {2.5} and len(slept) >= len(passes)


async def test_reconcile_adopts_survivors_marks_the_dead_and_stops_orphans(
        service: tuple[SandboxService, Rig]) -> None:
    svc, rig = service
    alive = insert_sandbox(svc.store, team(svc), backend="fake", memory_mb=768).sandbox_id
    dead = insert_sandbox(svc.store, team(svc), backend="fake").sandbox_id
    foreign = insert_sandbox(svc.store, team(svc), backend="microvm").sandbox_id
    running(rig, alive)
    running(rig, "iorphanleftbyoldpool0")  # e.g. a warm-pool sandbox of the previous server

    await svc.reconcile()

    assert rig.runtime.running.keys() == {alive}
    assert "iorphanleftbyoldpool0" in rig.runtime.stopped and dead in rig.runtime.stopped
    assert {i: svc.store.get_sandbox(i).state for i in (alive, dead, foreign)} == {
        alive: "running", dead: "killed", foreign: "killed"}
    assert rig.node.admission.used(Kind.SANDBOX).memory_mb == 768  # the survivor's reservation is adopted

    rig.runtime.die(alive)  # and it is watched: dying by itself after the restart frees it
    await settle(lambda: svc.store.get_sandbox(alive).state == "killed", rounds=500, pause=0.01)
    assert rig.node.admission.used().memory_mb == 0
