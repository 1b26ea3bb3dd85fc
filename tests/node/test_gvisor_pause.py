"""Pause and resume on the gvisor backend (runsc), at the runtime level (issue 14, docs/persistence.md).

runsc cannot checkpoint a sandbox here, so a "memory" pause freezes it in place (`runsc pause`) after making its
files durable: by default (files in gVisor's own overlay) its changes to the template are read out through the
sandbox into a tar (`gvisor_files.py`), with files on disk (`--overlay2=none`) its writable layer is kept. A
frozen sandbox that is gone (a host reboot) resumes by a cold boot of those files; a "filesystem" pause keeps
only them. A background shell loop holds a counter in memory: after a memory pause it must go on from where it
was (no ticks while frozen); after a filesystem pause its files are there and it is not. Everything else is a
clear error. Skips, with the reason printed, where runsc is missing or finds no platform.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandhive.errors import NodeError
from sandhive.node import network
from sandhive.node.errors import BackendUnavailable
from sandhive.node.gvisor import GVisorRuntime
from sandhive.node.gvisor_pause import FILES, IMAGE
from sandhive.node.node import Node
from sandhive.node.request import CreateRequest, Identity
from sandhive.node.runtime import COLD_BOOTED, SandboxHandle, SandboxSpec, TemplateImage
from sandhive.node.saved import read_record
from tests.helpers import read_count, wait_until_async

from .conftest import sdk

COUNTER_LOOP = ("echo kept > /root/file; echo mine > /home/user/file; chown 1000:1000 /home/user/file; "
                "(i=0; while true; do i=$((i+1)); echo $i > /root/counter; sleep 0.1; done) >/dev/null 2>&1 &")


@pytest.fixture(scope="module")
async def runtimes(data_dir: Path) -> AsyncIterator[dict[str, GVisorRuntime]]:
    """The backend as it runs by default (files in gVisor's own overlay) and with files on disk."""
    if shutil.which("runsc") is None:
        reason = "runsc (gVisor) is not installed (make debian-packages)"
        print(f"skipping the gvisor pause tests: {reason}")
        pytest.skip(reason)
    made = {"default": GVisorRuntime(data_dir / "gvisor-pause"),
            "files_on_disk": GVisorRuntime(data_dir / "gvisor-pause-disk", files_on_disk=True)}
    try:
        for rt in made.values():
            await rt.prepare()
    except BackendUnavailable as exc:
        for rt in made.values():
            await rt.close()
        print(f"skipping the gvisor pause tests: {exc}")
        pytest.skip(f"gvisor cannot run here: {exc}")
    yield made
    for name, rt in made.items():
        leftovers = await rt.running_ids()
        await rt.close()
        assert not leftovers, f"gvisor ({name}) sandboxes left behind: {leftovers}"


@pytest.fixture
def default(runtimes: dict[str, GVisorRuntime]) -> GVisorRuntime:
    return runtimes["default"]


@pytest.fixture
def on_disk(runtimes: dict[str, GVisorRuntime]) -> GVisorRuntime:
    return runtimes["files_on_disk"]


@pytest.fixture
async def started(runtimes: dict[str, GVisorRuntime]) -> AsyncIterator[list[tuple[GVisorRuntime, SandboxHandle]]]:
    """Sandboxes a test started (the last handle of each id counts); all are gone when it ends."""
    handles: list[tuple[GVisorRuntime, SandboxHandle]] = []
    yield handles
    for rt, handle in {h.sandbox_id: (rt, h) for rt, h in handles}.values():
        await rt.stop(handle)


async def _start(rt: GVisorRuntime, template: TemplateImage,
                 handles: list[tuple[GVisorRuntime, SandboxHandle]]) -> SandboxHandle:
    """A sandbox through the node (envd initialised as for a user); the node is not closed: it owns `rt`."""
    handle = await Node(rt).create(CreateRequest(template, cpu_count=1, memory_mb=256, disk_mb=64,
                                                 allow_internet_access=False), Identity(default_user="root"))
    handles.append((rt, handle))
    return handle


def _spec(handle: SandboxHandle, template: TemplateImage) -> SandboxSpec:
    return SandboxSpec(handle.sandbox_id, template, cpu_count=1, memory_mb=256, disk_mb=64,
                       allow_internet_access=False)


def _sh(handle: SandboxHandle, cmd: str) -> str:
    return sdk(handle).commands.run(cmd, user="root", timeout=60).stdout


def _counter(handle: SandboxHandle) -> int:
    return read_count(lambda: _sh(handle, "cat /root/counter"))


def _traces(sandbox_id: str) -> list[str]:
    """What a sandbox could leave on the host: its netns, its mounts, its network slot."""
    found = [f"netns {sandbox_id}"] if sandbox_id in network.existing_sandbox_netns() else []
    with open("/proc/self/mountinfo") as f:
        found += [line.split()[4] for line in f if sandbox_id in line]
    found += [f"slot {p.name}" for p in network.HOST_SLOTS_DIR.iterdir() if p.read_text() == sandbox_id]
    return found


@pytest.mark.parametrize("where", ["default", "files_on_disk"])
async def test_memory_pause_freezes_and_resume_goes_on(
        where: str, runtimes: dict[str, GVisorRuntime], busybox_template: TemplateImage,
        started: list[tuple[GVisorRuntime, SandboxHandle]], tmp_path: Path) -> None:
    rt = runtimes[where]
    handle = await _start(rt, busybox_template, started)
    await asyncio.to_thread(_sh, handle, COUNTER_LOOP)
    await asyncio.sleep(1.0)
    read_at = time.monotonic()
    before = await asyncio.to_thread(_counter, handle)
    assert before >= 3

    saved = await rt.pause(handle, "memory", tmp_path / "paused")
    paused_at = time.monotonic()
    assert saved.mode == "memory" and saved.state["frozen"]
    # The filesystem is kept durably too, for a resume after a host reboot: the layer, or the changes' tar.
    assert (saved.directory / (IMAGE if rt.files_on_disk else FILES)).is_file()
    assert read_record(saved.directory) == saved  # whole: a server that dies now finds it (`Pauses.recover`)
    assert await rt._state(handle.sandbox_id) == "paused"
    assert not await rt.is_running(handle)
    await asyncio.sleep(1.0)  # no ticks while frozen

    resumed_from = time.monotonic()
    resumed = await rt.resume(saved, _spec(handle, busybox_template))
    assert resumed.address == handle.address and await rt.is_running(resumed)
    after = await asyncio.to_thread(_counter, resumed)
    # The loop went on from its in-memory counter: not restarted at 1, and (almost) no ticks while frozen.
    running = (paused_at - read_at) + (time.monotonic() - resumed_from)  # a loaded host pauses slowly
    assert before <= after <= before + running / 0.1 + 3
    assert await asyncio.to_thread(_sh, resumed, "cat /root/file") == "kept\n"

    async def counting() -> bool:
        return await asyncio.to_thread(_counter, resumed) > after
    await wait_until_async(counting, 30, "the resumed loop counting on")


CHANGES = ("rm /etc/group; rm -r /mnt; mkdir -p /srv/new; echo deep > /srv/new/f; ln -s /root/file /srv/link; "
           "ln /root/file /root/hard; chmod 600 /etc/passwd; chown 1000:1000 /srv/new")
CHECK = ("cat /root/file /home/user/file /srv/new/f /srv/link; stat -c %u:%g /home/user/file /srv/new; "
         "stat -c %a /etc/passwd; stat -c %h /root/hard; readlink /srv/link; ls /etc/group /mnt 2>&1 || true")


@pytest.mark.parametrize("where", ["default", "files_on_disk"])
async def test_frozen_sandbox_gone_resumes_from_its_files(
        where: str, runtimes: dict[str, GVisorRuntime], busybox_template: TemplateImage,
        started: list[tuple[GVisorRuntime, SandboxHandle]], tmp_path: Path) -> None:
    """A host reboot ends a frozen sandbox: `stop_saved` does the same here (and frees everything it held);
    resume then cold-boots from the kept files — in the default configuration too, where they lived in
    gVisor's own overlay: new files and directories, owners, modes, links, hard links and deletions."""
    rt = runtimes[where]
    handle = await _start(rt, busybox_template, started)
    await asyncio.to_thread(_sh, handle, COUNTER_LOOP + CHANGES)
    saved = await rt.pause(handle, "memory", tmp_path / "paused")
    await rt.stop_saved(saved)
    assert handle.sandbox_id not in await rt.running_ids()
    assert _traces(handle.sandbox_id) == []
    assert (saved.directory / (IMAGE if rt.files_on_disk else FILES)).is_file()  # the node's to delete

    resumed = await rt.resume(saved, _spec(handle, busybox_template))
    started.append((rt, resumed))
    assert resumed.state.get(COLD_BOOTED)  # envd is new: the node prepares and inits it
    out = (await asyncio.to_thread(_sh, resumed, CHECK)).split("\n")
    assert out[:9] == ["kept", "mine", "deep", "kept", "1000:1000", "1000:1000", "600", "2", "/root/file"], out
    assert "No such file" in out[9] and "No such file" in out[10], out  # the deletions kept too


async def test_frozen_sandbox_gone_without_files_on_disk_is_lost(
        default: GVisorRuntime, busybox_template: TemplateImage,
        started: list[tuple[GVisorRuntime, SandboxHandle]], tmp_path: Path) -> None:
    """A frozen sandbox whose pause kept no files (one paused before files were kept by default) cannot come
    back once it is gone, and says so."""
    handle = await _start(default, busybox_template, started)
    saved = await default.pause(handle, "memory", tmp_path / "paused")
    saved.state["files_kept"] = False
    await default.stop_saved(saved)
    assert handle.sandbox_id not in await default.running_ids()
    assert _traces(handle.sandbox_id) == []
    with pytest.raises(NodeError) as err:
        await default.resume(saved, _spec(handle, busybox_template))
    assert err.value.status == 404 and "gone" in str(err.value)
    assert _traces(handle.sandbox_id) == []


@pytest.mark.parametrize("where", ["default", "files_on_disk"])
async def test_filesystem_pause_keeps_files_not_processes(
        where: str, runtimes: dict[str, GVisorRuntime], busybox_template: TemplateImage,
        started: list[tuple[GVisorRuntime, SandboxHandle]], tmp_path: Path) -> None:
    on_disk = runtimes[where]
    handle = await _start(on_disk, busybox_template, started)
    await asyncio.to_thread(_sh, handle, COUNTER_LOOP)
    await asyncio.sleep(0.5)
    saved = await on_disk.pause(handle, "filesystem", tmp_path / "paused")
    assert saved.mode == "filesystem" and not saved.state["frozen"]
    # Nothing of it runs or is held: no container, netns, mount or slot; only the saved directory.
    assert handle.sandbox_id not in await on_disk.running_ids()
    assert _traces(handle.sandbox_id) == []
    await on_disk.stop_saved(saved)  # nothing to free; harmless
    assert (saved.directory / (IMAGE if on_disk.files_on_disk else FILES)).is_file()

    # Take the next slot, so the resume lands in another slot (another host uid range) than the pause.
    other = await _start(on_disk, busybox_template, started)
    resumed = await on_disk.resume(saved, _spec(handle, busybox_template))
    started.append((on_disk, resumed))
    assert resumed.state["slot"] != handle.state["slot"] != other.state["slot"]
    out = await asyncio.to_thread(_sh, resumed, "cat /root/file; stat -c %u:%g /home/user/file; cat /root/counter")
    kept, owner, counter = out.split("\n")[:3]
    # The files (and their owners, re-owned into the new range) are there; the counter as last written to disk.
    assert kept == "kept" and owner == "1000:1000" and int(counter) >= 1
    await asyncio.sleep(1.0)
    assert await asyncio.to_thread(_counter, resumed) == int(counter)  # the loop was dropped: nothing counts


async def test_pause_of_a_gone_sandbox_fails_cleanly(
        on_disk: GVisorRuntime, busybox_template: TemplateImage,
        started: list[tuple[GVisorRuntime, SandboxHandle]], tmp_path: Path) -> None:
    handle = await _start(on_disk, busybox_template, started)
    await on_disk.stop(handle)
    for mode in ("memory", "filesystem"):
        with pytest.raises(NodeError) as err:
            await on_disk.pause(handle, mode, tmp_path / mode)  # type: ignore[arg-type]
        assert err.value.status == 409 and "gone" in str(err.value)
        assert not (tmp_path / mode).exists()
    assert _traces(handle.sandbox_id) == []


async def test_what_gvisor_cannot_do_is_a_409(
        runtimes: dict[str, GVisorRuntime], default: GVisorRuntime, busybox_template: TemplateImage,
        started: list[tuple[GVisorRuntime, SandboxHandle]], tmp_path: Path) -> None:
    """No snapshot with memory anywhere (both pause modes everywhere). The sandbox runs on untouched."""
    assert all(rt.persistence.pause_modes == ("memory", "filesystem") for rt in runtimes.values())
    assert not any(rt.persistence.memory_snapshots for rt in runtimes.values())
    handle = await _start(default, busybox_template, started)
    with pytest.raises(NodeError) as err:
        await default.snapshot(handle, tmp_path / "snap")
    assert err.value.status == 409 and "gvisor" in str(err.value)
    assert not (tmp_path / "snap").exists()
    assert await default.is_running(handle)
    assert await asyncio.to_thread(_sh, handle, "echo up") == "up\n"
