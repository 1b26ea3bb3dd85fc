"""MicrovmRuntime itself: clones of the base template's snapshot, their identity, their lifecycle.

One runtime and one snapshot for the module (the snapshot build boots a guest: tens of seconds under TCG).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sandhive.node import envd_client
from sandhive.node.microvm import MicrovmRuntime, qemu
from sandhive.node.runtime import SandboxHandle, SandboxSpec, TemplateImage
from sandhive.templates import base
from sandhive.templates.layout import template_dir

from .leftovers import sandbox_leftovers

pytestmark = [pytest.mark.microvm, pytest.mark.timeout(900)]
COMMAND_TIMEOUT = 120.0  # seconds: a clone's first commands run emulated under TCG


@pytest.fixture(scope="module")
async def runtime(microvm_root: Path) -> AsyncIterator[MicrovmRuntime]:
    data_dir = microvm_root / "runtime"
    rt = MicrovmRuntime(data_dir)
    await rt.prepare()
    print(f"accelerator: {rt.accelerator} ({rt.acceleration.reason if rt.acceleration else ''})")
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
    started = time.monotonic()
    await runtime.snapshot_for(spec(image, "warm"))
    print(f"template snapshot ready in {time.monotonic() - started:.1f} s")
    return image


def spec(template: TemplateImage, sandbox_id: str) -> SandboxSpec:
    return SandboxSpec(sandbox_id, template, template.cpu_count, template.memory_mb, template.disk_mb)


async def sh(handle: SandboxHandle, line: str, user: str = "user") -> str:
    async with httpx.AsyncClient(trust_env=False) as http:
        code, out = await envd_client.run(http, handle.envd_url, envd_client.Command(line, user, "/", {}),
                                          COMMAND_TIMEOUT)
    assert code == 0, f"`{line}` exited {code}: {out}"
    return out


async def test_a_clone_runs_commands_and_reports_itself(runtime: MicrovmRuntime, template: TemplateImage) -> None:
    handle = await runtime.start(spec(template, "mvmbasic"))
    try:
        assert await runtime.is_running(handle)
        assert handle.state["accelerator"] == runtime.accelerator
        out = await sh(handle, "echo Hello; id -un; uname -r; cat /proc/cmdline; ls /.sandhive/usr/bin/python3.11")
        lines = out.splitlines()
        assert lines[0] == "Hello" and lines[1] == "user"
        assert lines[2] == runtime.inputs.assets.kernel_release  # its own kernel, not the host's
        assert "/.sandhive/usr/bin/python3.11" in out
        assert (await sh(handle, "ip -4 -o addr show eth0")).split()[3] == "169.254.0.21/30"
        usage = await runtime.usage(handle)
        assert usage.mem_total == template.memory_mb * 2**20 and usage.mem_used > 0
        assert usage.disk_total == template.disk_mb * 2**20 and usage.disk_used > 0
        assert "restored from template snapshot" in (await runtime.logs(handle))[0]
    finally:
        await runtime.stop(handle)
    assert sandbox_leftovers(runtime.data_dir, handle.sandbox_id) == []


async def test_user_ports_are_reachable_from_the_host(runtime: MicrovmRuntime, template: TemplateImage) -> None:
    """The netns forwards any port of the slot address to the guest, as the proxy needs for user ports."""
    handle = await runtime.start(spec(template, "mvmport"))
    try:
        await sh(handle, "mkdir -p /tmp/www && echo served > /tmp/www/index.html && "
                         "(cd /tmp/www && setsid python3 -m http.server 8080 >/dev/null 2>&1 &)")
        body = ""
        async with httpx.AsyncClient(trust_env=False) as http:
            deadline = time.monotonic() + COMMAND_TIMEOUT
            while time.monotonic() < deadline and body != "served\n":
                try:
                    body = (await http.get(f"http://{handle.address}:8080/index.html", timeout=5)).text
                except httpx.HTTPError:
                    await asyncio.sleep(0.2)
        assert body == "served\n"
    finally:
        await runtime.stop(handle)


async def test_two_clones_never_share_random_bytes(runtime: MicrovmRuntime, template: TemplateImage) -> None:
    a, b = await runtime.start(spec(template, "mvmrnga")), await runtime.start(spec(template, "mvmrngb"))
    try:
        ra, rb = await asyncio.gather(sh(a, "head -c16 /dev/urandom | od -An -tx1"),
                                      sh(b, "head -c16 /dev/urandom | od -An -tx1"))
        assert len(ra.split()) == 16 and ra != rb
    finally:
        await asyncio.gather(runtime.stop(a), runtime.stop(b))


async def test_a_clone_sees_the_wall_clock_of_its_creation(runtime: MicrovmRuntime, template: TemplateImage,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the snapshot's: without the reseed /init a clone's clock is behind by the snapshot's age."""
    snap = await runtime.snapshot_for(spec(template, "x"))
    age = time.time() - (snap.directory / "state").stat().st_mtime
    if age < 20:
        await asyncio.sleep(20 - age)
    handle = await runtime.start(spec(template, "mvmclock"))
    try:
        guest = int(await sh(handle, "date +%s"))
        assert abs(guest - time.time()) < 5, f"guest clock {guest}, host {time.time():.0f}"
    finally:
        await runtime.stop(handle)
    async def no_reseed(_handle: SandboxHandle) -> None:
        return None

    monkeypatch.setattr(runtime, "reseed", no_reseed)
    stale = await runtime.start(spec(template, "mvmstale"))
    try:
        lag = time.time() - int(await sh(stale, "date +%s"))
        assert lag > 15, f"a clone without the reseed /init should lag the snapshot's age; it lags {lag:.0f} s"
    finally:
        await runtime.stop(stale)


async def test_a_dead_qemu_is_noticed_and_stop_frees_everything(runtime: MicrovmRuntime,
                                                               template: TemplateImage) -> None:
    handle = await runtime.start(spec(template, "mvmdies"))
    try:
        os.kill(handle.state["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while await runtime.is_running(handle) and time.monotonic() < deadline:  # noqa: ASYNC110 — QEMU's end
            await asyncio.sleep(0.05)
        assert not await runtime.is_running(handle)
        assert handle.sandbox_id in await runtime.running_ids()  # half-torn-down: still to be stopped
    finally:
        await runtime.stop(handle)
    assert sandbox_leftovers(runtime.data_dir, handle.sandbox_id) == []
    await runtime.stop(handle)  # twice is fine


async def test_a_restarted_runtime_adopts_running_vms(runtime: MicrovmRuntime, template: TemplateImage) -> None:
    handle = await runtime.start(spec(template, "mvmadopt"))
    stored = SandboxHandle(handle.sandbox_id, handle.backend, handle.address, json.loads(json.dumps(handle.state)))
    after_restart = MicrovmRuntime(runtime.data_dir)  # what a new server process builds; no prepare needed
    try:
        assert handle.sandbox_id in await after_restart.running_ids()
        assert await after_restart.is_running(stored)
        assert (await sh(stored, "echo still here")) == "still here\n"
        pid = qemu.read_pid(after_restart.sandboxes_dir / handle.sandbox_id / "qemu.pid")
        assert pid == handle.state["pid"]
        await after_restart.stop(SandboxHandle(handle.sandbox_id, "microvm", ""))  # an orphan: id alone
    finally:
        await after_restart.close()
        await runtime.stop(handle)
    assert sandbox_leftovers(runtime.data_dir, handle.sandbox_id) == []


async def test_a_start_command_can_run_in_the_snapshot(runtime: MicrovmRuntime, template: TemplateImage) -> None:
    """With snapshot_start_cmd, the template's start command is started (and ready) before the snapshot is
    taken: clones resume with it already serving, and their handle says so."""
    with_server = dataclasses.replace(
        template, start_cmd="mkdir -p /tmp/s && cd /tmp/s && echo ready > r && exec python3 -m http.server 8081",
        ready_cmd="curl -sf http://127.0.0.1:8081/r")
    rt = MicrovmRuntime(runtime.data_dir, snapshot_start_cmd=True)
    await rt.prepare()
    handle = await rt.start(spec(with_server, "mvmstartcmd"))
    try:
        assert handle.state["start_cmd_in_snapshot"] is True
        async with httpx.AsyncClient(trust_env=False) as http:
            assert (await http.get(f"http://{handle.address}:8081/r", timeout=COMMAND_TIMEOUT)).text == "ready\n"
        assert "http.server 8081" in await sh(handle, "ps -eo args")
    finally:
        await rt.stop(handle)
        await rt.close()
    assert sandbox_leftovers(runtime.data_dir, handle.sandbox_id) == []
