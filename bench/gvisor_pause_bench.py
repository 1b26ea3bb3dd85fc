"""Pause of `gvisor` sandboxes in the default configuration, with their files kept for a host reboot (issue 14),
next to a plain create + kill measured in the same run.

    python -m bench.gvisor_pause_bench [--runs 3] [--written-mb 64] [--template-dir ROOTFS] [--data-dir DIR]

Through the node (`Node` + `GVisorRuntime`, files in gVisor's own overlay, no API server). Each sandbox first
writes `--written-mb` MB in one file and 1000 small files (what its pause must read out), then:

- baseline: `Node.create` (start, envd /health, /init) + `Node.kill`, no pool.
- pause "memory": the sandbox's changes to its template read out through it (`gvisor_files.save`: the host's
  manifest of the template, `runsc exec` of the walk and tar) + `runsc pause`.
- resume after a reboot: the frozen sandbox gone (`stop_saved`), then `resume`: a fresh sandbox of the template
  and the changes unpacked inside it (`gvisor_files.load`).
- resume without a reboot (`runsc resume`), for comparison.
The template is a busybox rootfs unless `--template-dir` names a built one (e.g. a data dir's `templates/base/rootfs`):
the walk's cost grows with the template's entry count.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import HEADER, machine, row
from sandhive.node.gvisor import GVisorRuntime
from sandhive.node.node import Node, PoolSettings
from sandhive.node.request import CreateRequest, Identity
from sandhive.node.runtime import SandboxSpec, TemplateImage
from tests.node.conftest import make_busybox_rootfs

WRITE = ("head -c {mb}M /dev/urandom > /root/big && mkdir -p /root/many && "
         "i=0; while [ $i -lt 1000 ]; do echo $i > /root/many/$i; i=$((i+1)); done")


async def _sh(rt: GVisorRuntime, sandbox_id: str, cmd: str) -> None:
    proc = await asyncio.create_subprocess_exec(*rt._exec_argv(sandbox_id), "sh", "-c", cmd)
    if await proc.wait() != 0:
        raise RuntimeError(f"{cmd!r} failed in {sandbox_id}")


async def bench(runs: int, written_mb: int, template: TemplateImage, data_dir: Path) -> list[str]:
    rt = GVisorRuntime(data_dir / "gvisor", files_on_disk=False)
    await rt.prepare()
    node = Node(rt, pools=PoolSettings(size=0))
    request = CreateRequest(template, cpu_count=1, memory_mb=512, disk_mb=1024, allow_internet_access=False)
    identity = Identity(default_user="root")
    base, pause, reboot_resume, resume = [], [], [], []
    try:
        for i in range(runs):
            started = time.perf_counter()
            handle = await node.create(request, identity)
            await node.kill(handle)
            base.append((time.perf_counter() - started) * 1000)

            handle = await node.create(request, identity)
            await _sh(rt, handle.sandbox_id, WRITE.format(mb=written_mb))
            spec = SandboxSpec(handle.sandbox_id, template, cpu_count=1, memory_mb=512, disk_mb=1024,
                               allow_internet_access=False)
            started = time.perf_counter()
            saved = await rt.pause(handle, "memory", data_dir / f"paused-{i}")
            pause.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            handle = await rt.resume(saved, spec)
            resume.append((time.perf_counter() - started) * 1000)
            shutil.rmtree(saved.directory)
            saved = await rt.pause(handle, "memory", data_dir / f"paused-{i}")
            await rt.stop_saved(saved)  # the reboot
            started = time.perf_counter()
            handle = await rt.resume(saved, spec)
            reboot_resume.append((time.perf_counter() - started) * 1000)
            await rt.stop(handle)
            shutil.rmtree(saved.directory)
    finally:
        await node.close()
    label = f"{written_mb} MB + 1000 files written"
    return [row("baseline: create + kill (no pool)", base),
            row(f"pause memory, files read out + frozen ({label})", pause, base),
            row("resume of the frozen sandbox (`runsc resume`)", resume, base),
            row(f"resume after a reboot: fresh sandbox + files unpacked ({label})", reboot_resume, base)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gvisor_pause_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--written-mb", type=int, default=64)
    parser.add_argument("--template-dir", type=Path, default=None, help="a built template's rootfs")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sandhive-bench-gvisor-pause-", dir="/var/tmp"))
    root.chmod(0o711)
    try:
        if args.template_dir is None:
            rootfs = root / "template" / "rootfs"
            make_busybox_rootfs(rootfs)
            template = TemplateImage("busybox", rootfs, default_user="root", default_workdir="/root")
        else:
            template = TemplateImage("given", args.template_dir, default_user="root", default_workdir="/root")
        lines = asyncio.run(bench(args.runs, args.written_mb, template, args.data_dir or root / "data"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\ngvisor pause with files kept (default configuration), template {template.template_id} · {machine()}\n")
    print(HEADER)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
