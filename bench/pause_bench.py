"""Pause and resume of `container` sandboxes (issue 14), next to a plain create + kill measured in the same run.

    python -m bench.pause_bench [--runs 3] [--sizes 64,512] [--data-dir DIR]

Everything goes through the node (`Node` + `ContainerRuntime`, no API server): the figures are the backend's
own. The sandbox is a busybox rootfs whose one extra process is envd's own Python (from the system image)
holding N MB of dirty anonymous memory (written, so CRIU must dump every page), plus envd itself.

- baseline: `Node.create` (start, envd /health, /init) + `Node.kill` of the same sandbox, no pool.
- pause "memory": TCP reset + CRIU dump (runc checkpoint) + network teardown, N MB dirty.
- resume "memory": CRIU restore (runc restore) + network + envd /health.
- pause/resume "filesystem" (idle sandbox): kill + cold boot on the kept layer + /init.
E2B publishes ~4 s/GiB to pause and ~1 s to resume.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import HEADER, machine, row
from sandhive.images import node_toolchain, system_image
from sandhive.node.container import ContainerRuntime
from sandhive.node.node import Node, PoolSettings
from sandhive.node.request import CreateRequest, Identity
from sandhive.node.runtime import SandboxHandle, TemplateImage
from tests.helpers import wait_until_async
from tests.node.conftest import make_busybox_rootfs, sdk

DIRTY = ("import mmap, os, time\n"
         "n = {mb} * 2**20\n"
         "m = mmap.mmap(-1, n)\n"
         "chunk = os.urandom(2**20)\n"
         "for _ in range({mb}): m.write(chunk)\n"
         "open('/tmp/dirty', 'w').write('ready')\n"
         "time.sleep(10**6)\n")


def _python(code: str) -> str:
    """A shell command running `code` with envd's own Python (the busybox rootfs has none)."""
    argv = [*system_image.loader_command("/.sandhive"), f"/.sandhive/{system_image.PYTHON}", "-I", "-B", "-c"]
    return " ".join(argv) + " '" + code.replace("'", "'\\''") + "'"


async def _dirty(handle: SandboxHandle, mb: int) -> None:
    sandbox = await asyncio.to_thread(sdk, handle)
    await asyncio.to_thread(sandbox.commands.run, _python(DIRTY.format(mb=mb)), background=True)

    async def ready() -> bool:
        out = await asyncio.to_thread(sandbox.commands.run, "cat /tmp/dirty 2>/dev/null || true")
        return out.stdout == "ready"

    await wait_until_async(ready, 300, f"{mb} MB of dirty memory")


async def bench(runs: int, sizes: list[int], data_dir: Path) -> list[str]:
    node_toolchain.build(log=lambda m: None)
    root = data_dir / "busybox" / "rootfs"
    make_busybox_rootfs(root)
    template = TemplateImage("busybox", root, default_user="root", default_workdir="/root")
    runtime = ContainerRuntime(data_dir / "container")
    await runtime.prepare()
    node = Node(runtime, pools=PoolSettings(size=0))
    identity = Identity(default_user="root")
    lines: list[str] = []
    try:
        small = CreateRequest(template, cpu_count=1, memory_mb=256, disk_mb=64, allow_internet_access=False)
        baseline = []
        for _ in range(runs + 1):
            started = time.perf_counter()
            handle = await node.create(small, identity)
            await node.kill(handle)
            baseline.append((time.perf_counter() - started) * 1000)
        baseline = baseline[1:]  # the first one warms caches
        lines.append(row("baseline: create (start + /init) + kill, no pool", baseline))

        for mb in [0, *sizes]:
            request = CreateRequest(template, cpu_count=1, memory_mb=mb + 256, disk_mb=64, allow_internet_access=False)
            pauses, resumes, image_mb = [], [], []
            for i in range(runs):
                handle = await node.create(request, identity)
                saved = None
                try:
                    if mb:
                        await _dirty(handle, mb)
                    started = time.perf_counter()
                    saved = await node.pause(handle, "memory", data_dir / "paused" / f"{handle.sandbox_id}-{i}")
                    pauses.append((time.perf_counter() - started) * 1000)
                    image_mb.append(sum(f.stat().st_size for f in saved.directory.glob("*.img")) / 2**20)
                    started = time.perf_counter()
                    handle = await node.resume(saved, request, identity)
                    resumes.append((time.perf_counter() - started) * 1000)
                    await node.discard_saved(saved)
                    saved = None
                finally:
                    if saved is not None:
                        await node.stop_saved(saved)
                    else:
                        await node.kill(handle)
            what = f"{mb} MB dirty" if mb else "idle"
            lines.append(row(f"pause memory, {what} ({statistics.median(image_mb):.0f} MB of CRIU images)",
                             pauses, baseline))
            lines.append(row(f"resume memory, {what}", resumes, baseline))

        pauses, resumes = [], []
        for i in range(runs):
            handle = await node.create(small, identity)
            saved = None
            try:
                started = time.perf_counter()
                saved = await node.pause(handle, "filesystem", data_dir / "paused" / f"{handle.sandbox_id}-fs{i}")
                pauses.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                handle = await node.resume(saved, small, identity)
                resumes.append((time.perf_counter() - started) * 1000)
                await node.discard_saved(saved)
                saved = None
            finally:
                if saved is not None:
                    await node.stop_saved(saved)
                else:
                    await node.kill(handle)
        lines.append(row("pause filesystem, idle", pauses, baseline))
        lines.append(row("resume filesystem (cold boot + /init), idle", resumes, baseline))
    finally:
        await node.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pause_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="64,512", help="MB of dirty memory, comma-separated")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="sandhive-pause-bench-", dir="/var/tmp"))
    data_dir.chmod(0o711)
    try:
        lines = asyncio.run(bench(args.runs, [int(s) for s in args.sizes.split(",") if s], data_dir))
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(f"\nPause and resume, container backend (CRIU 4.1.1 via runc) · {machine()}\n")
    print(HEADER)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
