"""The code interpreter (issue 15) through the released `e2b_code_interpreter` 2.11.5 against a live `sandhive serve`,
each figure next to plain ipykernel on the host driven through `jupyter_client`, measured in the same run.

    python -m bench.code_interpreter_bench [--runs 10] [--round-trips 200] [--png-runs 20]
                                           [--backends container,gvisor] [--data-dir DIR]

Rows, per backend (a backend that does not work here is reported as skipped, with the reason):
- create → first `run_code("1+1")` on a pool hit (`--template-pool-size code-interpreter-v1=2`, the pool full
  before each create) and on a miss (`--pool-size 0`), against the host's kernel start → first `1+1` (a
  `KernelManager` start, `wait_for_ready`, one execute). A hit is checked not to wait for a kernel: its first
  `run_code` is set next to the steady round trip, and the kernel that answered it is older than the create.
- `run_code("1+1")` round trip, against `execute("1+1")` on a warm host kernel (IOPub until idle, shell reply).
- a 2 MB PNG result (`IPython.display.Image` of a random-pixel PNG made once in the kernel, so each round trip
  moves the bytes and nothing else is drawn), against the same display on the host kernel.
- where the SDK's round trip goes: the same `1+1` as a bare `POST /execute` through the edge proxy and straight to
  the sandbox's port 49999 (one keep-alive httpx client each); inside the sandbox, the host baseline's code run
  against the same kernel through jupyter_client, and envd's `GET /envs`, which the server asks per execution.

Every server runs on one data dir (the template is copied from the host's tree cache, or built, on the first
create) and is stopped before the next; every sandbox the bench creates is killed, even when a step fails.
"""

from __future__ import annotations

import argparse
import base64
import inspect
import json
import os
import shlex
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from e2b_code_interpreter import Sandbox  # type: ignore[import-untyped]
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from bench import live
from bench.common import machine, measure, pct
from tests.api.pool_rig import node_status, pool_of, wait_for_pool

TEMPLATE = "code-interpreter-v1"
PORT = 49999
POOL = 2
BUILD_TIMEOUT = 900  # the first create copies the template from the tree cache (seconds) or builds it (minutes)

# Run once per kernel, unmeasured: a PNG of incompressible random pixels, 1024×683 RGB ≈ 2.0 MiB.
PNG_SETUP = """\
import os as _os, struct as _struct, zlib as _zlib
from IPython.display import Image as _Image

def _bench_png(width=1024, height=683):
    def chunk(kind, data):
        return _struct.pack('>I', len(data)) + kind + data + _struct.pack('>I', _zlib.crc32(kind + data))
    rows = b''.join(b'\\x00' + _os.urandom(width * 3) for _ in range(height))
    return (b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', _struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', _zlib.compress(rows, 1)) + chunk(b'IEND', b''))

BENCH_PNG = _bench_png()
len(BENCH_PNG)
"""
PNG_CODE = "_Image(data=BENCH_PNG)"
# The kernel's age (s) when it runs this: its process start against the machine's uptime (same clock).
KERNEL_AGE = ("float(open('/proc/uptime').read().split()[0]) - "
              "int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19])"
              " / __import__('os').sysconf('SC_CLK_TCK')")


# --- baseline: ipykernel on the host through jupyter_client -----------------------------------------------------

def execute(client: BlockingKernelClient, code: str) -> dict[str, Any]:
    """Run `code` as the code interpreter's server does: every IOPub message of it until the kernel is idle, then
    its shell reply. The result's MIME bundle (execute_result or display_data)."""
    msg_id = client.execute(code, silent=False, store_history=True, allow_stdin=False)
    data: dict[str, Any] = {}
    while True:
        msg = client.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind in ("execute_result", "display_data"):
            data = content["data"]
        elif kind == "error":
            raise RuntimeError(f"{content['ename']}: {content['evalue']}")
        elif kind == "status" and content["execution_state"] == "idle":
            break
    while client.get_shell_msg(timeout=60)["parent_header"].get("msg_id") != msg_id:
        pass
    return data


class HostKernel:
    """One ipykernel process on the host (the venv's Python), started and stopped by its `KernelManager`."""

    def __init__(self) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel()
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def host_first_run(runs: int) -> list[float]:
    """Milliseconds from a kernel's start to the end of its first `1+1` (the start of a fresh process each time)."""
    out = []
    for i in range(runs + 1):
        started = time.perf_counter()
        kernel = HostKernel()
        try:
            assert execute(kernel.client, "1+1")["text/plain"] == "2"
            elapsed = (time.perf_counter() - started) * 1000
        finally:
            kernel.close()
        if i:  # the first one warms the host's caches
            out.append(elapsed)
    return out


def host_warm(round_trips: int, png_runs: int) -> tuple[list[float], list[float], int]:
    """`1+1` round trips and 2 MB PNG displays on one warm host kernel; and the PNG's size in bytes."""
    kernel = HostKernel()
    try:
        rt = measure(lambda: execute(kernel.client, "1+1"), round_trips, warmup=10)
        size = int(execute(kernel.client, PNG_SETUP)["text/plain"])
        png = measure(lambda: execute(kernel.client, PNG_CODE), png_runs, warmup=2)
        got = execute(kernel.client, PNG_CODE)["image/png"]
        assert len(base64.b64decode(got)) == size, "the host kernel's PNG came back short"
        return rt, png, size
    finally:
        kernel.close()


# --- through a live `sandhive serve` ------------------------------------------------------------------------------

@dataclass
class Figures:
    backend: str
    hit: list[float] = field(default_factory=list)  # create → end of first run_code("1+1")
    hit_create: list[float] = field(default_factory=list)  # Sandbox.create() alone
    hit_first: list[float] = field(default_factory=list)  # the first run_code alone
    hit_kernel_age: list[float] = field(default_factory=list)  # s, the answering kernel's age minus the hit's time
    hits_counted: int = 0
    miss: list[float] = field(default_factory=list)
    miss_create: list[float] = field(default_factory=list)
    rt: list[float] = field(default_factory=list)  # run_code("1+1") on a warm sandbox
    png: list[float] = field(default_factory=list)
    proxy_raw: list[float] = field(default_factory=list)  # bare POST /execute through the proxy, keep-alive
    direct: list[float] = field(default_factory=list)  # bare POST /execute to the sandbox's :49999, keep-alive
    inside_rt: list[float] = field(default_factory=list)  # jupyter_client in the sandbox → its kernel, 1+1
    inside_envs: list[float] = field(default_factory=list)  # GET envd /envs in the sandbox (urllib, as the server)
    first_create_s: float = 0.0  # the data dir's first create: template from the tree cache or built


def create() -> Sandbox:
    return Sandbox.create(timeout=600, request_timeout=BUILD_TIMEOUT)


def create_and_run_code(age: bool = False) -> tuple[float, float, float | None]:
    """(create → end of the first run_code("1+1"), create alone) in ms; with `age`, how long (s) the kernel that
    answered had been running before the create was asked for (> 0: it did not start for this create)."""
    started = time.perf_counter()
    sandbox = create()
    try:
        created = time.perf_counter()
        execution = sandbox.run_code("1+1")
        done = time.perf_counter()
        assert execution.text == "2" and execution.error is None, execution
        older = None
        if age:
            kernel_age = float(sandbox.run_code(KERNEL_AGE).text or "nan")
            older = kernel_age - (time.perf_counter() - started)
        return (done - started) * 1000, (created - started) * 1000, older
    finally:
        sandbox.kill()


def checked(sandbox: Sandbox, code: str, check: Callable[[Any], bool]) -> Callable[[], None]:
    def run() -> None:
        execution = sandbox.run_code(code)
        assert execution.error is None and check(execution), execution
    return run


ENVD_ENVS = "http://127.0.0.1:49983/envs"  # what the server asks on every /execute (the sandbox's env vars)
# Run inside the sandbox by envd: `execute('1+1')` through jupyter_client straight to the server's default kernel
# (the host baseline's code, on the backend: no server, proxy or SDK), and the server's per-execution envd call.
INSIDE = """\
import json, sys, time, urllib.request
from typing import Any
from jupyter_client.blocking.client import BlockingKernelClient

{execute}

def timed(fn, runs, warmup=10):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out

client = BlockingKernelClient()
client.load_connection_file(sys.argv[1])
client.start_channels()
client.wait_for_ready(timeout=30)
request = urllib.request.Request({envs!r}, headers={{"X-Access-Token": sys.argv[2]}})
envs = timed(lambda: urllib.request.urlopen(request, timeout=2).read(), {runs})
rt = timed(lambda: execute(client, "1+1"), {runs})
client.stop_channels()
print(json.dumps({{"execute": rt, "envs": envs}}))
"""


def bare_execute(client: httpx.Client, url: str, headers: dict[str, str]) -> Callable[[], None]:
    """`POST /execute` of `1+1` read to its end, as the SDK sends it but on one keep-alive client."""
    def run() -> None:
        with client.stream("POST", url, json={"code": "1+1", "context_id": None, "language": None,
                                              "env_vars": None}, headers=headers) as response:
            response.raise_for_status()
            lines = [json.loads(line) for line in response.iter_lines() if line]
        assert any(line.get("type") == "result" and line.get("text") == "2" for line in lines), lines
    return run


def pooled(data_dir: Path, figures: Figures, runs: int, round_trips: int, png_runs: int, png_size: int) -> None:
    args = ("--pool-size", "0", "--template-pool-size", f"{TEMPLATE}={POOL}")
    with live.server(data_dir, figures.backend, *args) as (srv, key):
        started = time.perf_counter()
        create().kill()  # the template's first use in this data dir; not measured
        figures.first_create_s = time.perf_counter() - started
        before = wait_for_pool(srv, key, TEMPLATE, timeout=600)["hits"]
        for _ in range(runs):
            # A full pool and no fill in flight: each create is a hit (the pool's own count checks it), as a user
            # with sporadic creates sees it.
            wait_for_pool(srv, key, TEMPLATE, timeout=600)
            time.sleep(0.5)  # the refill's last work (the new kernel's start) settles
            total, made, older = create_and_run_code(age=True)
            figures.hit.append(total)
            figures.hit_create.append(made)
            figures.hit_first.append(total - made)
            if older is not None:
                figures.hit_kernel_age.append(older)
        figures.hits_counted = (pool_of(node_status(srv, key), TEMPLATE) or {}).get("hits", 0) - before

        wait_for_pool(srv, key, TEMPLATE, timeout=600)  # the pool's refills stay off the round trips below
        sandbox = create()
        try:
            figures.rt = measure(checked(sandbox, "1+1", lambda e: e.text == "2"), round_trips, warmup=10)
            size = int(sandbox.run_code(PNG_SETUP).text or 0)  # the PNG's size varies by a few bytes
            assert abs(size - png_size) < 2**16, (size, png_size)
            figures.png = measure(checked(sandbox, PNG_CODE, lambda e: bool(e.results and e.results[0].png)),
                                  png_runs, warmup=2)
            got = sandbox.run_code(PNG_CODE).results[0].png or ""
            assert len(base64.b64decode(got)) == size, "the sandbox's PNG came back short"
            breakdown(srv, sandbox, figures, round_trips)
        finally:
            sandbox.kill()


def breakdown(srv: live.Server, sandbox: Sandbox, figures: Figures, round_trips: int) -> None:
    token = sandbox._envd_access_token or ""  # the SDK's own, as it sends it
    through = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": str(PORT), "X-Access-Token": token}
    record = srv.store.get_sandbox(sandbox.sandbox_id)
    assert record is not None
    address = record.address.split(":")[0]
    with httpx.Client(base_url=srv.url, trust_env=False, timeout=60) as proxy, \
            httpx.Client(base_url=f"http://{address}:{PORT}", trust_env=False, timeout=60) as direct:
        figures.proxy_raw = measure(bare_execute(proxy, "/execute", through), round_trips, warmup=10)
        figures.direct = measure(bare_execute(direct, "/execute", {"X-Access-Token": token}), round_trips, warmup=10)
    # Last, as it leaves IOPub messages of other parents in the server's queue (skipped at its next execution).
    connection_file = (sandbox.run_code("import ipykernel; print(ipykernel.get_connection_file())")
                       .logs.stdout[0].strip())
    script = INSIDE.format(execute=inspect.getsource(execute), runs=round_trips, envs=ENVD_ENVS)
    command = f"python3 -c {shlex.quote(script)} {shlex.quote(connection_file)} {shlex.quote(token)}"
    inside = json.loads(sandbox.commands.run(command, timeout=300).stdout)
    figures.inside_rt, figures.inside_envs = inside["execute"], inside["envs"]


def misses(data_dir: Path, figures: Figures, runs: int) -> None:
    with live.server(data_dir, figures.backend, "--pool-size", "0") as _:
        create_and_run_code()  # warm the host's caches of the template; not measured
        for _ in range(runs):
            total, made, _older = create_and_run_code()
            figures.miss.append(total)
            figures.miss_create.append(made)


def backend_works(data_dir: Path, backend: str) -> str | None:
    return live.backend_works(data_dir, backend)


# --- the table ----------------------------------------------------------------------------------------------------

def row(name: str, backend: str, samples: list[float], baseline_name: str, baseline: list[float]) -> str:
    base = statistics.median(baseline) if baseline else None
    ratio = f"{pct(samples, 50) / base:.2f}×" if base else "—"
    base_text = f"{base:.2f}" if base is not None else "—"
    return (f"| {name} | {backend} | {pct(samples, 50):.1f} | {pct(samples, 99):.1f} | {len(samples)} | "
            f"{baseline_name} | {base_text} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.code_interpreter_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="creates per hit and miss row")
    parser.add_argument("--round-trips", type=int, default=200)
    parser.add_argument("--png-runs", type=int, default=20)
    parser.add_argument("--backends", default="container,gvisor")
    parser.add_argument("--data-dir", default=None, help="reuse a data dir (its templates are already built)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sandhive-bench-ci-", dir="/var/tmp"))
    root.chmod(0o711)
    data_dir = Path(args.data_dir) if args.data_dir else root / "data"
    load_before = os.getloadavg()
    started = time.monotonic()
    results: list[Figures] = []
    skipped: dict[str, str] = {}
    try:
        host_first = host_first_run(args.runs)
        host_rt, host_png, png_size = host_warm(args.round_trips, args.png_runs)
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            why = backend_works(data_dir, backend)
            if why:
                skipped[backend] = why
                continue
            figures = Figures(backend)
            pooled(data_dir, figures, args.runs, args.round_trips, args.png_runs, png_size)
            misses(data_dir, figures, args.runs)
            results.append(figures)
        host_first_after = host_first_run(max(3, args.runs // 2))  # the host's load may change over the run
    finally:
        if args.data_dir is None:
            live_forget_images(data_dir)
            shutil.rmtree(root, ignore_errors=True)
    minutes = (time.monotonic() - started) / 60

    first = host_first + host_first_after
    first_name = "host: kernel start → first `1+1`"
    lines = [
        f"{machine()} · load average {load_before[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end · "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {minutes:.1f} min · PNG {png_size / 2**20:.2f} MiB",
        "",
        "| measurement | backend | p50 ms | p99 ms | n | baseline (same run) | baseline p50 ms | p50 ratio |",
        "|---|---|---|---|---|---|---|---|",
        row("baseline: ipykernel start (`KernelManager`, `wait_for_ready`) → first `execute('1+1')` (before and "
            "after the sandboxes)", "host", first, "—", []),
        row("baseline: `execute('1+1')` on a warm kernel (IOPub to idle + shell reply)", "host", host_rt, "—", []),
        row("baseline: 2 MB PNG `display` on a warm kernel", "host", host_png, "—", []),
    ]
    for f in results:
        age = (f"the answering kernel was up {min(f.hit_kernel_age):.1f}–{max(f.hit_kernel_age):.1f} s before the "
               f"create" if f.hit_kernel_age else "kernel age not read")
        lines += [
            row(f"create → first `run_code('1+1')`, pool hit ({f.hits_counted}/{len(f.hit)} counted as hits; "
                f"create alone p50 {pct(f.hit_create, 50):.0f} ms)", f.backend, f.hit, first_name, first),
            row(f"… its first `run_code` alone, against the steady round trip ({age})", f.backend, f.hit_first,
                "`run_code('1+1')` steady, same sandbox kind", f.rt),
            row(f"create → first `run_code('1+1')`, pool miss (`--pool-size 0`; create alone p50 "
                f"{pct(f.miss_create, 50):.0f} ms, the kernel's start included)", f.backend, f.miss, first_name,
                first),
            row("`run_code('1+1')` round trip (SDK → proxy → :49999 → kernel)", f.backend, f.rt,
                "host `execute('1+1')`", host_rt),
            row("2 MB PNG result: `run_code` of an `Image` display", f.backend, f.png, "host 2 MB PNG display",
                host_png),
        ]
        if f.proxy_raw:
            lines += [
                row("bare `POST /execute` of `1+1` through the proxy (one keep-alive httpx client)", f.backend,
                    f.proxy_raw, "host `execute('1+1')`", host_rt),
                row("bare `POST /execute` of `1+1` straight to the sandbox's :49999 (keep-alive)", f.backend,
                    f.direct, "host `execute('1+1')`", host_rt),
            ]
        if f.inside_rt:
            lines += [
                row("in the sandbox: `execute('1+1')` by jupyter_client straight to its kernel (the baseline's "
                    "code; no server, proxy or SDK)", f.backend, f.inside_rt, "host `execute('1+1')`", host_rt),
                row("in the sandbox: envd `GET /envs` by urllib, which the server does on every `/execute`",
                    f.backend, f.inside_envs, "—", []),
            ]
    for backend, why in skipped.items():
        lines.append(f"| (all rows) | {backend} | skipped | | | {why} | | |")
    print("\n" + "\n".join(lines))
    for f in results:
        print(f"{f.backend}: the data dir's first create of {TEMPLATE} (template copied from the tree cache or "
              f"built) took {f.first_create_s:.1f} s")


def live_forget_images(data_dir: Path) -> None:
    """A build from PyPI imported `base` (and the template) into the host's buildah storage under this data dir's
    name; the data dir goes, so do they (a copy from the tree cache imports nothing)."""
    from tests.code_interpreter.conftest import forget_images

    forget_images(data_dir)


if __name__ == "__main__":
    main()
