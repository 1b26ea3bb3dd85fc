"""watch_dir through the released e2b SDK, sync (polled watcher) and async (stream)."""

from __future__ import annotations

import asyncio

import pytest
from e2b import AsyncSandbox, FilesystemEventType, Sandbox
from e2b.exceptions import NotFoundException

from tests.helpers import wait_until


def _wait_events(handle, predicate, timeout: float = 10.0):
    seen = []

    def arrived():
        seen.extend(handle.get_new_events())
        return predicate(seen) and seen

    return wait_until(arrived, timeout, "the watch events", interval=0.1, show=lambda: seen)


def test_sync_watch_dir(sbx: Sandbox, workdir: str) -> None:
    handle = sbx.files.watch_dir(workdir)
    sbx.files.write(f"{workdir}/w.txt", "1")
    sbx.files.remove(f"{workdir}/w.txt")
    events = _wait_events(handle, lambda ev: any(e.type == FilesystemEventType.REMOVE for e in ev))
    assert ("w.txt", FilesystemEventType.CREATE) in [(e.name, e.type) for e in events]
    handle.stop()


def test_sync_watch_dir_recursive(sbx: Sandbox, workdir: str) -> None:
    sbx.files.make_dir(f"{workdir}/sub")
    handle = sbx.files.watch_dir(workdir, recursive=True)
    sbx.files.write(f"{workdir}/sub/inner.txt", "x")
    events = _wait_events(handle, lambda ev: any(e.name == "sub/inner.txt" for e in ev))
    assert any(e.type == FilesystemEventType.CREATE for e in events if e.name == "sub/inner.txt")
    handle.stop()


def test_watch_missing_dir_is_not_found(sbx: Sandbox) -> None:
    with pytest.raises(NotFoundException):
        sbx.files.watch_dir("/no/such/dir")


async def test_async_watch_dir(asbx: AsyncSandbox, workdir: str) -> None:
    events = []
    got = asyncio.Event()

    def on_event(event) -> None:
        events.append(event)
        if event.type == FilesystemEventType.WRITE:
            got.set()

    handle = await asbx.files.watch_dir(workdir, on_event)
    await asbx.files.write(f"{workdir}/async.txt", "hello")
    await asyncio.wait_for(got.wait(), 10)
    await handle.stop()
    assert {e.name for e in events} == {"async.txt"}


async def test_async_commands(asbx: AsyncSandbox) -> None:
    results = await asyncio.gather(*(asbx.commands.run(f"echo {i}") for i in range(20)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]
