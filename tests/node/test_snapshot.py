"""Snapshots of a running `container` sandbox restored into new sandboxes (runc + the toolchain's CRIU 4.1.1).

The source holds state in memory (a shell loop's counter) and on disk; it is snapshotted while it runs, then two
new sandboxes are restored from the one snapshot. Each must carry on the loop from the snapshot's counter, see
the files, be a sandbox of its own (id as hostname, its own token, its own writable layer), and the source must
run on untouched. Skips, with the reason printed, where the toolchain cannot be built.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from connectrpc.errors import ConnectError
from e2b import ConnectionConfig, Sandbox
from packaging.version import Version

from sandhive.envd import ENVD_VERSION
from sandhive.images import node_toolchain
from sandhive.images.debian import BuildError
from sandhive.node.container import ContainerRuntime
from sandhive.node.container_snapshot import FROZEN_MARK, thaw_interrupted
from sandhive.node.hostcmd import run as host_run
from sandhive.node.node import Node
from sandhive.node.request import CreateRequest, Identity
from sandhive.node.runtime import SandboxHandle, TemplateImage
from tests.helpers import read_count


@pytest.fixture(scope="module")
def criu_runtime(data_dir: Path) -> Iterator[ContainerRuntime]:
    try:
        node_toolchain.build(log=lambda m: print(m))
    except BuildError as exc:
        print(f"skipping the snapshot tests: the node toolchain cannot be built here: {exc}")
        pytest.skip(f"node toolchain unavailable: {exc}")
    rt = ContainerRuntime(data_dir / "container-snap")
    asyncio.run(rt.prepare())
    yield rt
    leftovers = asyncio.run(rt.running_ids())
    assert not leftovers, f"sandboxes left behind: {leftovers}"


COUNTER_LOOP = ("echo kept > /root/file; "
                "(i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done) >/dev/null 2>&1 &")


def token(sandbox_id: str) -> str:
    return f"token-of-{sandbox_id}"


def sdk(handle: SandboxHandle, access_token: str | None = None) -> Sandbox:
    access_token = access_token or token(handle.sandbox_id)
    return Sandbox(sandbox_id=handle.sandbox_id, sandbox_domain=None, envd_version=Version(ENVD_VERSION),
                   envd_access_token=access_token, traffic_access_token=None,
                   connection_config=ConnectionConfig(debug=True, sandbox_url=handle.envd_url,
                                                      extra_sandbox_headers={"X-Access-Token": access_token}))


def run(sandbox: Sandbox, line: str) -> str:
    """A command's stdout; the e2b SDK's pooled keep-alive to the source (tcp-close in the dump) may be reset
    once on first use in a copy, so exactly that one failure is retried."""
    try:
        return sandbox.commands.run(line).stdout
    except ConnectError as exc:
        assert "reset" in str(exc).lower(), exc
        return sandbox.commands.run(line).stdout


def counter(sandbox: Sandbox) -> int:
    return read_count(lambda: run(sandbox, "cat /tmp/counter"))


async def test_snapshot_restores_into_new_sandboxes_and_the_source_runs_on(
        criu_runtime: ContainerRuntime, busybox_template: TemplateImage, data_dir: Path) -> None:
    node = Node(criu_runtime)
    identity = Identity(default_user="root", token_for=token, env_vars={"WHO": "copy"})
    request = CreateRequest(busybox_template, cpu_count=1, memory_mb=256, disk_mb=64, allow_internet_access=False)
    handles: list[SandboxHandle] = []
    dest = data_dir / "snapshots" / "snap1"
    try:
        source = await node.create(request, Identity(default_user="root", token_for=token))
        handles.append(source)
        box = await asyncio.to_thread(sdk, source)
        await asyncio.to_thread(run, box, COUNTER_LOOP)
        await asyncio.sleep(1.0)

        saved = await node.snapshot(source, dest)
        at_snapshot = await asyncio.to_thread(counter, box)
        print(f"snapshot: {saved.state}")
        assert saved.state["bytes"] > 0 and saved.source_id == source.sandbox_id

        # The source runs on: same address, counting, its file there, its connection to envd unbroken.
        await asyncio.sleep(0.5)
        assert await asyncio.to_thread(counter, box) > at_snapshot
        assert await criu_runtime.is_running(source)

        copies = []
        for _ in range(2):
            copy = await node.restore(saved, request, identity, token(source.sandbox_id))
            handles.append(copy)
            copies.append(copy)
        assert len({h.sandbox_id for h in handles}) == 3 and len({h.address for h in handles}) == 3

        urandom = set()
        for copy in copies:
            sb = await asyncio.to_thread(sdk, copy)
            value = await asyncio.to_thread(counter, sb)
            # It carried on from the snapshot's memory: not restarted at 1, and not far past the snapshot point.
            assert at_snapshot - 10 <= value <= at_snapshot + 60, (value, at_snapshot)
            assert await asyncio.to_thread(run, sb, "cat /root/file") == "kept\n"
            assert await asyncio.to_thread(run, sb, "hostname") == copy.sandbox_id + "\n"
            assert await asyncio.to_thread(run, sb, "echo $WHO") == "copy\n"
            urandom.add(await asyncio.to_thread(run, sb, "head -c 16 /dev/urandom | od -An -tx1"))
            await asyncio.to_thread(run, sb, f"echo {copy.sandbox_id} > /root/mine")
            # The source's token no longer opens it.
            with pytest.raises(Exception):  # noqa: B017,PT011 - the SDK's auth error type varies by version
                await asyncio.to_thread(sdk(copy, token(source.sandbox_id)).commands.run, "true")
        assert len(urandom) == 2

        # Two snapshots of one sandbox at once take turns (one freeze at a time) and both succeed.
        both = await asyncio.gather(node.snapshot(source, dest.with_name("a")),
                                    node.snapshot(source, dest.with_name("b")))
        assert all(s.state["bytes"] > 0 for s in both) and await criu_runtime.is_running(source)

        # A server that died while a sandbox was frozen for a snapshot: the next one thaws it at start.
        (criu_runtime.sandboxes_dir / source.sandbox_id / FROZEN_MARK).touch()
        await host_run(*criu_runtime._oci("pause", source.sandbox_id))
        assert not await criu_runtime.is_running(source)
        assert await thaw_interrupted(criu_runtime) == [source.sandbox_id]
        assert await criu_runtime.is_running(source)

        # Writes stay in their own sandbox.
        for copy in copies:
            sb = await asyncio.to_thread(sdk, copy)
            assert await asyncio.to_thread(run, sb, "cat /root/mine") == copy.sandbox_id + "\n"
        assert await asyncio.to_thread(run, box, "cat /root/mine 2>/dev/null || echo none") == "none\n"
        assert await asyncio.to_thread(counter, box) > at_snapshot
    finally:
        for handle in handles:
            await node.kill(handle)
        await node.close()
        for path in (dest, dest.with_name("a"), dest.with_name("b")):
            shutil.rmtree(path, ignore_errors=True)
