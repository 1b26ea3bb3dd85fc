"""A sandbox that dies is reported within seconds, not left `running` until its timeout, and what it held is freed.

The test kills the sandbox's first process from the host by PID (envd under runc, the sentry under runsc), found
through the runtime's own state as the node finds it. Within 5 s the API answers 404 for it, lists it no more, and
the e2b SDK's `is_running()` is False; its network namespace, slot, mounts, cgroups and directory are gone.
Promise: docs/security.md, "Liveness".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from e2b import Sandbox

from sandhive.node import network
from tests.hostile.conftest import Live

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(600)]

REPORTED_WITHIN = 5.0


def runtime_binary(backend: str) -> str:
    return "runsc" if backend == "gvisor" else os.environ.get("SANDHIVE_OCI_RUNTIME") or "runc"


def runtime_state(live: Live, sandbox_id: str) -> dict | None:
    """`<runtime> --root <data-dir>/<runtime> state ID`, as the node asks it; None once the runtime forgot it."""
    binary = runtime_binary(live.server.backend)
    proc = subprocess.run([binary, "--root", str(live.server.data_dir / Path(binary).name), "state", sandbox_id],
                          capture_output=True, text=True, timeout=30)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def leftovers(live: Live, sandbox_id: str) -> list[str]:
    """Everything a sandbox holds on the host that is still there."""
    found = []
    if Path(network.netns_path(sandbox_id)).exists():
        found.append(f"netns {network.netns_path(sandbox_id)}")
    if network.SlotAllocator().owned_by(sandbox_id) is not None:
        found.append("its network slot")
    with open("/proc/self/mounts") as f:
        found += [f"mount {line.split()[1]}" for line in f if sandbox_id in line.split()[1]]
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/sandhive/{sandbox_id}")]
    if (live.server.data_dir / "sandboxes" / sandbox_id).exists():
        found.append("its directory")
    if runtime_state(live, sandbox_id) is not None:
        found.append(f"{runtime_binary(live.server.backend)} still knows it")
    return found


def test_killed_sandbox_is_reported_and_freed(live: Live, e2b_env: None) -> None:
    sandbox = Sandbox.create(timeout=600)
    try:
        state = runtime_state(live, sandbox.sandbox_id)
        assert state and state["status"] == "running" and state["pid"] > 0, state
        assert sandbox.is_running()
        os.kill(state["pid"], signal.SIGKILL)
        killed = time.monotonic()
        with live.server.client(live.key) as api:
            while time.monotonic() - killed < REPORTED_WITHIN:
                if api.get(f"/sandboxes/{sandbox.sandbox_id}").status_code == 404:
                    break
                time.sleep(0.1)
            status = api.get(f"/sandboxes/{sandbox.sandbox_id}").status_code
            listed = [s["sandboxID"] for s in api.get("/v2/sandboxes", params={"limit": 100}).json()]
        seconds = time.monotonic() - killed
        assert status == 404, f"the dead sandbox still answers {status} after {seconds:.1f}s"
        assert sandbox.sandbox_id not in listed
        assert not sandbox.is_running()
        deadline = time.monotonic() + REPORTED_WITHIN
        while leftovers(live, sandbox.sandbox_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert leftovers(live, sandbox.sandbox_id) == []
    finally:
        sandbox.kill()
