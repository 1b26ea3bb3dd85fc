"""What a microVM may leave on the host, found from the outside: QEMU processes, netns, slots, files."""

from __future__ import annotations

import os
from pathlib import Path

from sandhive.node import network


def qemu_pids(under: Path) -> list[int]:
    """Pids of live QEMU processes whose command line names a path under `under` (ours do: their disks)."""
    marker = str(under).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and b"qemu-system" in cmdline.split(b"\0", 1)[0] and state != "Z":
            found.append(int(entry))
    return found


def sandbox_leftovers(root: Path, sandbox_id: str) -> list[str]:
    """Everything of one sandbox that still exists (empty: it is gone without a trace)."""
    left = []
    directory = root / "microvm" / "sandboxes" / sandbox_id
    if directory.exists():
        left.append(f"directory {directory}")
    pids = qemu_pids(directory)
    if pids:
        left.append(f"QEMU processes {pids}")
    if (network.NETNS_DIR / network.netns_name(sandbox_id)).exists():
        left.append(f"netns {network.netns_name(sandbox_id)}")
    if network.SlotAllocator().owned_by(sandbox_id) is not None:
        left.append("a network slot")
    return left


def leftovers(root: Path) -> list[str]:
    """Any VM process, sandbox directory or snapshot-build temp dir under a data dir root."""
    left = [f"QEMU processes {pids}" for pids in [qemu_pids(root)] if pids]
    for sandboxes in root.glob("**/microvm/sandboxes"):
        left += [f"sandbox dir {p}" for p in sandboxes.iterdir()]
    left += [f"snapshot temp dir {p}" for p in root.glob("**/microvm/snapshots/.tmp-*")]
    return left
