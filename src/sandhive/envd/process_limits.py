"""What keeps envd answering when a user's processes run wild: their OOM score and a per-user process cap.

A fork bomb fills a sandbox with processes until a limit stops it. The sandbox's own limits (memory, 4096
pids) stop it too late for envd: at the pid limit envd cannot start a command; at the memory limit the OOM
killer spares envd (user processes score higher) but the bomb refills what it kills, and envd's pages are
reclaimed over and over, so it crawls. Under gVisor each task also costs the sentry host memory and time, so
a few hundred tasks already stall the whole sandbox, envd included.

So every process envd starts for a non-root user gets `RLIMIT_NPROC` (soft and hard), sized from the
sandbox's memory and kept well below its pid limit: the kernel (gVisor enforces it too) refuses that user's
fork beyond it, and the sandbox's remaining pids and memory stay for envd and root. The count is per user
and includes threads, as Linux counts it. And every process envd starts gets the highest OOM score, so the
OOM killer takes user processes before envd (envd cannot lower its own score without CAP_SYS_RESOURCE).
"""

from __future__ import annotations

import functools
import os

USER_OOM_SCORE_ADJ = 1000  # the OOM killer's first choice: anything envd starts, never envd
MAX_PROCESSES_ENV = "SANDHIVE_USER_MAX_PROCESSES"  # an operator's override; 0 turns the cap off
BYTES_PER_PROCESS = 1 << 20  # memory budgeted per user task under a host kernel (a bash is ~170 KiB)
BYTES_PER_PROCESS_GVISOR = 4 << 20  # under gVisor: ~0.7 MiB of sentry memory each, and its time (measured)
MIN_PROCESSES = 64
PIDS_RESERVE = 256  # pids of the sandbox's limit kept for envd and root's commands

MEMORY_LIMIT_FILES = ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max")
PIDS_LIMIT_FILES = ("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max")
UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a number near 2**63


def _read_limit(paths: tuple[str, ...]) -> int | None:
    for path in paths:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < UNLIMITED:
            return int(text)
    return None


def _mem_total() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def under_gvisor() -> bool:
    """gVisor reports a fixed kernel (4.4.0 of 10 Jan 2016) whatever the host runs."""
    uname = os.uname()
    return uname.release == "4.4.0" and "Jan 10 15:06:54 PST 2016" in uname.version


@functools.cache
def user_max_processes() -> int | None:
    """RLIMIT_NPROC for non-root users' processes, or None for no cap. Computed once, on the first spawn."""
    override = os.environ.get(MAX_PROCESSES_ENV, "").strip()
    if override.isdigit():
        return int(override) or None
    memory = _read_limit(MEMORY_LIMIT_FILES) or _mem_total()
    if memory is None:
        return None
    cap = memory // (BYTES_PER_PROCESS_GVISOR if under_gvisor() else BYTES_PER_PROCESS)
    pids = _read_limit(PIDS_LIMIT_FILES)
    if pids is not None:
        cap = min(cap, pids - PIDS_RESERVE)
    return max(cap, MIN_PROCESSES)
