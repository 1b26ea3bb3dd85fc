"""microVM persistence (issue 14): pause/resume with memory, snapshot → restore, filesystem pause → cold boot,
next to a cold clone's `runtime.start` of the same template in the same run.

    python -m bench.microvm_persistence_bench [--runs N] [--dirty MB,MB] [--data-dir DIR]

Through `MicrovmRuntime` alone (no API server). "dirty" is guest memory filled with random bytes (a tmpfs file
in the guest) before each pause: the RAM stream carries every non-zero page, so it grows with it. The base
template's guest has 512 MiB and its tmpfs half of that, so 200 MiB is the largest dirty size it holds; E2B
publishes ~4 s/GiB to pause and ~1 s to resume. Under TCG the guest-side steps are emulated; QEMU's writing and
reading of the stream are not.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import HEADER, machine, row
from sandhive.node import envd_client
from sandhive.node.microvm import MicrovmRuntime
from sandhive.node.runtime import SandboxHandle, SandboxSpec
from sandhive.templates import base
from sandhive.templates.layout import template_dir

COMMAND_TIMEOUT = 300.0


async def sh(handle: SandboxHandle, line: str) -> str:
    async with httpx.AsyncClient(trust_env=False) as http:
        code, out = await envd_client.run(http, handle.envd_url, envd_client.Command(line, "root", "/", {}),
                                          COMMAND_TIMEOUT)
    if code != 0:
        raise RuntimeError(f"`{line}` exited {code}: {out}")
    return out


def ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


async def main_async(args: argparse.Namespace) -> None:
    root = Path(args.data_dir or tempfile.mkdtemp(prefix="sandhive-bench-persist-", dir="/var/tmp"))
    root.chmod(0o711)
    rt = MicrovmRuntime(root)
    rows: list[str] = []
    notes: list[str] = []
    try:
        await rt.prepare()
        info = await asyncio.to_thread(base.build, root, None, log=lambda _m: None)
        template = info.image(template_dir(root, info.id))

        def spec(sandbox_id: str) -> SandboxSpec:
            return SandboxSpec(sandbox_id, template, template.cpu_count, template.memory_mb, template.disk_mb)

        await rt.snapshot_for(spec("x"))
        starts: list[float] = []
        for i in range(args.runs):
            t0 = time.perf_counter()
            handle = await rt.start(spec(f"bpstart{i}"))
            starts.append(ms(t0))
            await rt.stop(handle)
        rows.append(row("baseline: cold clone `runtime.start` of the template snapshot", starts))

        for dirty in args.dirty:
            pauses, resumes, streams = [], [], []
            for i in range(args.runs):
                handle = await rt.start(spec(f"bpmem{dirty}x{i}"))
                await sh(handle, f"head -c {dirty}M /dev/urandom > /dev/shm/dirty")
                dest = root / "saved" / f"mem{dirty}x{i}"
                t0 = time.perf_counter()
                paused = await rt.pause(handle, "memory", dest)
                pauses.append(ms(t0))
                streams.append((dest / "state").stat().st_size / 2**20)
                t0 = time.perf_counter()
                handle = await rt.resume(paused, spec(handle.sandbox_id))
                resumes.append(ms(t0))
                await rt.stop(handle)
                shutil.rmtree(dest)
            rows.append(row(f"memory pause, {dirty} MiB dirty (stop, RAM stream, links, VM freed)", pauses, starts))
            rows.append(row(f"memory resume, {dirty} MiB dirty (→ envd /health + clock /init)", resumes, starts))
            notes.append(f"{dirty} MiB dirty: RAM stream {sum(streams) / len(streams):.0f} MiB")

        source = await rt.start(spec("bpsnapsrc"))
        snaps, restores = [], []
        try:
            for i in range(args.runs):
                dest = root / "saved" / f"snap{i}"
                t0 = time.perf_counter()
                snap = await rt.snapshot(source, dest)
                snaps.append(ms(t0))
                t0 = time.perf_counter()
                clone = await rt.restore(snap, spec(f"bprestore{i}"))
                restores.append(ms(t0))
                await rt.stop(clone)
                shutil.rmtree(dest)
        finally:
            await rt.stop(source)
        rows.append(row("snapshot of a running sandbox (it stands still for it)", snaps, starts))
        rows.append(row("restore of that snapshot into a new sandbox (→ /health + new identity)", restores, starts))

        handle = await rt.start(spec("bpfs"))
        dest = root / "saved" / "fs"
        t0 = time.perf_counter()
        paused = await rt.pause(handle, "filesystem", dest)
        fs_pause = [ms(t0)]
        t0 = time.perf_counter()
        handle = await rt.resume(paused, spec(handle.sandbox_id))
        fs_resume = [ms(t0)]
        await rt.stop(handle)
        shutil.rmtree(dest)
        rows.append(row("filesystem pause (guest sync, stop, links)", fs_pause, starts))
        rows.append(row("filesystem resume (a cold boot of the guest to envd /health)", fs_resume, starts))
    finally:
        await rt.close()
        if not args.data_dir and not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    assert rt.acceleration is not None
    print(f"## microVM persistence ({machine()})\n")
    print(f"Accelerator: **{rt.acceleration.name}**; template `{template.template_id}`, {template.cpu_count} vCPU, "
          f"{template.memory_mb} MiB. {'; '.join(notes)}.\n")
    print(HEADER)
    for line in rows:
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.microvm_persistence_bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dirty", type=lambda s: [int(x) for x in s.split(",")], default=[64, 200])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
