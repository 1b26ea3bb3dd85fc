"""Could a pool miss restore a checkpoint instead of cold-starting envd? (issue 14, "faster misses from restore")

    python -m bench.miss_restore_bench [--runs 10] [--data-dir DIR] [--kinds cold,restore,shell]

Three things measured in one run, on the container backend through the node alone (no API, no SDK), template
`base`, every figure also as a ratio to the raw runtime's start from the same run:

- baseline: a raw `runc run` of /bin/true with a sandbox's namespaces and seccomp (bench/baselines.py);
- a cold miss: `Node.create` with no pool (slot, network, overlay, `runc create/start`, envd's Python start
  until `/health`, the template's first `/init`, the owner's `/init`);
- a miss from restore: `Node.restore` of a CRIU checkpoint of a freshly started, ready sandbox of the same
  template (what a pool would keep per template): a new id and slot, the writable layer seeded from the
  checkpoint's, the bundle, the two retargeted CRIU images, `runc restore`, the network, envd's `/health`, and
  the owner's `/init` with a fresh token, clock and entropy seed (as snapshots and forks do). CRIU runs with
  the node toolchain's options, `network-lock skip` among them (its unlock was 53-66 ms of each restore).
- a miss from a warm shell (`Node(shells=1)`, `container_shells.py`): the template's root built on the host, the
  switch into the shell's mount namespace (a forked helper's `pivot_root`), the request's cgroup limits, the
  template's first `/init` and the owner's. Before each measured create (of any kind) the shell is ready
  (refilled in the background, not timed, never during a measured miss), as a node with `--miss-shells N` keeps
  it between misses.

Cold, restored and shell-served starts alternate, so drift on a shared machine falls on all alike. The steps are
timed by wrapping the functions that do them (`bench.breakdown._timed`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import baselines, breakdown
from bench.common import machine, pct
from sandhive.node import container_shells, container_snapshot, criu_images, envd_client, network
from sandhive.node.node import Node, host_ca_bundle
from sandhive.node.request import CreateRequest, Identity, new_sandbox_id
from sandhive.node.storage import SandboxDisk

COLD, RESTORE, SHELL = "cold", "restore", "shell"
KINDS = (COLD, RESTORE, SHELL)

# (owner, attribute, step name, which start it belongs to)
TARGETS = [
    (network, "create", "network: veth, addresses, firewall", None),
    (network, "attach_namespace", "network: name the runtime's netns", None),
    (SandboxDisk, "create", "root filesystem: idmapped lower + ext4 writable layer + overlay", COLD),
    (container_snapshot, "_seed_disk", "writable layer: ext4 + copy of the checkpoint's upper dir + overlay", RESTORE),
    (container_snapshot, "link_images", "CRIU images: hard links", RESTORE),
    (criu_images, "retarget", "CRIU images: userns/utsns rewritten for the new range and id", RESTORE),
    (container_snapshot, "_runc_restore", "`runc restore` (CRIU restores envd's memory)", RESTORE),
    (container_shells, "build_root", "shell: the template's root on the host (as a cold start's) + mount points",
     SHELL),
    (container_shells, "switch_root", "shell: open_tree + helper thread: setns, move mounts, pivot_root", SHELL),
    (container_shells, "rewrite_limits", "shell: the request's cgroup limits and config.json", SHELL),
    (envd_client, "init", "/init round trips", None),
]


def instrumented(runtime_class: type) -> contextlib.AbstractContextManager[None]:
    return breakdown.timed_steps([*[(o, a, n) for o, a, n, _ in TARGETS],
                                  (runtime_class, "_write_bundle", "bundle: config.json and /etc files"),
                                  (runtime_class, "_run_detached", "`runc create` (cold)"),
                                  (runtime_class, "_wait_healthy", "envd until GET /health answers")])


def _take_steps() -> dict[str, float]:
    steps = {name: sum(values) for name, values in breakdown.STEPS.items()}
    breakdown.STEPS.clear()
    return steps


async def _ready_shell(node: Node, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(pool.ready for pool in node.shells._pools.values()):
        if time.monotonic() > deadline:
            raise RuntimeError("no warm shell became ready")
        await asyncio.sleep(0.05)


async def measure(data_dir: Path, runs: int, kinds: tuple[str, ...] = KINDS) -> dict[str, list]:
    from sandhive.node.backends import select
    from sandhive.node.pool import PoolSettings
    from sandhive.templates.registry import TemplateRegistry

    selection = await select("container", data_dir)
    runtime = selection.runtime
    node = Node(runtime)
    node.ca_bundle = host_ca_bundle()
    # The shells' node shares the runtime (and is closed first: closing the other closes the runtime).
    shell_node = Node(runtime, pools=PoolSettings(size=0), shells=1) if SHELL in kinds else None
    if shell_node is not None:
        await shell_node.start(ca_bundle=node.ca_bundle)
    template = await TemplateRegistry(data_dir).resolve("base")
    request = CreateRequest.of(template)
    identity = Identity(env_vars=dict(template.env), default_user=template.default_user,
                        default_workdir=template.default_workdir, token_for=lambda i: (i * 8)[:64])
    out: dict[str, list] = {key: [] for kind in kinds for key in (kind, "steps_" + kind)}
    saved = None
    try:
        handle = await node.create(request, identity)  # warms the host's caches; not measured
        await node.kill(handle)
        if RESTORE in kinds:
            # The checkpoint a pool would keep: a sandbox started as for the pool (start command, first /init,
            # warm-up), not yet handed to anyone, dumped with the node's snapshot.
            ready = await node._boot(request, new_sandbox_id(), pooled=True)
            started = time.perf_counter()
            saved = await node.snapshot(ready, data_dir / "miss-checkpoints" / "base")
            out["checkpoint"] = [(time.perf_counter() - started) * 1000, saved.state["bytes"] / 2**20]
            await node.runtime.stop(ready)
            await node.kill(await node.restore(saved, request, identity, None))  # warm-up
        if shell_node is not None:  # warm-up
            await _ready_shell(shell_node)
            await shell_node.kill(await shell_node.create(request, identity))
        with instrumented(type(runtime)):
            breakdown.STEPS.clear()
            for _ in range(runs):
                for kind in kinds:
                    if shell_node is not None:  # no refill runs during any measured miss
                        await _ready_shell(shell_node)
                        await asyncio.sleep(0.2)  # the refill's own work settles before the clock starts
                    breakdown.STEPS.clear()
                    started = time.perf_counter()
                    if kind == COLD:
                        handle = await node.create(request, identity)
                    elif kind == SHELL and shell_node is not None:
                        handle = await shell_node.create(request, identity)
                    else:
                        assert saved is not None
                        handle = await node.restore(saved, request, identity, None)
                    out[kind].append((time.perf_counter() - started) * 1000)
                    out["steps_" + kind].append(_take_steps())
                    if kind == SHELL:
                        assert "shell: the template's root on the host (as a cold start's) + mount points" in \
                            out["steps_" + kind][-1], "the miss was not served by a shell"
                    await node.kill(handle)
                    breakdown.STEPS.clear()
        if saved is not None:
            await asyncio.to_thread(shutil.rmtree, saved.directory, True)
    finally:
        if shell_node is not None:
            await shell_node.shells.close()
            await shell_node.pools.close()
        await node.close()
    return out


def restore_miss(data_dir: Path, runs: int) -> tuple[list[float], list[float]]:
    """`make bench`'s rows: milliseconds of (cold misses, misses from restore), alternated, in `data_dir`."""
    out = asyncio.run(measure(data_dir, runs, (COLD, RESTORE)))
    return out[COLD], out[RESTORE]


def ratio_row(name: str, samples: list[float], base: float) -> str:
    p50 = pct(samples, 50)
    return f"| {name} | {p50:.1f} | {pct(samples, 99):.1f} | {len(samples)} | {p50 / base:.2f}× |"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.miss_restore_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--data-dir", default=None, help="a data dir whose `base` template is built")
    parser.add_argument("--kinds", default=",".join(KINDS), help="which misses to measure besides raw runc")
    args = parser.parse_args()
    kinds = tuple(k for k in KINDS if k in args.kinds.split(","))
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        if args.data_dir:
            data_dir = Path(args.data_dir)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sandhive-miss-restore-",
                                                                         dir="/var/tmp")))
            root.chmod(0o711)
            data_dir = root / "data"
        with baselines.runc_bundle() as bundle:
            raw_before = baselines.raw_runc(bundle, args.runs)
        out = asyncio.run(measure(data_dir, args.runs, kinds))
        with baselines.runc_bundle() as bundle:
            raw_after = baselines.raw_runc(bundle, args.runs)
    raw = raw_before + raw_after
    base = statistics.median(raw)
    print(f"\nPool miss: cold start vs {' vs '.join(k for k in kinds if k != COLD)} (container backend, template "
          f"base, node only) · {machine()} · load average {load_before[0]:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end · "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    if "checkpoint" in out:
        print(f"Checkpoint of a ready `base` sandbox: {out['checkpoint'][0]:.0f} ms, {out['checkpoint'][1]:.1f} MB "
              "(CRIU images + writable layer)\n")
    print("| measurement | p50 ms | p99 ms | n | p50 vs raw `runc run` /bin/true |")
    print("|---|---|---|---|---|")
    print(ratio_row("baseline: raw `runc run` of /bin/true, sandbox namespaces + seccomp (before and after)", raw,
                    base))
    names = {COLD: "pool miss, cold: `Node.create`, no pool (envd's Python starts)",
             RESTORE: "pool miss from restore: `Node.restore` of a ready sandbox's checkpoint into a new id",
             SHELL: "pool miss from a warm shell: `Node.create` with `shells=1`, no pool"}
    for kind in kinds:
        print(ratio_row(names[kind], out[kind], base))
    print(f"\ntarget: p50 ≤ 1.3× raw = {1.3 * base:.1f} ms\n")
    for kind in kinds:
        totals, steps = out[kind], out["steps_" + kind]
        names = list(dict.fromkeys(name for run in steps for name in run))
        print(f"| step of a miss: {kind} (node only) | p50 ms | share of the p50 total | vs raw runc p50 |")
        print("|---|---|---|---|")
        total = statistics.median(totals)
        # A shell's root step holds the cold start's root step (SandboxDisk.create): shown, not summed twice.
        nested = {TARGETS[2][2]} if kind == SHELL else set()
        for name in names:
            p50 = statistics.median(run.get(name, 0.0) for run in steps)
            if p50 == 0.0:
                continue  # a step of the background refill, not of this miss
            label = f"(within the next) {name}" if name in nested else name
            print(f"| {label} | {p50:.1f} | {p50 / total:.0%} | {p50 / base:.2f}× |")
        rest = statistics.median(t - sum(v for n, v in run.items() if n not in nested)
                                 for t, run in zip(totals, steps, strict=True))
        print(f"| everything else (slot, `runc start` on cold, Python) | {rest:.1f} | {rest / total:.0%} | "
              f"{rest / base:.2f}× |")
        print(f"| **total** | **{total:.1f}** | 100% | {total / base:.2f}× |\n")


if __name__ == "__main__":
    main()
