"""What the node's metrics history costs (issue 18): one sampling round with 1 sandbox, then with N (24 by default).

One live server (container backend) samples every `--interval` seconds; the bench reads the node's own figures of
each round from `GET /metrics` (admin key): `sandhive_metrics_sample_seconds` (wall time of the round: every
sandbox's cgroup read and disk statvfs, gathered) and `sandhive_metrics_sample_cpu_seconds` (the server process's
CPU time during the round, an upper bound: whatever else it did meanwhile counts too). With 1 sandbox, the same
figures are the baseline of the same run. Idle sandboxes: sampling costs the same whatever they do.

    .venv/bin/python -m bench.metrics_sampling_bench [--sandboxes 24] [--rounds 30] [--interval 1]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import time

from e2b import Sandbox
from prometheus_client.parser import text_string_to_metric_families

from bench.common import HEADER, machine, row
from tests.api.rig import Server, container_server, create_key
from tests.helpers import wait_until

TEAM = "metrics-bench"


def _gauges(server: Server, admin: str) -> dict[str, float]:
    with server.client(admin) as c:
        text = c.get("/metrics").text
    return {f.name: f.samples[0].value for f in text_string_to_metric_families(text)
            if f.name.startswith("sandhive_metrics_") and f.samples}


def rounds(server: Server, admin: str, count: int, sandboxes: int, interval: float) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of `count` distinct rounds that sampled `sandboxes` sandboxes."""
    wall: list[float] = []
    cpu: list[float] = []
    last: tuple[float, float] | None = None
    deadline = time.monotonic() + count * interval * 4 + 60
    while len(wall) < count and time.monotonic() < deadline:
        g = _gauges(server, admin)
        now = (g["sandhive_metrics_sample_seconds"], g["sandhive_metrics_sample_cpu_seconds"])
        if g["sandhive_metrics_sampled_sandboxes"] == sandboxes and now != last:
            wall.append(now[0] * 1000)
            cpu.append(now[1] * 1000)
            last = now
        time.sleep(interval / 3)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandboxes", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    with container_server("metrics-bench", TEAM, "--metrics-interval", str(args.interval), "--pool-size", "0",
                          "--max-sandboxes-per-team", str(args.sandboxes + 1)) as server:
        key, admin = server.key(TEAM), create_key(server.data_dir, "metrics-bench-ops", "--admin")
        os.environ.update({"E2B_API_URL": server.url, "E2B_SANDBOX_URL": server.url, "E2B_API_KEY": key})
        first = Sandbox.create(timeout=900)
        one_wall, one_cpu = rounds(server, admin, args.rounds, 1, args.interval)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            rest = list(pool.map(lambda _: Sandbox.create(timeout=900), range(args.sandboxes - 1)))
        wait_until(lambda: _gauges(server, admin)["sandhive_metrics_sampled_sandboxes"] == args.sandboxes, 60,
                   "every sandbox sampled")
        many_wall, many_cpu = rounds(server, admin, args.rounds, args.sandboxes, args.interval)
        for sandbox in [first, *rest]:
            sandbox.kill()
    n = args.sandboxes
    print(f"Metrics sampling, container backend, one round of all sandboxes · {machine()}\n")
    print(HEADER)
    print(row("round wall time, 1 sandbox", one_wall))
    print(row(f"round wall time, {n} sandboxes", many_wall, one_wall))
    print(row("round CPU time (process), 1 sandbox", one_cpu))
    print(row(f"round CPU time (process), {n} sandboxes", many_cpu, one_cpu))
    per_core = sorted(many_cpu)[len(many_cpu) // 2] / 1000 / 5.0 * 100
    print(f"\nAt the default 5 s interval, {n} sandboxes cost {per_core:.2f} % of one core (median round CPU / 5 s).")


if __name__ == "__main__":
    main()
