"""Density on one host (issue 17): what an idle `base` sandbox costs the host, and how fast creates stay as the host
fills up — through a live `sandhive serve` (container backend) and the released e2b SDK, next to raw `runc run`.

- Host memory per idle sandbox, two ways: the host's MemAvailable drop over 200 sandboxes ÷ 200 (everything a
  sandbox costs, kernel objects included, but noisy on a shared machine), and the node's own figure, the sum of
  the sandboxes' cgroup working sets that admission counts (`inUseMemoryMB` of `/sandhive/node` ÷ 200, read
  once no sandbox is in its start estimate any more).
- Create p50 at 1, 100 and 200 sandboxes running: `Sandbox.create()` alone (cold starts: `--pool-size 0`, so
  that every create pays the runtime start measured next to it), each killed after; then raw `runc run` of
  /bin/true (the same-run runtime-start baseline, bench/baselines.py) at that fill level.

The host is filled 8 creates at a time, as the density test does (tests/api/test_density.py). Every sandbox the
bench made is killed at the end, even when a measurement fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from e2b import Sandbox

from bench import baselines
from bench.common import machine, pct
from bench.live import mem_available_mb, server
from sandhive.node.admission import SETTLE_SECONDS
from tests.api.pool_rig import node_status

LEVELS = (1, 100, 200)
AT_ONCE = 8


def timed_create() -> float:
    """Milliseconds of one `Sandbox.create()` (the sandbox is killed afterwards, untimed)."""
    started = time.perf_counter()
    sandbox = Sandbox.create(template="base", timeout=300, request_timeout=600)
    elapsed = (time.perf_counter() - started) * 1000
    sandbox.kill()
    return elapsed


def fill(creators: ThreadPoolExecutor, running: list[Sandbox], level: int) -> None:
    """Create sandboxes (`AT_ONCE` at a time) until `level` run; every one made lands in `running`, to be killed."""
    futures = [creators.submit(Sandbox.create, template="base", timeout=1800, request_timeout=600)
               for _ in range(level - len(running))]
    failed = None
    for future in futures:
        try:
            running.append(future.result())
        except Exception as exc:
            failed = exc
    if failed is not None:
        raise failed


def main() -> None:
    """`python -m bench.density_bench [--runs 10] [--data-dir DIR]`."""
    parser = argparse.ArgumentParser(prog="python -m bench.density_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="creates (and raw runc runs) measured per level")
    parser.add_argument("--data-dir", default=None, help="a data dir whose `base` template is built")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sandhive-bench-density-", dir="/var/tmp"))
    root.chmod(0o711)
    data_dir = Path(args.data_dir) if args.data_dir else root / "data"
    load = os.getloadavg()[0]
    most = max(LEVELS)
    creates: dict[int, list[float]] = {}
    raw: dict[int, list[float]] = {}
    running: list[Sandbox] = []
    host_mb = node_mb = 0.0
    fill_seconds = 0.0
    try:
        with baselines.runc_bundle() as bundle, server(
                data_dir, "container", "--pool-size", "0", "--miss-shells", "0", "--max-sandboxes", str(most + 1),
                "--max-sandboxes-per-team", "0") as (srv, key), ThreadPoolExecutor(AT_ONCE) as creators:
            try:
                Sandbox.create(template="base", timeout=60, request_timeout=600).kill()  # `base` prepared once
                time.sleep(2)
                before = mem_available_mb()
                for level in LEVELS:
                    started = time.monotonic()
                    fill(creators, running, level)
                    fill_seconds += time.monotonic() - started
                    if level == most:  # every sandbox past its start estimate: the node counts measured use only
                        time.sleep(SETTLE_SECONDS + 1)
                        node_mb = node_status(srv, key)["inUseMemoryMB"] / most
                        host_mb = (before - mem_available_mb()) / most
                    creates[level] = [timed_create() for _ in range(args.runs)]
                    raw[level] = baselines.raw_runc(bundle, args.runs)
            finally:
                with ThreadPoolExecutor(32) as killers:
                    list(killers.map(lambda s: s.kill(), running))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\ndensity: {most} idle `base` sandboxes on one `sandhive serve` (container, e2b SDK, {AT_ONCE} creates at "
          f"once; filled in {fill_seconds:.0f} s) · {machine()} · load average {load:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end\n")
    print("| measurement | value |\n|---|---|")
    print(f"| host memory per idle sandbox: MemAvailable drop ÷ {most} | {host_mb:.1f} MB |")
    print(f"| host memory per idle sandbox: cgroup working sets (admission's figure) ÷ {most} | {node_mb:.1f} MB |")
    print("\n| sandboxes running | create p50 ms | create p99 ms | raw `runc run` /bin/true p50 ms (same run) | "
          "create p50 vs raw | n |\n|---|---|---|---|---|---|")
    for level in LEVELS:
        base = statistics.median(raw[level])
        print(f"| {level} | {pct(creates[level], 50):.1f} | {pct(creates[level], 99):.1f} | {base:.1f} | "
              f"{pct(creates[level], 50) / base:.2f}× | {len(creates[level])} |")


if __name__ == "__main__":
    main()
