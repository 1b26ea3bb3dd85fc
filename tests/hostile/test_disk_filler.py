"""A disk filler in a `base` sandbox (default disk and memory) gets ENOSPC at its disk size, and the sandbox lives on.

Before the fix the writable layer was a tmpfs charged to the sandbox's memory and larger than it, so `dd` never saw
ENOSPC: the container was OOM-killed, the gVisor sandbox ended. Checked from the host: the sandbox's first process
is the same one (not killed or restarted), its memory cgroup saw no OOM kill, and the writable layer's backing on
the host's disk holds no more than the disk size. Promise: docs/security.md, "Disk".
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from e2b import CommandExitException, Sandbox

from tests.hostile.conftest import Live
from tests.hostile.test_dead_sandbox import runtime_state

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]


def fill(sandbox: Sandbox, path: str) -> str:
    """`dd` zeros into `path` until it stops; its stderr. A filler that is never stopped ends the test by timeout."""
    try:
        result = sandbox.commands.run(f"dd if=/dev/zero of={path} bs=1M", timeout=600)
    except CommandExitException as exc:
        return exc.stderr
    raise AssertionError(f"dd into {path} exited 0, which a filler never does: {result.stderr}")


def oom_kills(sandbox_id: str) -> int:
    """OOM kills in the sandbox's memory cgroup (cgroup v1 memory.oom_control, v2 memory.events)."""
    for path, key in ((Path(f"/sys/fs/cgroup/memory/sandhive/{sandbox_id}/memory.oom_control"), "oom_kill"),
                      (Path(f"/sys/fs/cgroup/sandhive/{sandbox_id}/memory.events"), "oom_kill")):
        if path.exists():
            for line in path.read_text().splitlines():
                if line.startswith(key + " "):
                    return int(line.split()[1])
    return 0


def backing_bytes(live: Live, sandbox_id: str) -> int:
    """Bytes the sandbox's writable layer takes on the host's disk (its sparse backing file's blocks)."""
    image = live.server.data_dir / "sandboxes" / sandbox_id / "disk.ext4"
    return os.stat(image).st_blocks * 512 if image.exists() else 0


@pytest.mark.parametrize("where", ["~/fill", "/tmp/fill"])
def test_disk_filler_gets_enospc(live: Live, e2b_env: None, where: str) -> None:
    sandbox = Sandbox.create(timeout=900)
    try:
        before = runtime_state(live, sandbox.sandbox_id)
        assert before and before["status"] == "running"
        disk_mb = sandbox.get_info().disk_size_mb if hasattr(sandbox.get_info(), "disk_size_mb") else 1024
        stderr = fill(sandbox, where)
        assert "No space left on device" in stderr, stderr
        after = runtime_state(live, sandbox.sandbox_id)
        assert after and after["status"] == "running" and after["pid"] == before["pid"], (before, after)
        assert oom_kills(sandbox.sandbox_id) == 0
        assert backing_bytes(live, sandbox.sandbox_id) <= (disk_mb + 64) * 1024 * 1024
        # envd still answers, and removing the file gives the space back.
        assert sandbox.commands.run("echo alive").stdout == "alive\n"
        sandbox.commands.run(f"rm {where}")
        written = sandbox.commands.run("dd if=/dev/zero of=~/after bs=1M count=64 && rm ~/after")
        assert written.exit_code == 0
    finally:
        sandbox.kill()
