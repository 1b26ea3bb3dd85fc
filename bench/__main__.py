"""`make bench`: issue 6's table — sandboxes through a live `sandhive serve` per backend, each figure next to its
baseline from the same run.

    python -m bench [--runs 20] [--concurrent 20] [--idle 10] [--fit-budget 4096] [--backends container,gvisor]

Rows: create → first command (p50/p99) on a pool hit and a pool miss, per backend (container: also a miss served
by a warm shell, `--miss-shells 1`, and one by restoring a ready sandbox's CRIU checkpoint,
`bench/miss_restore_bench.py`), against the raw OCI
runtime's start (`runc run` of /bin/true with a sandbox's isolation; `runsc do /bin/true` for gvisor); a
pool miss also against the same sandbox bundle started by the raw runtime until its envd answers (Sandhive's
own overhead), and a hit next to its floor, `bash -l -c true` timed by a shell inside an idle sandbox (the
SDK runs every command through a login bash);
the exec round trip and a 10 MB file write + read against `subprocess.run` and the local disk; the wall
time of 20 concurrent creates against 20 concurrent raw `runc run`s; idle memory per sandbox against an
idle raw runc container; and how many idle sandboxes a configured budget admits before the server
answers 503, extrapolated to this host's default budget. A backend that does not work here is reported
as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import baselines, breakdown, live, miss_restore_bench
from bench.common import machine, pct


def _version(*argv: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return out[0] if out else "unknown"


def timing_row(name: str, backend: str, samples: list[float], baseline_name: str, baseline: list[float],
               target: str = "") -> str:
    p50, p99 = pct(samples, 50), pct(samples, 99)
    base = statistics.median(baseline) if baseline else None
    ratio = f"{p50 / base:.2f}×" if base else "—"
    base_text = f"{base:.2f}" if base is not None else "—"
    return (f"| {name} | {backend} | {p50:.1f} | {p99:.1f} | {len(samples)} | {baseline_name} | {base_text} | "
            f"{ratio} | {target} |")


def verdict(ok: bool, text: str) -> str:
    return f"{'✅' if ok else '❌'} {text}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--idle", type=int, default=10, help="idle sandboxes whose memory is measured")
    parser.add_argument("--fit-budget", type=int, default=4096, help="MB of host budget for the admission row")
    parser.add_argument("--backends", default="container,gvisor")
    parser.add_argument("--data-dir", default=None, help="reuse a data dir (its templates are already built)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sandhive-bench-", dir="/var/tmp"))
    root.chmod(0o711)
    data_dir = Path(args.data_dir) if args.data_dir else root / "data"
    load_before = os.getloadavg()
    started = time.monotonic()
    try:
        true_local = baselines.subprocess_true(50)
        local_files = baselines.local_file_round_trip(max(5, args.runs))
        with baselines.runc_bundle() as bundle:
            runc = baselines.raw_runc(bundle, args.runs)
            runc_wall = baselines.raw_runc_concurrent_wall(bundle, args.concurrent)
            runc_idle = baselines.raw_runc_idle_memory(bundle)
        platform = baselines.runsc_platform()
        runsc = baselines.runsc_do(platform, args.runs) if platform else []
        results, skipped, same_bundle, from_restore = [], {}, {}, {}
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            if backend == "gvisor" and not Path(__file__).resolve().parents[1].joinpath(
                    "src/sandhive/node/gvisor.py").exists():
                skipped[backend] = "src/sandhive/node/gvisor.py does not exist yet"
                continue
            why = live.backend_works(data_dir, backend)
            if why:
                skipped[backend] = why
                continue
            results.append(live.run_backend(data_dir, backend, args.runs, args.concurrent, args.idle,
                                            args.fit_budget))
            same_bundle[backend] = breakdown.same_bundle_start(data_dir, backend, max(5, args.runs // 2))
            if backend == "container":  # the only backend with CRIU restores into a new id here
                from_restore[backend] = miss_restore_bench.restore_miss(data_dir, max(5, args.runs // 2))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    minutes = (time.monotonic() - started) / 60

    raw = {"container": ("raw `runc run` /bin/true", runc), "gvisor": (f"`runsc do /bin/true` ({platform})", runsc)}
    lines = [
        f"{machine()} · {_version('runc', '--version')} · runsc {_version('runsc', '--version')} · "
        f"load average {load_before[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end · "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {minutes:.1f} min",
        "",
        "| measurement | backend | p50 ms | p99 ms | n | baseline (same run) | baseline p50 ms | p50 ratio | target |",
        "|---|---|---|---|---|---|---|---|---|",
        timing_row("baseline: subprocess.run(['true'])", "host", true_local, "—", []),
        timing_row("baseline: raw `runc run` of /bin/true, sandbox namespaces + seccomp", "host", runc,
                   "subprocess.run", true_local),
    ]
    if runsc:
        lines.append(timing_row(f"baseline: `runsc --platform={platform} do /bin/true`", "host", runsc,
                                "subprocess.run", true_local))
    for f in results:
        base_name, base = raw[f.backend]
        hit_p50 = pct(f.hit, 50)
        miss_ratio = pct(f.miss, 50) / statistics.median(base) if base else float("inf")
        restore_rows = []
        if f.backend in from_restore and base:
            cold, restored = from_restore[f.backend]
            restore_rows.append(timing_row(
                f"pool miss from restore of a ready sandbox's CRIU checkpoint (node only; cold `Node.create` "
                f"alternated with it: p50 {pct(cold, 50):.0f} ms)", f.backend, restored, base_name, base,
                verdict(pct(restored, 50) / statistics.median(base) <= 1.3, "p50 ≤ 1.3× raw start")))
        lines += [
            timing_row(f"create → first command, pool hit ({f.hits_counted}/{len(f.hit)} counted as hits)",
                       f.backend, f.hit, base_name, base, verdict(hit_p50 <= 30, "p50 ≤ 30 ms")),
            timing_row("floor: `bash -l -c true` timed by a shell inside an idle sandbox (no envd, no API)",
                       f.backend, f.floor, "subprocess.run", true_local),
            timing_row("create → first command, cold pool miss (`--pool-size 0 --miss-shells 0`)", f.backend, f.miss,
                       base_name, base,
                       verdict(miss_ratio <= 1.3, "p50 ≤ 1.3× raw start")),
            timing_row("same pool miss against the same bundle's raw start (runtime + envd until /health, no "
                       "network, /init, API)", f.backend, f.miss, "raw runtime start of the sandbox bundle",
                       same_bundle.get(f.backend, [])),
            *([timing_row("create → first command, pool miss served by a warm shell (`--pool-size 0`, the "
                          "default one shell)", f.backend, f.shell_miss, base_name, base,
                          verdict(pct(f.shell_miss, 50) <= 1.3 * statistics.median(base), "p50 ≤ 1.3× raw start"))]
              if f.shell_miss and base else []),
            *restore_rows,
            timing_row("exec round trip: commands.run('true') through the proxy", f.backend, f.exec_rt,
                       "subprocess.run", true_local),
            timing_row("10 MB files.write + files.read", f.backend, f.files, "local 10 MB write + read",
                       local_files),
            f"| wall time of {args.concurrent} concurrent create → first command (pool of "
            f"{f.status['pools'][0]['target'] if f.status.get('pools') else '?'} at the start) | {f.backend} | "
            f"{f.concurrent_wall:.0f} | — | 1 | {args.concurrent} raw `runc run`s at once (wall) | "
            f"{runc_wall:.0f} | {f.concurrent_wall / runc_wall:.2f}× | |",
        ]
    for backend, why in skipped.items():
        lines.append(f"| (all rows) | {backend} | skipped | | | {why} | | | |")

    mem_budget, cpus = live.host_budget_default()
    lines += ["", "| capacity | backend | figure | baseline (same run) | baseline figure |", "|---|---|---|---|---|"]
    for f in results:
        mem = statistics.median(f.idle_mb) if f.idle_mb else 0.0
        reserved = f.status.get("pools", [{}])[0].get("memoryMB", 512) if f.status.get("pools") else 512
        by_budget = min(mem_budget // reserved, int(cpus // 2))
        by_use = int(mem_budget / max(mem, f.idle_host_mb, 1))
        lines += [
            f"| idle memory per sandbox (its memory cgroup, median of {len(f.idle_mb)}) | {f.backend} | "
            f"{mem:.1f} MB | idle raw runc container (busybox `sleep`, its cgroup) | "
            f"{statistics.median(runc_idle):.2f} MB |",
            f"| host MemAvailable drop per idle sandbox (shared machine: noisy) | {f.backend} | "
            f"{f.idle_host_mb:.1f} MB | — | — |",
            f"| idle sandboxes admitted before 503, `--memory-budget {f.fit_budget_mb}` | {f.backend} | "
            f"{f.fit} | budget ÷ 512 MB reserved per sandbox | {f.fit_budget_mb // reserved} |",
            f"| … extrapolated to this host's default budget ({mem_budget} MB, {cpus:g} vCPUs) | {f.backend} | "
            f"{by_budget} admitted (limits reserved) | host budget ÷ measured idle memory | {by_use} |",
        ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
