"""Baselines measured in the same run as the sandbox figures: what the OCI runtimes and the host cost alone.

- `subprocess.run(["true"])`: the floor for starting anything.
- a raw `runc run` of /bin/true in a bundle with a sandbox's isolation (user, pid, mount, ipc, uts, cgroup and
  network namespaces, seccomp) on a busybox rootfs: what the container runtime alone costs.
- `runsc do /bin/true` on the platform gVisor uses here: what gVisor's start alone costs.
- 20 raw `runc run`s at once (wall time), local 10 MB write + read, and the memory cgroup of an idle raw runc
  container (busybox `sleep`): the baselines of the concurrency, file and memory rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.common import measure
from sandhive.node import oci
from tests.node.conftest import make_busybox_rootfs

TEN_MB = os.urandom(10 * 1024 * 1024)


def subprocess_true(runs: int) -> list[float]:
    return measure(lambda: subprocess.run(["true"], check=True), runs)


def local_file_round_trip(runs: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="sandhive-bench-file-") as tmp:
        path = Path(tmp) / "ten-mb"

        def once() -> None:
            path.write_bytes(TEN_MB)
            assert len(path.read_bytes()) == len(TEN_MB)

        return measure(once, runs)


@dataclass
class RuncBundle:
    """Busybox bundles with a sandbox's namespaces and seccomp for raw `runc` runs: one bundle directory (and
    cgroup) per container, all sharing one rootfs, so that concurrent runs do not share a cgroup."""

    work: Path
    root: Path

    def prepare(self, name: str, argv: list[str]) -> Path:
        bundle = self.work / "bundles" / name
        bundle.mkdir(parents=True)
        config = oci.bundle_config(sandbox_id=name, rootfs=str(self.work / "rootfs"), netns="", hostname="bench",
                                   argv=argv, env={"PATH": "/bin"}, system_image="/", etc_files={},
                                   cpu_count=1, memory_mb=256)
        config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/.sandhive"]
        config["linux"]["namespaces"] = [ns if ns["type"] != "network" else {"type": "network"}
                                         for ns in config["linux"]["namespaces"]]
        config["linux"]["cgroupsPath"] = f"/sandhive-bench-{name}"
        (bundle / "config.json").write_text(json.dumps(config))
        return bundle

    def run(self, name: str, argv: list[str], *, detach: bool = False) -> None:
        bundle = self.prepare(name, argv)
        subprocess.run(["runc", "--root", str(self.root), "run", *(["--detach"] if detach else []), "--bundle",
                        str(bundle), name], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL if detach else None, stderr=subprocess.DEVNULL if detach else None)


@contextlib.contextmanager
def runc_bundle() -> Iterator[RuncBundle]:
    work = Path(tempfile.mkdtemp(prefix="sandhive-bench-runc-", dir="/var/tmp"))
    work.chmod(0o711)
    try:
        make_busybox_rootfs(work / "rootfs")
        yield RuncBundle(work, work / "runc-root")
    finally:
        for name in _runc_list(work / "runc-root"):
            subprocess.run(["runc", "--root", str(work / "runc-root"), "delete", "--force", name],
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def _runc_list(root: Path) -> list[str]:
    if not root.exists():
        return []
    out = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True)
    return out.stdout.split()


_names = iter(range(10**9))


def raw_runc(bundle: RuncBundle, runs: int) -> list[float]:
    """Milliseconds of `runc run` (create, start, /bin/true, exit, delete); the bundle is written beforehand."""
    out = []
    for i in range(runs + 3):
        name = f"b{next(_names)}"
        bundle.prepare(name, ["/bin/true"])
        started = time.perf_counter()
        subprocess.run(["runc", "--root", str(bundle.root), "run", "--bundle", str(bundle.work / "bundles" / name),
                        name], check=True, stdin=subprocess.DEVNULL)
        if i >= 3:  # the first runs warm the caches
            out.append((time.perf_counter() - started) * 1000)
    return out


def raw_runc_concurrent_wall(bundle: RuncBundle, count: int) -> float:
    """Wall milliseconds of `count` raw `runc run`s of /bin/true started at once."""
    started = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(lambda _: bundle.run(f"c{next(_names)}", ["/bin/true"]), range(count)))
    return (time.perf_counter() - started) * 1000


def raw_runc_idle_memory(bundle: RuncBundle, count: int = 5) -> list[float]:
    """MB charged to the memory cgroup of each of `count` idle raw runc containers (busybox `sleep`)."""
    names = [f"idle{next(_names)}" for _ in range(count)]
    try:
        for name in names:
            bundle.run(name, ["/bin/sleep", "600"], detach=True)
        time.sleep(1)
        return [int(Path(f"/sys/fs/cgroup/memory/sandhive-bench-{n}/memory.usage_in_bytes").read_text()) / 2**20
                for n in names]
    finally:
        for name in names:
            subprocess.run(["runc", "--root", str(bundle.root), "delete", "--force", name], capture_output=True)


def runsc_platform() -> str | None:
    """The platform `runsc do` works on here (the one the gvisor backend would pick), or None."""
    if shutil.which("runsc") is None:
        return None
    for platform in (os.environ.get("SANDHIVE_GVISOR_PLATFORM") or "systrap", "ptrace"):
        with tempfile.TemporaryDirectory(prefix="sandhive-bench-runsc-") as root:
            try:
                ok = subprocess.run(["runsc", "--root", root, f"--platform={platform}", "--network=none", "do",
                                     "/bin/true"], capture_output=True, timeout=30).returncode == 0
            except subprocess.TimeoutExpired:
                ok = False
        if ok:
            return platform
    return None


def runsc_do(platform: str, runs: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="sandhive-bench-runsc-") as root:
        return measure(lambda: subprocess.run(["runsc", "--root", root, f"--platform={platform}", "--network=none",
                                               "do", "/bin/true"], check=True, capture_output=True), runs)
