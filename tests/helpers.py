"""Small helpers shared by the test suites."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05,
               show: Callable[[], object] | None = None) -> T:
    """Poll `condition` until it returns something truthy, and return that; after `timeout` seconds fail saying
    `what` was awaited (and `show()`, e.g. a log tail). The one way the suites wait: never a fixed sleep that
    hopes the condition holds by then."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{show()}" if show is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


async def wait_until_async(condition: Callable[[], Awaitable[T]], timeout: float, what: str, interval: float = 0.05,
                           show: Callable[[], object] | None = None) -> T:
    """`wait_until` for a condition that must be awaited (async SDK calls), sleeping without blocking the loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{show()}" if show is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        await asyncio.sleep(interval)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(url: str, proc: subprocess.Popen | None = None, timeout: float = 30.0,
                    status: int = 204) -> None:
    """Poll `GET {url}/health` until it answers `status` (envd: 204, the API: 200); fail early if `proc` died."""
    last: list[Exception] = []

    def healthy() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was healthy")
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == status
        except httpx.HTTPError as exc:
            last[:] = [exc]
            return False

    try:
        wait_until(healthy, timeout, f"{url} to be healthy", show=lambda: last)
    except AssertionError as exc:
        raise TimeoutError(str(exc)) from None


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


def read_count(read: Callable[[], str], what: str = "a count in the counter file") -> int:
    """The number a test's counter loop last wrote, read through `read` (a `cat` in the sandbox).

    The loops write with `echo $i > file`, which truncates before it writes: a read that lands in between sees
    nothing (more often on a loaded host), so it is read again rather than taken as 0 or a failure."""
    def once() -> int | None:
        out = read().strip()
        return int(out) if out.isdigit() else None
    return wait_until(once, 30, what)


def stop_adopting_orphans() -> None:
    """Undo what an in-process gVisor runtime's `prepare()` did to the test process: make it a child subreaper
    (node/gvisor.py `become_subreaper`). Left so, the test process adopts the sandboxes a SIGKILLed server of a
    later test leaves behind, never reaps them, and those sandboxes then stall (a resumed one did not run on)
    and cannot be deleted."""
    import ctypes

    pr_set_child_subreaper = 36
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 0, 0, 0, 0)
