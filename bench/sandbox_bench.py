"""Sandbox creation and exec through a live `sandhive serve`, next to raw baselines from the same run.

    python -m bench.sandbox_bench [--runs N] [--concurrent 20] [--template base]

Baselines: `subprocess.run(["true"])`, and a raw `runc run` of a container with the same isolation
as a sandbox (user, pid, mount, ipc, uts, cgroup and network namespaces, seccomp) running /bin/true on a
busybox rootfs — what the OCI runtime alone costs, before envd, networking and the API.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from e2b import Sandbox

from bench.common import HEADER, machine, measure, row
from sandhive.node import oci
from tests.helpers import free_port, stop_process_group, wait_for_health
from tests.node.conftest import make_busybox_rootfs


def raw_runc_baseline(runs: int) -> list[float]:
    """Milliseconds of `runc run` (create, start, /bin/true, exit, delete) with a sandbox's isolation."""
    work = Path(tempfile.mkdtemp(prefix="sandhive-bench-runc-", dir="/var/tmp"))
    work.chmod(0o711)
    try:
        make_busybox_rootfs(work / "rootfs")
        config = oci.bundle_config(sandbox_id="bench", rootfs=str(work / "rootfs"), netns="", hostname="bench",
                                   argv=["/bin/true"], env={"PATH": "/bin"}, system_image="/", etc_files={},
                                   cpu_count=1, memory_mb=256)
        config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/.sandhive"]
        config["linux"]["namespaces"] = [ns if ns["type"] != "network" else {"type": "network"}
                                         for ns in config["linux"]["namespaces"]]
        config["linux"]["cgroupsPath"] = "/sandhive-bench"
        (work / "config.json").write_text(json.dumps(config))
        root = work / "runc-root"
        counter = iter(range(1_000_000))

        def once() -> None:
            subprocess.run(["runc", "--root", str(root), "run", "--bundle", str(work), f"b{next(counter)}"],
                           check=True, stdin=subprocess.DEVNULL)

        return measure(once, runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Server:
    """`sandhive serve` in a fresh data dir, with an API key; stopped by PID."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "sandhive.cli", "serve", "--port", str(self.port),
                                      "--data-dir", str(data_dir)], start_new_session=True)
        wait_for_health(self.url, self.proc, timeout=600, status=200)
        key = subprocess.run([sys.executable, "-m", "sandhive.cli", "keys", "create", "--quiet", "--data-dir",
                              str(data_dir)], check=True, capture_output=True, text=True).stdout.strip()
        os.environ.update(E2B_API_URL=self.url, E2B_SANDBOX_URL=self.url, E2B_API_KEY=key)

    def stop(self) -> None:
        stop_process_group(self.proc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--template", default="base")
    parser.add_argument("--data-dir", default=None, help="reuse a data dir (its templates are already built)")
    args = parser.parse_args()
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="sandhive-bench-", dir="/var/tmp"))
    true_local = measure(lambda: subprocess.run(["true"], check=True), 50)
    runc = raw_runc_baseline(args.runs)
    server = Server(data_dir)
    try:
        Sandbox.create(args.template).kill()  # builds the template if needed; not measured

        def create_and_run() -> float:
            start = time.perf_counter()
            sandbox = Sandbox.create(args.template)
            sandbox.commands.run("true")
            elapsed = (time.perf_counter() - start) * 1000
            sandbox.kill()
            return elapsed

        serial = [create_and_run() for _ in range(args.runs)]
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrent) as pool:
            concurrent = list(pool.map(lambda _: create_and_run(), range(args.concurrent)))
        wall = (time.perf_counter() - started) * 1000
        sandbox = Sandbox.create(args.template)
        try:
            exec_rt = measure(lambda: sandbox.commands.run("true"), args.runs * 5)
        finally:
            sandbox.kill()
    finally:
        server.stop()
        if not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    print("\n".join([
        f"`sandhive serve` (container backend, runc), released e2b SDK over HTTP/1.1 on loopback · {machine()}",
        "",
        HEADER,
        row("baseline: subprocess.run(['true'])", true_local),
        row("baseline: raw `runc run` of /bin/true, same namespaces + seccomp", runc, true_local),
        row("Sandbox.create() → first commands.run('true') done, one at a time", serial, runc),
        row(f"same, {args.concurrent} at once (per sandbox)", concurrent, runc),
        f"| wall time of {args.concurrent} concurrent create → first command | {wall:.0f} | — | 1 | — |",
        row("exec round trip through the proxy: commands.run('true')", exec_rt, true_local),
    ]))


if __name__ == "__main__":
    main()
