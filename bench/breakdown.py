"""Where a pool miss's time goes: the steps of one sandbox start on the node, timed in-process.

    python -m bench.breakdown [--runs 10] [--backend container] [--data-dir DIR]

The node's own steps are timed by wrapping them (not replacing them): network namespace + veth + firewall,
the overlay root, the OCI runtime's `run --detach`, envd's start until it answers `/health`, the first
`/init` (template defaults, CA bundle) and the owner's `/init`. envd's import cost is measured apart, by
running the system image's Python on the host with `-X importtime`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from sandhive.images import system_image
from sandhive.node import network, startup
from sandhive.node.node import Node, host_ca_bundle
from sandhive.node.request import CreateRequest, Identity
from sandhive.node.storage import SandboxDisk

STEPS: dict[str, list[float]] = defaultdict(list)


def _timed(name: str, fn: Callable) -> Callable:
    if asyncio.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def async_wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                STEPS[name].append((time.perf_counter() - started) * 1000)
        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            STEPS[name].append((time.perf_counter() - started) * 1000)
    return wrapper


@contextlib.contextmanager
def timed_steps(targets: Iterable[tuple[object, str, str]]) -> Iterator[None]:
    """Time each `(owner, attribute, step name)` into STEPS while inside; every wrapper is removed afterwards.
    A target its owner lacks (another backend's step) is skipped."""
    saved = []
    for owner, attr, name in targets:
        original = getattr(owner, attr, None)
        if original is None:
            continue
        saved.append((owner, attr, original))
        setattr(owner, attr, _timed(name, original))
    try:
        yield
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)


def instrumented(runtime_class: type) -> contextlib.AbstractContextManager[None]:
    """The steps of a start."""
    return timed_steps([(network, "create", "network: netns, veth, addresses, firewall"),
                        (SandboxDisk, "create", "root filesystem: tmpfs + idmapped lower + overlay"),
                        (runtime_class, "_run_detached", "OCI runtime `run --detach`"),
                        (runtime_class, "_wait_healthy", "envd start until GET /health answers"),
                        (startup.envd_client, "init", "/init round trips (first + owner's)")])


def envd_import_ms() -> tuple[float, float]:
    """(wall ms, CPU ms) of importing envd with the system image's own Python, as in a sandbox."""
    image = system_image.build()
    argv = [*system_image.loader_command(str(image)), f"{image}/{system_image.PYTHON}", "-I", "-B", "-c",
            "import time, resource; t = time.perf_counter(); import sandhive.envd.__main__, sandhive.envd.app; "
            "u = resource.getrusage(resource.RUSAGE_SELF); "
            "print((time.perf_counter() - t) * 1000, (u.ru_utime + u.ru_stime) * 1000)"]
    runs = [subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split() for _ in range(5)]
    return (statistics.median(float(r[0]) for r in runs), statistics.median(float(r[1]) for r in runs))


async def measure(data_dir: Path, backend: str, runs: int) -> tuple[list[float], dict[str, list[float]]]:
    from sandhive.node.backends import select
    from sandhive.templates.registry import TemplateRegistry

    selection = await select(backend, data_dir)
    runtime = selection.runtime
    node = Node(runtime)
    node.ca_bundle = host_ca_bundle()
    template = await TemplateRegistry(data_dir).resolve("base")
    request = CreateRequest.of(template)
    identity = Identity(env_vars=dict(template.env), default_user=template.default_user,
                        default_workdir=template.default_workdir, token_for=lambda _: "t" * 64)
    totals = []
    try:
        handle = await node.create(request, identity)  # warms the host's caches; not measured
        await node.kill(handle)
        with instrumented(type(runtime)):
            STEPS.clear()
            for _ in range(runs):
                started = time.perf_counter()
                handle = await node.create(request, identity)
                totals.append((time.perf_counter() - started) * 1000)
                await node.kill(handle)
        return totals, dict(STEPS)
    finally:
        await node.close()
        closer = getattr(runtime, "close", None)
        if closer is not None:
            await closer()


RUNTIME_STEPS = ("OCI runtime `run --detach`", "envd start until GET /health answers")


def same_bundle_start(data_dir: Path, backend: str, runs: int) -> list[float]:
    """Milliseconds per start of a sandbox's own bundle by the OCI runtime until its envd answers: what running
    the same sandbox with runc/runsc directly would cost, without Sandhive's network, overlay, /init, API or
    proxy. The baseline that isolates Sandhive's own overhead on a pool miss."""
    totals, steps = asyncio.run(measure(data_dir, backend, runs))
    return [sum(steps[name][i] for name in RUNTIME_STEPS) for i in range(len(totals))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--backend", default="container")
    parser.add_argument("--data-dir", default=None, help="a data dir whose `base` template is built")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.data_dir:
            data_dir = Path(args.data_dir)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sandhive-breakdown-",
                                                                         dir="/var/tmp")))
            root.chmod(0o711)
            data_dir = root / "data"
        totals, steps = asyncio.run(measure(data_dir, args.backend, args.runs))
    wall, cpu = envd_import_ms()
    total = statistics.median(totals)
    print(f"| step of a pool miss ({args.backend}, node only: no API, no SDK) | p50 ms | share of the p50 total |")
    print("|---|---|---|")
    per_run = {}
    for name, samples in steps.items():  # a step that runs k times per create is summed per create
        k = max(1, len(samples) // len(totals))
        per_run[name] = [sum(samples[i * k:(i + 1) * k]) for i in range(len(totals))]
    for name, values in per_run.items():
        p50 = statistics.median(values)
        print(f"| {name} | {p50:.1f} | {p50 / total:.0%} |")
    rest = statistics.median(t - sum(v[i] for v in per_run.values()) for i, t in enumerate(totals))
    print(f"| everything else (slot, bundle, start command check, Python) | {rest:.1f} | {rest / total:.0%} |")
    print(f"| **total: Node.create on a miss** | **{total:.1f}** | 100% |")
    print(f"| (apart) envd's imports with the system image's Python: wall / CPU | {wall:.0f} / {cpu:.0f} | — |")


if __name__ == "__main__":
    main()
