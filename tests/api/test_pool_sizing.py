"""How a warm pool sizes itself, on a node with real container sandboxes (a busybox template) and short windows:
it grows to a burst, falls back to its base size when demand stops, is dropped when idle, yields its memory to
a create that needs it, and leaves nothing behind when the node closes."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sandhive.node.admission import Budget
from sandhive.node.container import ContainerRuntime
from sandhive.node.node import Node
from sandhive.node.pool import PoolSettings
from sandhive.node.request import CreateRequest, Identity
from sandhive.node.runtime import TemplateImage
from tests.node.conftest import make_busybox_rootfs, requirements

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(300)]
IDENTITY = Identity(default_user="root")


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    reason = requirements()
    if reason:
        print(f"skipping the pool sizing tests: {reason}")
        pytest.skip(reason)
    path = Path(tempfile.mkdtemp(prefix="sandhive-poolsize-", dir="/var/tmp"))
    path.chmod(0o711)
    make_busybox_rootfs(path / "busybox")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def runtime(data_dir: Path) -> AsyncIterator[ContainerRuntime]:
    rt = ContainerRuntime(data_dir / "node")
    await rt.prepare()
    yield rt
    leftovers = await rt.running_ids()
    for sandbox_id in leftovers:  # clean up even when a test failed, then fail the test
        from sandhive.node.runtime import SandboxHandle

        await rt.stop(SandboxHandle(sandbox_id, rt.name, ""))
    await rt.close()
    assert not leftovers, f"sandboxes left behind: {leftovers}"


def request(data_dir: Path, internet: bool = True) -> CreateRequest:
    template = TemplateImage("busybox", data_dir / "busybox", default_user="root", default_workdir="/root")
    return CreateRequest(template, cpu_count=1, memory_mb=256, disk_mb=64, allow_internet_access=internet)


async def until(check, timeout: float = 60.0) -> None:  # noqa: ANN001 — a zero-argument predicate
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_a_pool_grows_with_a_burst_falls_back_and_is_dropped_when_idle(runtime: ContainerRuntime,
                                                                              data_dir: Path) -> None:
    # Windows long enough for a loaded 2-core machine, where one start can take seconds.
    settings = PoolSettings(size=1, max_size=3, window_seconds=15, idle_seconds=25, fill_concurrency=2,
                            refill_delay=0)
    node = Node(runtime, pools=settings)
    await node.start()
    req = request(data_dir)
    handles = []
    try:
        handles = await asyncio.gather(*(node.create(req, IDENTITY) for _ in range(4)))  # a burst of 4
        [pool] = node.pools.status()
        assert pool.target == 3 and pool.misses == 4  # grown to the burst, capped at max_size
        await until(lambda: node.pools.status()[0].ready == 3)
        assert node.status().pooled.memory_mb == 3 * 256
        for handle in handles:
            await node.kill(handle)
        handles = []
        await until(lambda: node.pools.status()[0].target == 1, timeout=30)  # demand left the window
        await until(lambda: node.pools.status()[0].ready == 1)
        await until(lambda: node.pools.status() == [], timeout=40)  # idle: dropped (it was not pinned)
        await until(lambda: node.status().reserved.memory_mb == 0)
    finally:
        for handle in handles:
            await node.kill(handle)
        await node.close()


async def test_pooled_sandboxes_yield_to_a_create_and_are_stopped_at_close(runtime: ContainerRuntime,
                                                                           data_dir: Path) -> None:
    node = Node(runtime, pools=PoolSettings(size=2, refill_delay=0), budget=Budget(memory_mb=3 * 256, cpus=64))
    await node.start(prewarm=[request(data_dir)])  # pinned: warmed without demand
    try:
        await until(lambda: node.pools.status()[0].ready == 2)
        assert node.status().reserved.memory_mb == 512
        first = await node.create(request(data_dir, internet=False), IDENTITY)  # another key: a miss that fits
        second = await node.create(request(data_dir, internet=False), IDENTITY)  # fits only if the pool yields
        assert node.status().reserved.memory_mb == 3 * 256 and node.status().pooled.memory_mb == 256
        deadline = time.monotonic() + 30
        while len(await runtime.running_ids()) > 3:  # the one given back is being stopped
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert node.pools.status()[0].ready == 1
    finally:
        await node.close()
    assert await runtime.running_ids() == {first.sandbox_id, second.sandbox_id}  # users' sandboxes stay
    await node.kill(first)
    await node.kill(second)
