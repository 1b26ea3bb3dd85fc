"""Pause and resume of a real `container` sandbox through the node (container_pause.py): "memory" keeps a
background process where it was, "filesystem" keeps the files and drops the processes; the budget is given
back while paused. Skips, with the reason printed, where the node toolchain (CRIU) cannot be built.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandhive.node.container import ContainerRuntime
from sandhive.node.node import Node
from sandhive.node.request import CreateRequest, Identity
from sandhive.node.runtime import TemplateImage

from .conftest import sdk
from .test_checkpoint import COUNTER_LOOP, _counter, criu_runtime  # noqa: F401 — the shared fixture


@pytest.fixture(scope="module")
async def pause_node(criu_runtime: ContainerRuntime) -> AsyncIterator[Node]:  # noqa: F811
    node = Node(criu_runtime)
    yield node
    await node.close()


@pytest.mark.parametrize("mode", ["memory", "filesystem"])
async def test_pause_resume(pause_node: Node, criu_runtime: ContainerRuntime,  # noqa: F811
                            busybox_template: TemplateImage, data_dir: Path, mode: str) -> None:
    node = pause_node
    request = CreateRequest(busybox_template, cpu_count=1, memory_mb=256, disk_mb=64, allow_internet_access=False)
    identity = Identity(default_user="root")
    handle = await node.create(request, identity)
    saved = None
    try:
        sandbox = await asyncio.to_thread(sdk, handle)
        await asyncio.to_thread(sandbox.commands.run, COUNTER_LOOP)
        await asyncio.sleep(0.5)
        read_at = time.monotonic()
        before = await asyncio.to_thread(_counter, sandbox)
        assert node.admission.holds(handle.sandbox_id)

        saved = await node.pause(handle, mode, data_dir / "paused" / f"{handle.sandbox_id}-{mode}")  # type: ignore[arg-type]
        assert not await criu_runtime.is_running(handle)
        assert not node.admission.holds(handle.sandbox_id)
        assert (saved.directory / "saved.json").is_file()

        paused_at = time.monotonic()
        handle = await node.resume(saved, request, identity)
        resumed_from = time.monotonic()
        await node.discard_saved(saved)
        saved = None
        assert node.admission.holds(handle.sandbox_id)
        restored = await asyncio.to_thread(sdk, handle)
        assert (await asyncio.to_thread(restored.commands.run, "cat /root/file")).stdout == "kept\n"
        if mode == "memory":
            after = await asyncio.to_thread(_counter, restored)
            running = (paused_at - read_at) + (time.monotonic() - resumed_from)  # a loaded host pauses slowly
            assert before <= after <= before + running / 0.1 + 3  # went on from memory, not restarted at 1
        else:  # the loop is gone: the counter file stands still
            first = await asyncio.to_thread(_counter, restored)
            await asyncio.sleep(0.5)
            assert await asyncio.to_thread(_counter, restored) == first
    finally:
        if saved is not None:
            await node.stop_saved(saved)
        else:
            await node.kill(handle)
