"""Shared by the microvm SDK tests: the server they all use and the released SDK's calls, sized for TCG.

One `sandhive serve --backend microvm` per module (its first create builds the base template's snapshot, a guest
boot under emulation: a second server would pay that again), so a test that restarts it (`restart`) restarts
this one, on its port and data dir, with the same arguments.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from e2b import Sandbox
from sqlalchemy import update

from sandhive.store import SandboxRecord
from tests.api.rig import Server, start_server
from tests.helpers import read_count, wait_until
from tests.lan import Lan

TEAM = "microvm"
REQUEST_TIMEOUT = 600  # seconds: the first create builds the template's snapshot
COMMAND_TIMEOUT = 120
START_TIMEOUT = 900  # a server's start; it prepares the guest assets first


def serve(data_dir: Path, internet: Lan, port: int | None = None) -> Server:
    """No warm pool: every create is a snapshot clone made on the request path. The egress filter asks the fake
    internet's nameserver (tests/hostile/test_egress_rules.py) for names."""
    return start_server(data_dir, "--pool-size", "0", "--egress-resolver", internet.link_ip, backend="microvm",
                        port=port, timeout=START_TIMEOUT)


def sigkill_and_restart(server: Server, internet: Lan) -> None:
    """SIGKILL the server process alone (what it started outside VMs, and the VMs, are left as a crash leaves
    them) and start it again on the same port and data dir; `server` then stands for the new process."""
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(30)
    restarted = serve(server.data_dir, internet, port=int(server.url.rsplit(":", 1)[1]))
    server.proc, server.log = restarted.proc, restarted.log


def forget_the_pause(server: Server, sandbox_id: str) -> None:
    """What a server that died after the save but before recording it leaves: a "running" row, a whole pause
    (as tests/persistence/test_restart.py does on container)."""
    with server.store._write() as s:
        s.execute(update(SandboxRecord).where(SandboxRecord.sandbox_id == sandbox_id)
                  .values(state="running", saved=None, paused_at=None))


def create(**kwargs: object) -> Sandbox:
    return Sandbox.create(timeout=300, request_timeout=REQUEST_TIMEOUT, **kwargs)  # type: ignore[arg-type]


def run(sbx: Sandbox, line: str) -> str:
    return sbx.commands.run(line, timeout=COMMAND_TIMEOUT, request_timeout=COMMAND_TIMEOUT).stdout


def connect(sandbox_id: str) -> Sandbox:
    return Sandbox.connect(sandbox_id, timeout=300, request_timeout=REQUEST_TIMEOUT)


# A shell loop whose only state is in memory (as tests/persistence's): after a memory pause or in a copy of a
# snapshot it goes on from where it was, after a filesystem pause it is gone. The file only shows the count.
COUNTER_LOOP = "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done"
URANDOM = "head -c16 /dev/urandom | od -An -tx1"


def start_counter(sbx: Sandbox) -> None:
    sbx.files.write("/home/user/kept.txt", "kept")
    sbx.commands.run(COUNTER_LOOP, background=True, request_timeout=COMMAND_TIMEOUT)


def counter(sbx: Sandbox) -> int:
    return read_count(lambda: run(sbx, "cat /tmp/counter 2>/dev/null || true"))


def state(sandbox_id: str) -> str:
    return Sandbox.get_info(sandbox_id, request_timeout=REQUEST_TIMEOUT).state.value


def counts_on(sbx: Sandbox, past: int, what: str) -> None:
    """The loop is alive: its count goes past `past` (a count left on disk by a dead loop stands still)."""
    wait_until(lambda: counter(sbx) > past, COMMAND_TIMEOUT, what)
