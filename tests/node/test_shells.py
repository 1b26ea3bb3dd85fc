"""Warm shells (container backend, `container_shells.py`): a pool miss served by a sandbox of no template whose
root is switched to the template's. Real runc, a node with one shell and no warm pools, so every create is a
miss. What a shell-served sandbox must be: the template's files and user, a working writable layer, the request's
limits, the mount table of a cold start, nothing left after a kill, and a memory pause (CRIU) that works.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandhive.images import node_toolchain
from sandhive.images.debian import BuildError
from sandhive.node import network
from sandhive.node.container import ContainerRuntime
from sandhive.node.node import Node
from sandhive.node.pool import PoolSettings
from sandhive.node.request import CreateRequest, Identity
from sandhive.node.runtime import SandboxHandle, TemplateImage

from .conftest import make_busybox_rootfs, sdk
from .test_checkpoint import COUNTER_LOOP, _counter


def counter(sandbox) -> int:  # noqa: ANN001
    """The loop's counter; read again if the read fell between the loop's truncation of the file and its write."""
    for _ in range(5):
        try:
            return _counter(sandbox)
        except ValueError:
            time.sleep(0.05)
    return _counter(sandbox)


@pytest.fixture(scope="module")
async def shell_node(data_dir: Path) -> AsyncIterator[Node]:
    """A container node with one warm shell and no warm pools, in a data dir of its own."""
    rt = ContainerRuntime(data_dir / "container-shells")
    await rt.prepare()
    node = Node(rt, pools=PoolSettings(size=0), shells=1)
    await node.start()
    yield node
    await node.close()
    leftovers = await rt.running_ids()
    assert not leftovers, f"sandboxes left behind: {leftovers}"


@pytest.fixture(scope="module")
def user_template(busybox_template: TemplateImage) -> TemplateImage:
    return TemplateImage("busybox-user", busybox_template.rootfs, default_user="user", default_workdir="/home/user")


async def ready_shell(node: Node, timeout: float = 60.0) -> str:
    """The id of the node's ready shell, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = [h for pool in node.shells._pools.values() for h in pool.ready]
        if ready:
            return ready[0].sandbox_id
        await asyncio.sleep(0.05)
    raise AssertionError("no warm shell became ready")


def request_of(template: TemplateImage, memory_mb: int = 200) -> CreateRequest:
    return CreateRequest(template, cpu_count=1, memory_mb=memory_mb, disk_mb=64, allow_internet_access=True)


async def run(handle: SandboxHandle, cmd: str, user: str | None = None) -> str:
    sandbox = await asyncio.to_thread(sdk, handle)
    result = await asyncio.to_thread(sandbox.commands.run, cmd, user=user) if user else \
        await asyncio.to_thread(sandbox.commands.run, cmd)
    return result.stdout


def normalized_mountinfo(text: str, sandbox_id: str) -> list[tuple[str, ...]]:
    """(root, mount point, options, fs type, source, super options) of each mount, sorted, with the sandbox's id
    and its uid range (`uid=`/`gid=` of its tmpfs mounts) made generic: what two sandboxes of one template share."""
    rows = []
    for line in text.splitlines():
        fields = line.split()
        sep = fields.index("-")
        root, point, options = fields[3], fields[4], fields[5]
        fstype, source, sb = fields[sep + 1], fields[sep + 2], fields[sep + 3]
        row = tuple(re.sub(r"\b(uid|gid)=\d+", r"\1=RANGE", re.sub(r"i[a-z0-9]{20}", "ID", f.replace(sandbox_id, "ID")))
                    for f in (root, point, options, fstype, source, sb))
        rows.append(row)
    return sorted(rows)


async def test_a_miss_is_served_by_the_shell_as_the_template(shell_node: Node, user_template: TemplateImage) -> None:
    shell_id = await ready_shell(shell_node)
    handle = await shell_node.create(request_of(user_template), Identity(env_vars={"FROM_OWNER": "1"}))
    try:
        assert handle.sandbox_id == shell_id
        out = await run(handle, "id -un; pwd; echo $FROM_OWNER; hostname; ls /bin/busybox; "
                                "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
        assert out.split() == ["user", "/home/user", "1", handle.sandbox_id, "/bin/busybox", str(200 * 1024 * 1024)]
        # The writable layer: written as the template's user, read back, owned by them; root's own files too.
        out = await run(handle, "echo hello > ~/note && cat ~/note && stat -c %U ~/note")
        assert out.split() == ["hello", "user"]
        out = await run(handle, "echo x > /etc/newfile && cat /etc/newfile && grep -c . /etc/passwd", user="root")
        assert out.split() == ["x", "2"]
        rw = Path(shell_node.runtime.sandboxes_dir) / handle.sandbox_id / "rw/upper"  # type: ignore[attr-defined]
        assert (rw / "home/user/note").read_text() == "hello\n"
    finally:
        await shell_node.kill(handle)


async def test_mountinfo_matches_a_cold_start(shell_node: Node, user_template: TemplateImage) -> None:
    shell_id = await ready_shell(shell_node)
    served = await shell_node.create(request_of(user_template), Identity())
    runtime: ContainerRuntime = shell_node.runtime  # type: ignore[assignment]
    cold = await runtime.start(request_of(user_template).spec("icoldcoldcoldcoldcold0"))
    try:
        assert served.sandbox_id == shell_id
        mine = await run(served, "cat /proc/self/mountinfo", user="root")
        theirs = await run(cold, "cat /proc/self/mountinfo")
        assert normalized_mountinfo(mine, served.sandbox_id) == normalized_mountinfo(theirs, cold.sandbox_id)
        assert "next-root" not in mine and "size=1024k" not in mine
        # Nothing of the shell's root either from the host's view of envd.
        pid = int((runtime.sandboxes_dir / served.sandbox_id / "pid").read_text())
        host_view = Path(f"/proc/{pid}/mountinfo").read_text()
        assert len(host_view.splitlines()) == len(mine.splitlines())
        assert "next-root" not in host_view and "size=1024k" not in host_view
        assert os.readlink(f"/proc/{pid}/root") == "/" and os.readlink(f"/proc/{pid}/cwd") == "/"
        assert (Path(f"/proc/{pid}/root") / "bin/busybox").exists()
    finally:
        await shell_node.kill(served)
        await runtime.stop(cold)


async def test_a_template_with_a_start_command_is_cold_started(shell_node: Node,
                                                               user_template: TemplateImage) -> None:
    shell_id = await ready_shell(shell_node)
    template = TemplateImage("busybox-start", user_template.rootfs, default_user="root", default_workdir="/root",
                             start_cmd="sleep 1000")
    handle = await shell_node.create(request_of(template), Identity())
    try:
        assert handle.sandbox_id != shell_id
        assert shell_id in {h.sandbox_id for pool in shell_node.shells._pools.values() for h in pool.ready}
    finally:
        await shell_node.kill(handle)


async def test_a_template_whose_mount_point_is_a_symlink_is_cold_started(shell_node: Node, tmp_path: Path) -> None:
    """/etc/hosts a symlink: a shell would have to follow it to bind over it, so it refuses, is stopped with
    everything it had mounted, and the miss is cold-started (runc resolves the link inside the root, and refuses
    one into /proc itself)."""
    root = tmp_path / "rootfs"
    make_busybox_rootfs(root)
    (root / "etc/hosts.real").write_text("")
    os.chown(root / "etc/hosts.real", 100_000, 100_000)
    os.symlink("hosts.real", root / "etc/hosts")
    template = TemplateImage("busybox-symlink", root, default_user="root", default_workdir="/root")
    shell_id = await ready_shell(shell_node)
    runtime: ContainerRuntime = shell_node.runtime  # type: ignore[assignment]
    handle = await shell_node.create(request_of(template), Identity())
    try:
        assert handle.sandbox_id != shell_id
        assert shell_id not in await runtime.running_ids()
        assert shell_id not in Path("/proc/self/mountinfo").read_text()
        assert (await run(handle, "echo ok")).strip() == "ok"
    finally:
        await shell_node.kill(handle)


async def test_kill_leaves_nothing(shell_node: Node, user_template: TemplateImage) -> None:
    await ready_shell(shell_node)
    handle = await shell_node.create(request_of(user_template), Identity())
    sandbox_id = handle.sandbox_id
    runtime: ContainerRuntime = shell_node.runtime  # type: ignore[assignment]
    sandbox_dir = runtime.sandboxes_dir / sandbox_id
    assert (sandbox_dir / "rw/upper").is_dir()
    await shell_node.kill(handle)
    assert not sandbox_dir.exists()
    assert sandbox_id not in Path("/proc/self/mountinfo").read_text()
    assert network.netns_name(sandbox_id) not in os.listdir("/run/netns")
    assert not [p for p in Path("/sys/fs/cgroup").glob(f"*/sandhive/{sandbox_id}")]
    assert sandbox_id not in await runtime.running_ids()


@pytest.fixture(scope="module")
async def criu_shell_node(data_dir: Path) -> AsyncIterator[Node]:
    try:
        await asyncio.to_thread(node_toolchain.build, log=lambda m: print(m))
    except BuildError as exc:
        print(f"skipping the pause test of a shell-served sandbox: no node toolchain here: {exc}")
        pytest.skip(f"node toolchain unavailable: {exc}")
    rt = ContainerRuntime(data_dir / "container-shells-criu")
    await rt.prepare()
    node = Node(rt, pools=PoolSettings(size=0), shells=1)
    await node.start()
    yield node
    await node.close()
    leftovers = await rt.running_ids()
    assert not leftovers, f"sandboxes left behind: {leftovers}"


@pytest.mark.parametrize("mode", ["memory", "filesystem"])
async def test_pause_of_a_shell_served_sandbox(criu_shell_node: Node, busybox_template: TemplateImage,
                                               data_dir: Path, mode: str) -> None:
    """A shell-served sandbox's host state is a cold start's: CRIU dumps and restores its pivoted mount namespace
    ("memory": the loop runs on), and a "filesystem" resume cold-boots envd on its kept layer."""
    node = criu_shell_node
    shell_id = await ready_shell(node)
    request = request_of(busybox_template, memory_mb=256)
    identity = Identity(default_user="root")
    handle = await node.create(request, identity)
    assert handle.sandbox_id == shell_id
    saved = None
    try:
        sandbox = await asyncio.to_thread(sdk, handle)
        await asyncio.to_thread(sandbox.commands.run, COUNTER_LOOP)
        await asyncio.sleep(0.5)
        before = await asyncio.to_thread(counter, sandbox)
        saved = await node.pause(handle, mode, data_dir / "paused-shells" / f"{handle.sandbox_id}-{mode}")  # type: ignore[arg-type]
        handle = await node.resume(saved, request, identity)
        await node.discard_saved(saved)
        saved = None
        restored = await asyncio.to_thread(sdk, handle)
        assert (await asyncio.to_thread(restored.commands.run, "cat /root/file")).stdout == "kept\n"
        after = await asyncio.to_thread(counter, restored)
        if mode == "memory":  # where it left off (not restarted from 1), and running on
            assert before <= after
            await asyncio.sleep(0.5)
            assert await asyncio.to_thread(counter, restored) > after
        else:  # the loop is gone: the counter stands still
            await asyncio.sleep(0.3)
            assert await asyncio.to_thread(counter, restored) == after
        mounts = (await asyncio.to_thread(restored.commands.run, "cat /proc/self/mountinfo")).stdout
        assert "next-root" not in mounts and "size=1024k" not in mounts
    finally:
        if saved is not None:
            await node.stop_saved(saved)
        else:
            await node.kill(handle)


async def test_snapshot_of_a_shell_served_sandbox_restores_into_a_new_one(
        criu_shell_node: Node, busybox_template: TemplateImage, data_dir: Path) -> None:
    """CRIU dumps the pivoted mount namespace as it dumps a cold start's: a restore into a new id carries on."""
    node = criu_shell_node
    shell_id = await ready_shell(node)
    request = request_of(busybox_template, memory_mb=256)
    identity = Identity(default_user="root")
    source = await node.create(request, identity)
    handles = [source]
    try:
        assert source.sandbox_id == shell_id
        box = await asyncio.to_thread(sdk, source)
        await asyncio.to_thread(box.commands.run, COUNTER_LOOP)
        await asyncio.sleep(0.5)
        saved = await node.snapshot(source, data_dir / "snapshots-shells" / source.sandbox_id)
        at_snapshot = await asyncio.to_thread(counter, box)
        copy = await node.restore(saved, request, identity, None)
        handles.append(copy)
        restored = await asyncio.to_thread(sdk, copy)
        assert (await asyncio.to_thread(restored.commands.run, "cat /root/file")).stdout == "kept\n"
        assert (await asyncio.to_thread(restored.commands.run, "hostname")).stdout == copy.sandbox_id + "\n"
        value = await asyncio.to_thread(counter, restored)
        assert at_snapshot - 10 <= value <= at_snapshot + 60, (value, at_snapshot)
        mounts = (await asyncio.to_thread(restored.commands.run, "cat /proc/self/mountinfo")).stdout
        assert "next-root" not in mounts and "size=1024k" not in mounts
    finally:
        for handle in handles:
            await node.kill(handle)
