"""Sandboxes outlive a server killed with SIGKILL; a restart adopts them and removes what the store forgot;
a killed or expired sandbox leaves nothing behind on the host."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox

from sandhive.node import network
from tests.api.rig import BACKENDS, Server, container_server, start_server
from tests.helpers import wait_until

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]
TEAM = "restart"


@pytest.fixture(scope="module", params=BACKENDS)
def live(request: pytest.FixtureRequest) -> Iterator[Server]:
    with container_server("restart", TEAM, backend=request.param) as server:
        yield server


@pytest.fixture(scope="module", autouse=True)
def e2b_env(live: Server) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in (("E2B_API_URL", live.url), ("E2B_SANDBOX_URL", live.url),
                            ("E2B_API_KEY", live.key(TEAM))):
            mp.setenv(name, value)
        mp.delenv("E2B_DEBUG", raising=False)
        yield


def sigkill_and_restart(live: Server) -> None:
    os.kill(live.proc.pid, signal.SIGKILL)
    live.proc.wait(10)
    port = int(live.url.rsplit(":", 1)[1])
    restarted = start_server(live.data_dir, backend=live.backend, port=port, timeout=300)
    live.proc, live.log = restarted.proc, restarted.log


OCI_BINARY = {"container": "runc", "gvisor": "runsc"}


def host_traces(sandbox_id: str, data_dir: Path, backend: str = "container") -> list[str]:
    """Everything of a sandbox that could outlive it on the host; empty when it is fully gone."""
    traces = []
    if Path(f"/run/netns/sandhive-{sandbox_id}").exists():
        traces.append("netns")
    with open("/proc/self/mountinfo") as f:
        traces += [f"mount {line.split()[4]}" for line in f if sandbox_id in line]
    traces += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/sandhive/{sandbox_id}")]
    if (data_dir / "sandboxes" / sandbox_id).exists():
        traces.append("sandbox dir")
    binary = OCI_BINARY[backend]
    listed = subprocess.run([binary, "--root", str(data_dir / binary), "list", "--quiet"], capture_output=True,
                            text=True).stdout.split()
    if sandbox_id in listed:
        traces.append(f"{binary} container")
    for slot in network.HOST_SLOTS_DIR.glob("*"):  # host-wide: other servers' slots come and go meanwhile
        with contextlib.suppress(FileNotFoundError):
            if slot.read_text() == sandbox_id:
                traces.append(f"network slot {slot.name}")
    return traces


def test_five_sandboxes_survive_a_sigkilled_server(live: Server) -> None:
    sandboxes = [Sandbox.create(timeout=300) for _ in range(5)]
    for i, sandbox in enumerate(sandboxes):
        sandbox.files.write(f"/tmp/before-{i}", f"state {i}")
        sandbox.commands.run("sleep 600", background=True)
    sigkill_and_restart(live)
    for i, sandbox in enumerate(sandboxes):
        again = Sandbox.connect(sandbox.sandbox_id)
        assert again.commands.run(f"cat /tmp/before-{i}").stdout == f"state {i}"
        assert any("sleep 600" in " ".join(p.args) for p in again.commands.list())
    for sandbox in sandboxes:
        sandbox.kill()


def test_restart_removes_sandboxes_the_store_does_not_know(live: Server) -> None:
    orphan = Sandbox.create(timeout=300)
    os.kill(live.proc.pid, signal.SIGKILL)
    live.proc.wait(10)
    _delete_row(live, orphan.sandbox_id)  # as if the store had lost it
    port = int(live.url.rsplit(":", 1)[1])
    restarted = start_server(live.data_dir, backend=live.backend, port=port, timeout=300)
    live.proc, live.log = restarted.proc, restarted.log
    assert host_traces(orphan.sandbox_id, live.data_dir, live.backend) == []


def _delete_row(live: Server, sandbox_id: str) -> None:
    import sqlite3

    with sqlite3.connect(live.data_dir / "sandhive.db") as db:
        db.execute("DELETE FROM sandboxes WHERE sandbox_id = ?", (sandbox_id,))


def test_kill_and_expiry_leave_nothing_behind(live: Server) -> None:
    killed = Sandbox.create(timeout=300)
    expiring = Sandbox.create(timeout=2)
    killed_id, expiring_id = killed.sandbox_id, expiring.sandbox_id
    assert host_traces(killed_id, live.data_dir, live.backend)  # it really was there
    killed.kill()
    assert host_traces(killed_id, live.data_dir, live.backend) == []
    wait_until(lambda: host_traces(expiring_id, live.data_dir, live.backend) == [], 20,
               "the expired sandbox's host traces to go", interval=0.25,
               show=lambda: host_traces(expiring_id, live.data_dir, live.backend))
    with httpx.Client(base_url=live.url, headers={"X-API-Key": live.key(TEAM)}, trust_env=False) as c:
        assert c.get(f"/sandboxes/{expiring_id}").status_code == 404
