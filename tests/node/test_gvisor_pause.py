"""Pause and resume on the gvisor backend (runsc), at the runtime level (issue 14, docs/persistence.md).

runsc cannot checkpoint a host-networked sandbox, so a "memory" pause freezes the sandbox in place (`runsc
pause`) after making its writable layer durable, and a "filesystem" pause keeps only the layer. A background
shell loop holds a counter in memory: after a memory pause it must go on from where it was (no ticks while
frozen); after a filesystem pause its files are there and it is not. Snapshots with memory are a clear 409.
Skips, with the reason printed, where runsc is missing or finds no platform.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandhive.errors import NodeError
from sandhive.node import network
from sandhive.node.errors import BackendUnavailable
from sandhive.node.gvisor import GVisorRuntime
from sandhive.node.gvisor_pause import IMAGE
from sandhive.node.node import Node
from sandhive.node.request import CreateRequest, Identity
from sandhive.node.runtime import SandboxHandle, SandboxSpec, TemplateImage
from tests.helpers import wait_until_async

from .conftest import sdk

COUNTER_LOOP = ("echo kept > /root/file; echo mine > /home/user/file; chown 1000:1000 /home/user/file; "
                "(i=0; while true; do i=$((i+1)); echo $i > /root/counter; sleep 0.1; done) >/dev/null 2>&1 &")


@pytest.fixture(scope="module")
async def gvisor(data_dir: Path) -> AsyncIterator[GVisorRuntime]:
    if shutil.which("runsc") is None:
        reason = "runsc (gVisor) is not installed (make debian-packages)"
        print(f"skipping the gvisor pause tests: {reason}")
        pytest.skip(reason)
    rt = GVisorRuntime(data_dir / "gvisor-pause")
    try:
        await rt.prepare()
    except BackendUnavailable as exc:
        await rt.close()
        print(f"skipping the gvisor pause tests: {exc}")
        pytest.skip(f"gvisor cannot run here: {exc}")
    yield rt
    leftovers = await rt.running_ids()
    await rt.close()
    assert not leftovers, f"gvisor sandboxes left behind: {leftovers}"


@pytest.fixture
async def node(gvisor: GVisorRuntime) -> AsyncIterator[Node]:
    yield Node(gvisor)  # not closed here: that would close the module's runtime


@pytest.fixture
async def started(node: Node, gvisor: GVisorRuntime, busybox_template: TemplateImage,
                  ) -> AsyncIterator[list[SandboxHandle]]:
    """Sandboxes a test started (the last handle of each id counts); all are gone when it ends."""
    handles: list[SandboxHandle] = []
    yield handles
    for handle in {h.sandbox_id: h for h in handles}.values():
        await gvisor.stop(handle)


async def _start(node: Node, template: TemplateImage, handles: list[SandboxHandle]) -> SandboxHandle:
    handle = await node.create(CreateRequest(template, cpu_count=1, memory_mb=256, disk_mb=64,
                                             allow_internet_access=False), Identity(default_user="root"))
    handles.append(handle)
    return handle


def _spec(handle: SandboxHandle, template: TemplateImage) -> SandboxSpec:
    return SandboxSpec(handle.sandbox_id, template, cpu_count=1, memory_mb=256, disk_mb=64,
                       allow_internet_access=False)


def _sh(handle: SandboxHandle, cmd: str) -> str:
    return sdk(handle).commands.run(cmd, user="root", timeout=60).stdout


def _counter(handle: SandboxHandle) -> int:
    return int(_sh(handle, "cat /root/counter"))


def _traces(sandbox_id: str) -> list[str]:
    """What a sandbox could leave on the host: its netns, its mounts, its network slot."""
    found = [f"netns {sandbox_id}"] if sandbox_id in network.existing_sandbox_netns() else []
    with open("/proc/self/mountinfo") as f:
        found += [line.split()[4] for line in f if sandbox_id in line]
    found += [f"slot {p.name}" for p in network.HOST_SLOTS_DIR.iterdir() if p.read_text() == sandbox_id]
    return found


async def test_memory_pause_freezes_and_resume_goes_on(
        gvisor: GVisorRuntime, node: Node, busybox_template: TemplateImage, started: list[SandboxHandle],
        tmp_path: Path) -> None:
    handle = await _start(node, busybox_template, started)
    await asyncio.to_thread(_sh, handle, COUNTER_LOOP)
    await asyncio.sleep(1.0)
    before = await asyncio.to_thread(_counter, handle)
    assert before >= 3

    saved = await gvisor.pause(handle, "memory", tmp_path / "paused")
    assert saved.mode == "memory" and saved.state["frozen"]
    assert (saved.directory / IMAGE).is_file()  # the filesystem is kept durably, for a resume after a reboot
    assert await gvisor._state(handle.sandbox_id) == "paused"
    assert not await gvisor.is_running(handle)
    await asyncio.sleep(1.0)  # no ticks while frozen

    resumed = await gvisor.resume(saved, _spec(handle, busybox_template))
    assert resumed.address == handle.address and await gvisor.is_running(resumed)
    after = await asyncio.to_thread(_counter, resumed)
    # The loop went on from its in-memory counter: not restarted at 1, and (almost) no ticks while frozen.
    assert before <= after < before + 10
    assert await asyncio.to_thread(_sh, resumed, "cat /root/file") == "kept\n"

    async def counting() -> bool:
        return await asyncio.to_thread(_counter, resumed) > after
    await wait_until_async(counting, 30, "the resumed loop counting on")


async def test_frozen_sandbox_gone_resumes_from_its_files(
        gvisor: GVisorRuntime, node: Node, busybox_template: TemplateImage, started: list[SandboxHandle],
        tmp_path: Path) -> None:
    """A host reboot ends a frozen sandbox: `stop_saved` does the same here (and frees everything it held);
    resume then cold-boots from the kept layer."""
    handle = await _start(node, busybox_template, started)
    await asyncio.to_thread(_sh, handle, COUNTER_LOOP)
    saved = await gvisor.pause(handle, "memory", tmp_path / "paused")
    await gvisor.stop_saved(saved)
    assert handle.sandbox_id not in await gvisor.running_ids()
    assert _traces(handle.sandbox_id) == []
    assert (saved.directory / IMAGE).is_file()  # the saved directory is the node's to delete

    resumed = await gvisor.resume(saved, _spec(handle, busybox_template))
    started.append(resumed)
    assert await asyncio.to_thread(_sh, resumed, "cat /root/file") == "kept\n"


async def test_filesystem_pause_keeps_files_not_processes(
        gvisor: GVisorRuntime, node: Node, busybox_template: TemplateImage, started: list[SandboxHandle],
        tmp_path: Path) -> None:
    handle = await _start(node, busybox_template, started)
    await asyncio.to_thread(_sh, handle, COUNTER_LOOP)
    await asyncio.sleep(0.5)
    saved = await gvisor.pause(handle, "filesystem", tmp_path / "paused")
    assert saved.mode == "filesystem" and not saved.state["frozen"]
    # Nothing of it runs or is held: no container, netns, mount or slot; only the saved directory.
    assert handle.sandbox_id not in await gvisor.running_ids()
    assert _traces(handle.sandbox_id) == []
    await gvisor.stop_saved(saved)  # nothing to free; harmless
    assert (saved.directory / IMAGE).is_file()

    # Take the next slot, so the resume lands in another slot (another host uid range) than the pause.
    other = await _start(node, busybox_template, started)
    resumed = await gvisor.resume(saved, _spec(handle, busybox_template))
    started.append(resumed)
    assert resumed.state["slot"] != handle.state["slot"] != other.state["slot"]
    out = await asyncio.to_thread(_sh, resumed, "cat /root/file; stat -c %u:%g /home/user/file; cat /root/counter")
    kept, owner, counter = out.split("\n")[:3]
    # The files (and their owners, re-owned into the new range) are there; the counter as last written to disk.
    assert kept == "kept" and owner == "1000:1000" and int(counter) >= 1
    await asyncio.sleep(1.0)
    assert await asyncio.to_thread(_counter, resumed) == int(counter)  # the loop was dropped: nothing counts


async def test_pause_of_a_gone_sandbox_fails_cleanly(
        gvisor: GVisorRuntime, node: Node, busybox_template: TemplateImage, started: list[SandboxHandle],
        tmp_path: Path) -> None:
    handle = await _start(node, busybox_template, started)
    await gvisor.stop(handle)
    for mode in ("memory", "filesystem"):
        with pytest.raises(NodeError) as err:
            await gvisor.pause(handle, mode, tmp_path / mode)  # type: ignore[arg-type]
        assert err.value.status == 409 and "gone" in str(err.value)
        assert not (tmp_path / mode).exists()
    assert _traces(handle.sandbox_id) == []


async def test_snapshots_with_memory_are_refused(
        gvisor: GVisorRuntime, node: Node, busybox_template: TemplateImage, started: list[SandboxHandle],
        tmp_path: Path) -> None:
    assert gvisor.persistence.pause_modes == ("memory", "filesystem")
    assert not gvisor.persistence.memory_snapshots
    handle = await _start(node, busybox_template, started)
    with pytest.raises(NodeError) as err:
        await gvisor.snapshot(handle, tmp_path / "snap")
    assert err.value.status == 409 and "gvisor" in str(err.value)
    assert await gvisor.is_running(handle)
