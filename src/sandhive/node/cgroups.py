"""Resource figures of a container sandbox from its cgroup (v1 hierarchies, as on these hosts, or v2)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

V1 = Path("/sys/fs/cgroup")


def _int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stat(path: Path, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


class CgroupReader:
    """Reads `sandhive/<id>` in each controller; keeps the previous CPU sample to report a rate."""

    def __init__(self) -> None:
        self._last_cpu: dict[str, tuple[float, int]] = {}
        self._v2 = (V1 / "cgroup.controllers").exists()

    def _dir(self, controller: str, sandbox_id: str) -> Path:
        return V1 / f"sandhive/{sandbox_id}" if self._v2 else V1 / controller / f"sandhive/{sandbox_id}"

    def cpu_nanoseconds(self, sandbox_id: str) -> int:
        if self._v2:
            return _stat(self._dir("", sandbox_id) / "cpu.stat", "usage_usec") * 1000
        return _int(self._dir("cpuacct", sandbox_id) / "cpuacct.usage") or 0

    def cpu_percent(self, sandbox_id: str, cpus: int) -> float:
        now, used = time.monotonic(), self.cpu_nanoseconds(sandbox_id)
        last = self._last_cpu.get(sandbox_id)
        self._last_cpu[sandbox_id] = (now, used)
        if last is None or now <= last[0]:
            return 0.0
        pct = 100.0 * (used - last[1]) / ((now - last[0]) * 1e9 * max(cpus, 1))
        return round(min(max(pct, 0.0), 100.0), 2)

    def memory(self, sandbox_id: str) -> tuple[int, int, int]:
        """(used, limit, cache) in bytes; used excludes the page cache."""
        d = self._dir("memory", sandbox_id)
        if self._v2:
            usage, limit = _int(d / "memory.current") or 0, _int(d / "memory.max")
            cache = _stat(d / "memory.stat", "file")
        else:
            usage, limit = _int(d / "memory.usage_in_bytes") or 0, _int(d / "memory.limit_in_bytes")
            cache = _stat(d / "memory.stat", "total_cache")
        total = limit if limit and limit < os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") else 0
        return max(usage - cache, 0), total, cache

    def working_set(self, sandbox_id: str) -> int | None:
        """Bytes the sandbox really holds, as the kubelet counts them for eviction: usage minus the inactive page
        cache (which the kernel reclaims before it runs out); None while it has no memory cgroup (yet).

        Two small reads per sandbox, cheap enough for admission to sum over 200 sandboxes once a second."""
        d = self._dir("memory", sandbox_id)
        if self._v2:
            usage, inactive = _int(d / "memory.current"), _stat(d / "memory.stat", "inactive_file")
        else:
            usage, inactive = _int(d / "memory.usage_in_bytes"), _stat(d / "memory.stat", "total_inactive_file")
        return None if usage is None else max(usage - inactive, 0)

    def forget(self, sandbox_id: str) -> None:
        self._last_cpu.pop(sandbox_id, None)

    def remove_leftovers(self, sandbox_id: str) -> None:
        """rmdir cgroups an OCI runtime left behind (it normally removes them on delete)."""
        dirs = [V1 / f"sandhive/{sandbox_id}"] if self._v2 else [p / f"sandhive/{sandbox_id}" for p in V1.iterdir()]
        for d in dirs:
            with contextlib.suppress(OSError):
                d.rmdir()
