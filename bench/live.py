"""Sandbox figures through a live `sandhive serve` per backend, with the released e2b SDK over HTTP on loopback.

Every server runs on one data dir (its `base` template is built once) and is stopped before the next one
starts; every sandbox the bench creates is killed, even when a measurement fails.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from e2b import Sandbox

from bench.baselines import TEN_MB
from bench.common import measure
from tests.api.pool_rig import e2b_env, node_status, pool_of, wait_for_pool
from tests.api.rig import Server, create_key, kill_team_sandboxes, start_server

TEAM = "bench"


@dataclass
class BackendFigures:
    backend: str
    hit: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)  # `bash -l -c true` timed by a shell inside a sandbox
    hits_counted: int = 0
    miss: list[float] = field(default_factory=list)
    shell_miss: list[float] = field(default_factory=list)  # a miss served by a warm shell (container only)
    exec_rt: list[float] = field(default_factory=list)
    files: list[float] = field(default_factory=list)
    concurrent_wall: float = 0.0
    concurrent_each: list[float] = field(default_factory=list)
    idle_mb: list[float] = field(default_factory=list)  # cgroup memory of each idle sandbox
    idle_host_mb: float = 0.0  # host MemAvailable drop per idle sandbox (noisy on a shared machine)
    fit: int = 0
    fit_budget_mb: int = 0
    status: dict = field(default_factory=dict)  # /sandhive/node of the pooled server (budget, pools)


@contextlib.contextmanager
def server(data_dir: Path, backend: str, *args: str) -> Iterator[tuple[Server, str]]:
    srv = start_server(data_dir, *args, backend=backend, timeout=900)
    key = srv.key(TEAM)
    try:
        with e2b_env(srv, key):
            yield srv, key
    finally:
        try:
            kill_team_sandboxes(srv, key)
        finally:
            srv.stop()


def create_and_run() -> float:
    """Milliseconds from `Sandbox.create()` to the end of its first `commands.run('true')`."""
    started = time.perf_counter()
    sandbox = Sandbox.create(timeout=300)
    try:
        sandbox.commands.run("true")
        return (time.perf_counter() - started) * 1000
    finally:
        sandbox.kill()


def login_shell_floor(sandbox: Sandbox, runs: int) -> list[float]:
    """Milliseconds of `bash -l -c true` started and waited for by a shell inside the sandbox, as its user.

    This is the first command's own cost on the backend (fork, exec, the login profile), without envd, the
    proxy or the network: the floor under "create → first command", since the SDK runs every command
    through `bash -l -c`.
    """
    script = f"TIMEFORMAT=%3R; for i in $(seq {runs}); do {{ time bash -l -c true; }} 2>&1; done"
    out = sandbox.commands.run(script, timeout=120).stdout
    return [float(line) * 1000 for line in out.split()]


def mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pooled(data_dir: Path, figures: BackendFigures, runs: int, concurrent: int) -> None:
    with server(data_dir, figures.backend) as (srv, key):
        Sandbox.create(timeout=60).kill()  # builds `base` if needed; not measured
        before = wait_for_pool(srv, key)["hits"]
        for _ in range(runs):
            # A full pool, no fill in flight: each create below is a hit (the pool's own count checks it),
            # measured as a user with sporadic creates sees it.
            wait_for_pool(srv, key)
            figures.hit.append(create_and_run())
        figures.hits_counted = pool_of(node_status(srv, key))["hits"] - before
        figures.status = node_status(srv, key)

        sandbox = Sandbox.create(timeout=300)
        try:
            figures.floor = login_shell_floor(sandbox, runs)
            figures.exec_rt = measure(lambda: sandbox.commands.run("true"), runs * 5)

            def files() -> None:
                sandbox.files.write("/tmp/ten-mb", TEN_MB)
                assert len(sandbox.files.read("/tmp/ten-mb", format="bytes")) == len(TEN_MB)

            figures.files = measure(files, max(5, runs))
        finally:
            sandbox.kill()

        wait_for_pool(srv, key)
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrent) as workers:
            figures.concurrent_each = list(workers.map(lambda _: create_and_run(), range(concurrent)))
        figures.concurrent_wall = (time.perf_counter() - started) * 1000


def idle_memory(data_dir: Path, figures: BackendFigures, count: int) -> None:
    """cgroup memory of `count` idle sandboxes, and the host's MemAvailable drop per sandbox (no pool running)."""
    with server(data_dir, figures.backend, "--pool-size", "0", "--miss-shells", "0") as (srv, key):
        Sandbox.create(timeout=60).kill()
        time.sleep(2)
        before = mem_available_mb()
        idle = [Sandbox.create(timeout=300) for _ in range(count)]
        try:
            time.sleep(3)
            figures.idle_host_mb = (before - mem_available_mb()) / count
            with srv.client(key) as c:
                for sandbox in idle:
                    metric = c.get(f"/sandboxes/{sandbox.sandbox_id}/metrics").json()
                    figures.idle_mb.append(metric[0]["memUsed"] / 2**20)
        finally:
            for sandbox in idle:
                sandbox.kill()


def misses(data_dir: Path, figures: BackendFigures, runs: int) -> None:
    """Cold misses: no pool and no warm shell (the container backend keeps one by default)."""
    with server(data_dir, figures.backend, "--pool-size", "0", "--miss-shells", "0") as _:
        create_and_run()  # warm the host's caches of the template; not measured
        figures.miss = [create_and_run() for _ in range(runs)]


def shell_misses(data_dir: Path, figures: BackendFigures, runs: int) -> None:
    """Misses served by a warm shell (`--pool-size 0`, the default one shell): before each create the shell is
    ready (its refill, in the background, is not timed), as between the misses of a node that keeps one."""
    with server(data_dir, figures.backend, "--pool-size", "0") as (srv, _):
        admin = create_key(srv.data_dir, "bench-operator", "--admin")

        def shell_ready() -> None:
            deadline = time.monotonic() + 300
            while not (pool_of(node_status(srv, admin), "sandhive-shell") or {}).get("ready"):
                if time.monotonic() > deadline:
                    raise TimeoutError("no warm shell became ready")
                time.sleep(0.1)
            time.sleep(0.3)  # the refill's last work settles

        shell_ready()
        create_and_run()  # warm the host's caches of the template; not measured
        for _ in range(runs):
            shell_ready()
            figures.shell_miss.append(create_and_run())
        hits = (pool_of(node_status(srv, admin), "sandhive-shell") or {}).get("hits", 0)
        if hits < runs + 1:
            raise RuntimeError(f"only {hits} of {runs + 1} misses were served by a shell")


def admission_fit(data_dir: Path, figures: BackendFigures, budget_mb: int) -> None:
    """Idle sandboxes created one after another until the server answers 503 (host budget spent)."""
    figures.fit_budget_mb = budget_mb
    args = ("--pool-size", "0", "--memory-budget", str(budget_mb), "--memory-overcommit", "1")  # limit-based
    with server(data_dir, figures.backend, *args) as (srv, key), srv.client(key) as c:
        for _ in range(1000):
            r = c.post("/v2/sandboxes", json={"templateID": "base", "timeout": 300})
            if r.status_code == 503:
                break
            r.raise_for_status()
            figures.fit += 1


def run_backend(data_dir: Path, backend: str, runs: int, concurrent: int, idle: int, budget_mb: int
                ) -> BackendFigures:
    figures = BackendFigures(backend)
    pooled(data_dir, figures, runs, concurrent)
    misses(data_dir, figures, runs)
    if backend == "container":
        shell_misses(data_dir, figures, runs)
    idle_memory(data_dir, figures, idle)
    admission_fit(data_dir, figures, budget_mb)
    return figures


def backend_works(data_dir: Path, backend: str) -> str | None:
    """None when `sandhive serve --backend B` starts and runs a command here, else why not."""
    try:
        with server(data_dir, backend, "--pool-size", "0"):
            sandbox = Sandbox.create(timeout=60)
            try:
                if sandbox.commands.run("echo ok").stdout != "ok\n":
                    return "a command in a sandbox did not answer"
            finally:
                sandbox.kill()
    except (RuntimeError, TimeoutError, httpx.HTTPError, Exception) as exc:  # any failure means "skipped"
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    return None


def host_budget_default() -> tuple[int, float]:
    """The default budget of this host (memory MB, vCPUs), as `sandhive serve` computes it."""
    from sandhive.node.admission import DEFAULT_CPU_OVERCOMMIT, Budget

    budget = Budget.of_host(None, DEFAULT_CPU_OVERCOMMIT)
    return budget.memory_mb, budget.cpus


def cores() -> int:
    return len(os.sched_getaffinity(0))


def main() -> None:
    """`python -m bench.live [--runs 20] [--data-dir DIR]`: create → first command through a live server on the
    container backend, a cold miss and a miss from a warm shell, next to raw `runc run` before and after."""
    import argparse
    import shutil
    import statistics
    import tempfile

    from bench import baselines
    from bench.common import machine, pct

    parser = argparse.ArgumentParser(prog="python -m bench.live", description=main.__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--data-dir", default=None, help="a data dir whose `base` template is built")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sandhive-bench-live-", dir="/var/tmp"))
    root.chmod(0o711)
    load = os.getloadavg()[0]
    try:
        with baselines.runc_bundle() as bundle:
            raw = baselines.raw_runc(bundle, args.runs)
        figures = BackendFigures("container")
        data_dir = Path(args.data_dir) if args.data_dir else root / "data"
        misses(data_dir, figures, args.runs)
        shell_misses(data_dir, figures, args.runs)
        with baselines.runc_bundle() as bundle:
            raw += baselines.raw_runc(bundle, args.runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = statistics.median(raw)
    print(f"\ncreate → first command through `sandhive serve` (container, template base, e2b SDK) · {machine()} · "
          f"load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at end\n")
    print("| measurement | p50 ms | p99 ms | n | p50 vs raw `runc run` /bin/true |\n|---|---|---|---|---|")
    for name, samples in (("baseline: raw `runc run` of /bin/true (before and after)", raw),
                          ("pool miss, cold (`--pool-size 0 --miss-shells 0`)", figures.miss),
                          ("pool miss from a warm shell (`--pool-size 0`, the default one shell)", figures.shell_miss)):
        print(f"| {name} | {pct(samples, 50):.1f} | {pct(samples, 99):.1f} | {len(samples)} | "
              f"{pct(samples, 50) / base:.2f}× |")


if __name__ == "__main__":
    main()
