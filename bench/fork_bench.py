"""Snapshots and forks through a live `sandhive serve` on the container backend (issue 14), each figure next to
its baseline from the same run: a plain `Sandbox.create()` → first command on the same server.

    python -m bench.fork_bench [--runs 5] [--data-dir DIR]

Rows: `create_snapshot` of a running sandbox (how long its caller waits; the sandbox stands still for part
of it), snapshot → `Sandbox.create(snapshot_id)` → first command, and the wall time of `fork(1)`, `fork(5)`
and `fork(20)` until every copy is returned (each restored, `/init`ed and recorded). The e2b SDK is the client.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from e2b import Sandbox

from bench.common import machine, pct
from bench.live import server

FORK_COUNTS = (1, 5, 20)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def plain_create() -> float:
    started = time.perf_counter()
    sandbox = Sandbox.create(timeout=120)
    try:
        sandbox.commands.run("true")
        return _ms(started)
    finally:
        sandbox.kill()


def from_snapshot(snapshot_id: str) -> float:
    started = time.perf_counter()
    sandbox = Sandbox.create(snapshot_id, timeout=120)
    try:
        sandbox.commands.run("true")
        return _ms(started)
    finally:
        sandbox.kill()


def fork_wall(source: Sandbox, count: int) -> float:
    started = time.perf_counter()
    results = source.fork(count=count, timeout=120)
    wall = _ms(started)
    failed = [r for r in results if not isinstance(r, Sandbox)]
    for result in results:
        if isinstance(result, Sandbox):
            result.kill()
    if failed:
        raise RuntimeError(f"fork({count}): {len(failed)} copies did not start: {failed[0]}")
    return wall


def row(name: str, samples: list[float], baseline: list[float]) -> str:
    base = statistics.median(baseline)
    return (f"| {name} | {pct(samples, 50):.0f} | {pct(samples, 99):.0f} | {len(samples)} | "
            f"{pct(samples, 50) / base:.2f}× |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fork_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data-dir", default=None, help="reuse a data dir (its templates are already built)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sandhive-fork-bench-", dir="/var/tmp"))
    root.chmod(0o711)
    data_dir = Path(args.data_dir) if args.data_dir else root / "data"
    load_before = os.getloadavg()
    started = time.monotonic()
    try:
        # No team limit: fork(20) plus its source is over the default of 20 running sandboxes.
        with server(data_dir, "container", "--max-sandboxes-per-team", "0"):
            baseline = [plain_create() for _ in range(args.runs + 1)][1:]  # the first warms the pool's template
            source = Sandbox.create(timeout=600)
            try:
                source.commands.run("python3 -c 'x = bytearray(32 << 20)' &", background=True)  # some memory
                snap_take, snapshots = [], []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    snapshots.append(source.create_snapshot().snapshot_id)
                    snap_take.append(_ms(t))
                restore = [from_snapshot(snapshots[0]) for _ in range(args.runs)]
                forks = {n: [fork_wall(source, n) for _ in range(max(1, args.runs // n))] for n in FORK_COUNTS}
                for snapshot_id in snapshots:
                    Sandbox.delete_snapshot(snapshot_id)
            finally:
                source.kill()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    minutes = (time.monotonic() - started) / 60
    print(f"{machine()} · load average {load_before[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end · "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {minutes:.1f} min\n")
    print("| measurement (container backend, e2b SDK) | p50 ms | p99 ms | n | p50 vs baseline |")
    print("|---|---|---|---|---|")
    print(f"| baseline: Sandbox.create() → first command (warm pool) | {pct(baseline, 50):.0f} | "
          f"{pct(baseline, 99):.0f} | {len(baseline)} | — |")
    print(row("create_snapshot() of a running sandbox", snap_take, baseline))
    print(row("snapshot → Sandbox.create(snapshot_id) → first command", restore, baseline))
    for n, samples in forks.items():
        print(row(f"fork(count={n}) wall time, all copies returned", samples, baseline))


if __name__ == "__main__":
    main()
