"""envd's start stays lean: a pool miss waits for it, so it must not load what only rarely used routes need.

A real envd runs in a subprocess; once it answers its first GET /health, the subprocess reports which
of the modules below it has loaded (and that each exists, so a renamed module cannot make this pass).
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import free_port, stop_process_group

LAZY_MODULES = (
    "sandhive.envd.watcher",  # directory watching: imported by the first WatchDir/CreateWatcher ...
    "asyncinotify",  # ... because its import runs ld/ldconfig subprocesses to find libc
    "anyio._backends._asyncio",  # Starlette's thread pool for plain-`def` endpoints: /health must not need it
)

PROBE = r"""
import gc, importlib.util, json, os, socket, sys, threading, time

from sandhive.envd.__main__ import main

port, names = int(sys.argv[1]), sys.argv[2:]


def report():
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = socket.create_connection(("127.0.0.1", port))
            break
        except OSError:
            if time.monotonic() > deadline:
                os._exit(3)
            time.sleep(0.01)
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: envd\r\n\r\n")
    status = conn.recv(4096).split(b"\r\n", 1)[0].decode()
    loaded = sorted(name for name in names if name in sys.modules)
    missing = sorted(name for name in names if importlib.util.find_spec(name) is None)
    gc_state = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
    print(json.dumps({"status": status, "loaded": loaded, "missing": missing, "gc": gc_state}), flush=True)
    os._exit(0)


threading.Thread(target=report, daemon=True).start()
main(["--host", "127.0.0.1", "--port", str(port)])
"""


def probe(*modules: str) -> dict:
    """The report of a real envd started in a subprocess, taken once it answered its first /health."""
    proc = subprocess.Popen([sys.executable, "-c", PROBE, str(free_port()), *modules],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        stop_process_group(proc)
    assert proc.returncode == 0, f"the probe failed (exit {proc.returncode}): {out}"
    return json.loads(out.strip().splitlines()[-1])


def test_start_and_first_health_load_nothing_only_rare_routes_use() -> None:
    report = probe(*LAZY_MODULES)
    assert report["status"] == "HTTP/1.1 204 No Content"
    assert report["missing"] == []
    assert report["loaded"] == [], f"envd's start loaded {report['loaded']}"


def test_garbage_collection_is_back_on_once_envd_serves() -> None:
    """envd turns the collector off while it imports (nothing to collect there) and must turn it back on:
    a long-lived envd that never collected would keep every reference cycle its requests leave."""
    report = probe()
    assert report["gc"]["enabled"] is True
    assert report["gc"]["frozen"] > 10_000, "start-up objects should be frozen out of later collections"
