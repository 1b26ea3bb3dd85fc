"""Small helpers shared by the test suites."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time

import httpx


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(url: str, proc: subprocess.Popen | None = None, timeout: float = 30.0,
                    status: int = 204) -> None:
    """Poll `GET {url}/health` until it answers `status` (envd: 204, the API: 200); fail early if `proc` died."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was healthy")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == status:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} not healthy after {timeout}s: {last}")


def stop_process_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a process started with start_new_session=True, and everything in its group, by PID."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
