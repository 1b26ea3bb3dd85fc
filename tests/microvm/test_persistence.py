"""The microvm backend's persistence (issue 14) at the runtime level: pause with and without memory, resume,
snapshot and restore into new sandboxes, each with real QEMU guests (TCG here: a few tests, small guests).

Envd holds an access token in every sandbox here, as under the API (the runtime's `token_for` gives it), so
the calls the runtime makes into a paused or restored guest are the authorised ones they are in production.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sandhive.node import envd_client
from sandhive.node.microvm import MicrovmRuntime
from sandhive.node.runtime import SandboxHandle, SandboxSpec, SavedSandbox, TemplateImage
from sandhive.templates import base
from sandhive.templates.layout import template_dir

from .leftovers import leftovers, qemu_pids, sandbox_leftovers

pytestmark = [pytest.mark.microvm, pytest.mark.timeout(900)]
COMMAND_TIMEOUT = 120.0  # seconds: commands run emulated under TCG
# A shell counting in its own memory, showing its pid and count in a file: the count goes on from where it
# was after a memory pause; after a filesystem pause the file stays and nothing counts any more.
COUNTER = ("setsid bash -c 'n=0; while :; do n=$((n+1)); echo \"$$ $n\" > /home/user/count.tmp; "
           "mv /home/user/count.tmp /home/user/count; sleep 0.2; done' >/dev/null 2>&1 < /dev/null &")


def token(sandbox_id: str) -> str:
    return f"token-of-{sandbox_id}"


@pytest.fixture(scope="module")
async def runtime(microvm_root: Path) -> AsyncIterator[MicrovmRuntime]:
    rt = MicrovmRuntime(microvm_root / "runtime", token_for=token)  # shares test_runtime's template snapshot
    await rt.prepare()
    try:
        yield rt
    finally:
        for sandbox_id in await rt.running_ids():
            await rt.stop(SandboxHandle(sandbox_id, rt.name, ""))
        await rt.close()


@pytest.fixture(scope="module")
async def template(runtime: MicrovmRuntime) -> TemplateImage:
    info = await asyncio.to_thread(base.build, runtime.data_dir, None, log=print)
    image = info.image(template_dir(runtime.data_dir, info.id))
    await runtime.snapshot_for(spec(image, "warm"))
    return image


def spec(template: TemplateImage, sandbox_id: str) -> SandboxSpec:
    return SandboxSpec(sandbox_id, template, template.cpu_count, template.memory_mb, template.disk_mb)


async def sh(handle: SandboxHandle, line: str, as_token: str | None = None) -> str:
    async with httpx.AsyncClient(trust_env=False) as http:
        code, out = await envd_client.run(http, handle.envd_url, envd_client.Command(line, "user", "/", {}),
                                          COMMAND_TIMEOUT, token=as_token or token(handle.sandbox_id))
    assert code == 0, f"`{line}` exited {code}: {out}"
    return out


async def started(runtime: MicrovmRuntime, template: TemplateImage, sandbox_id: str) -> SandboxHandle:
    """A sandbox whose envd took its token, as the node's /init gives it under the API."""
    handle = await runtime.start(spec(template, sandbox_id))
    async with httpx.AsyncClient(trust_env=False) as http:
        await envd_client.init(http, handle.envd_url, {"accessToken": token(sandbox_id)})
    return handle


async def count(handle: SandboxHandle) -> tuple[int, int]:
    """(pid, count) of the counting shell."""
    pid, n = (await sh(handle, "cat /home/user/count")).split()
    return int(pid), int(n)


async def counting(handle: SandboxHandle) -> tuple[int, int]:
    await sh(handle, "echo kept > /home/user/file && " + COUNTER)
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while True:
        try:
            pid, n = await count(handle)
        except AssertionError:  # not written yet
            pid, n = 0, 0
        if n >= 3 or time.monotonic() > deadline:
            return pid, n
        await asyncio.sleep(0.3)


async def goes_on(handle: SandboxHandle, pid: int, n: int) -> None:
    """The same shell counts on past `n` (it was not restarted: that would start at 1 with another pid)."""
    deadline = time.monotonic() + COMMAND_TIMEOUT
    now = await count(handle)
    while now[1] <= n and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        now = await count(handle)
    assert now[0] == pid and now[1] > n, f"counter {now}, before the pause ({pid}, {n})"


async def drop(runtime: MicrovmRuntime, *saved: SavedSandbox) -> None:
    """What the node does with a saved sandbox it no longer needs."""
    for s in saved:
        await runtime.stop_saved(s)
        shutil.rmtree(s.directory, ignore_errors=True)


async def test_memory_pause_and_resume_keep_a_process_counting(runtime: MicrovmRuntime, template: TemplateImage,
                                                              microvm_root: Path) -> None:
    handle = await started(runtime, template, "mvmpausemem")
    dest = microvm_root / "saved" / "mvmpausemem"
    paused = None
    try:
        pid, n = await counting(handle)
        t0 = time.monotonic()
        paused = await runtime.pause(handle, "memory", dest)
        print(f"memory pause: {time.monotonic() - t0:.2f} s, RAM stream {(dest / 'state').stat().st_size >> 20} MiB,"
              f" own disk layer {(dest / 'disk.qcow2').stat().st_blocks >> 11} MiB")
        assert paused.mode == "memory" and paused.source_id == handle.sandbox_id
        assert sandbox_leftovers(runtime.data_dir, handle.sandbox_id) == []  # nothing of it runs or is held
        files = saved_files(dest)
        t0 = time.monotonic()
        handle = await runtime.resume(paused, spec(template, handle.sandbox_id))
        print(f"memory resume: {time.monotonic() - t0:.2f} s")
        await goes_on(handle, pid, n)
        assert (await sh(handle, "cat /home/user/file")) == "kept\n"
        guest = int(await sh(handle, "date +%s"))
        assert abs(guest - time.time()) < 5, f"a resumed guest's clock is the host's: {guest} vs {time.time():.0f}"
        assert saved_files(dest) == files  # the saved directory is only read: resumable again
    finally:
        await runtime.stop(handle)
        if paused is not None:
            await drop(runtime, paused)
    assert sandbox_leftovers(runtime.data_dir, handle.sandbox_id) == []


def saved_files(directory: Path) -> dict[str, tuple[int, int]]:
    return {f.name: (f.stat().st_size, f.stat().st_mtime_ns) for f in directory.iterdir()}


async def test_filesystem_pause_keeps_files_and_drops_processes(runtime: MicrovmRuntime, template: TemplateImage,
                                                               microvm_root: Path) -> None:
    handle = await started(runtime, template, "mvmpausefs")
    paused = None
    try:
        pid, _ = await counting(handle)
        await sh(handle, "echo unsynced > /home/user/fresh")  # still in the guest's page cache: pause syncs it
        paused = await runtime.pause(handle, "filesystem", microvm_root / "saved" / "mvmpausefs")
        assert not (paused.directory / "state").exists()
        assert sandbox_leftovers(runtime.data_dir, handle.sandbox_id) == []
        t0 = time.monotonic()
        handle = await runtime.resume(paused, spec(template, handle.sandbox_id))
        print(f"filesystem resume (a cold boot): {time.monotonic() - t0:.1f} s")
        # A cold boot: envd is new and holds no token until the node's /init, as with any new sandbox.
        assert (await sh(handle, "cat /home/user/file /home/user/fresh")) == "kept\nunsynced\n"
        first = await sh(handle, "cat /home/user/count")
        await asyncio.sleep(1.0)
        assert await sh(handle, "cat /home/user/count") == first, "nothing counts after a filesystem pause"
        assert f"{pid} " not in await sh(handle, "ps -eo pid,args | grep -v grep | grep 'n=0' || true")
    finally:
        await runtime.stop(handle)
        if paused is not None:
            await drop(runtime, paused)
    assert sandbox_leftovers(runtime.data_dir, handle.sandbox_id) == []


async def test_two_restores_of_a_snapshot_are_independent_copies(runtime: MicrovmRuntime, template: TemplateImage,
                                                                microvm_root: Path) -> None:
    source = await started(runtime, template, "mvmsnapsrc")
    clones: list[SandboxHandle] = []
    snap = None
    try:
        pid, n = await counting(source)
        t0 = time.monotonic()
        snap = await runtime.snapshot(source, microvm_root / "saved" / "mvmsnap")
        print(f"snapshot: {time.monotonic() - t0:.2f} s")
        await goes_on(source, pid, n)  # the source runs on, same address
        # The directory holds everything it needs: moved away from where it was made, it still restores.
        moved = microvm_root / "saved-elsewhere"
        moved.mkdir()
        snap.directory = snap.directory.rename(moved / "mvmsnap")
        for sandbox_id in ("mvmclonea", "mvmcloneb"):
            t0 = time.monotonic()
            clones.append(await runtime.restore(snap, spec(template, sandbox_id)))
            print(f"restore {sandbox_id}: {time.monotonic() - t0:.2f} s")
        a, b = clones
        assert len({source.address, a.address, b.address}) == 3
        for clone in clones:
            await goes_on(clone, pid, n)  # the memory came along: the same shell counts on
            assert (await sh(clone, "cat /home/user/file")) == "kept\n"
            with pytest.raises(envd_client.EnvdError, match="refused"):  # the source's token opens no clone
                await sh(clone, "true", as_token=token(source.sandbox_id))
        ra, rb = await asyncio.gather(sh(a, "head -c16 /dev/urandom | od -An -tx1"),
                                      sh(b, "head -c16 /dev/urandom | od -An -tx1"))
        assert len(ra.split()) == 16 and ra != rb
        await sh(a, "echo mine > /home/user/only-a")
        assert (await sh(b, "ls /home/user")).split().count("only-a") == 0
        assert (await sh(source, "ls /home/user")).split().count("only-a") == 0
    finally:
        for handle in (*clones, source):
            await runtime.stop(handle)
        if snap is not None:
            await drop(runtime, snap)
    for handle in (*clones, source):
        assert sandbox_leftovers(runtime.data_dir, handle.sandbox_id) == []
    assert qemu_pids(microvm_root / "saved-elsewhere") == []
    assert leftovers(microvm_root / "saved-elsewhere") == []
