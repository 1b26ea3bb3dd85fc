"""The in-sandbox code-interpreter server shuts its kernels down when it is told to stop.

Run on the host with the venv's ipykernel (the same server module the template runs): a SIGTERM to the server
must end the Jupyter kernels it started, not leave them orphaned holding memory and ports inside the sandbox.
(ipykernel ends by itself once its parent is gone; bash_kernel and the Node kernel do not.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import stop_process_group, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (read from /proc, as `pgrep -P` does)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_stops_the_server_and_its_kernels(tmp_path: Path) -> None:
    port = free_port()
    with (tmp_path / "server.log").open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", "sandhive.code_interpreter.server", "--port", str(port),
                                   "--cwd", str(tmp_path)], stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True, env={**os.environ, "HOME": str(tmp_path)})
    kernels: list[int] = []
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 120, "the code interpreter's /health")
        kernels = children(server.pid)
        assert kernels, "the server answers /health only once its default kernel runs"
        server.send_signal(signal.SIGTERM)
        # a clean exit (the kernels were shut down by the server, not left to notice their parent died: ipykernel
        # polls for that, bash_kernel and the JS kernel do not)
        assert server.wait(timeout=60) == 0
        assert "shutting down 1 kernel(s)" in (tmp_path / "server.log").read_text()
        wait_until(lambda: not any(alive(k) for k in kernels), 30, "the kernels to end with their server")
    finally:
        stop_process_group(server)
        for k in kernels:  # a failed run must not leave them either
            if alive(k):
                os.kill(k, signal.SIGKILL)
