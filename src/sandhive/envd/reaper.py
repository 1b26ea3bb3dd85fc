"""Child reaping for envd as a sandbox's first process.

envd makes itself a child subreaper, so orphans of the commands it starts are re-parented to it;
one SIGCHLD handler reaps every child with `waitpid(-1)` and hands the status of the ones envd
started to whoever waits for them. Doing it in one place avoids racing asyncio's own watchers.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
from collections.abc import Callable

PR_SET_CHILD_SUBREAPER = 36

ExitCallback = Callable[[int], None]


class Reaper:
    """Reaps all children; calls a registered callback with the raw wait status of known ones."""

    def __init__(self) -> None:
        self._callbacks: dict[int, ExitCallback] = {}
        self._early: dict[int, int] = {}

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except OSError:
            pass  # not Linux-like enough; orphans then go to the real init
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()

    def watch(self, pid: int, callback: ExitCallback) -> None:
        """Call `callback(status)` once `pid` exits (at once if it already did)."""
        if pid in self._early:
            callback(self._early.pop(pid))
        else:
            self._callbacks[pid] = callback

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            callback = self._callbacks.pop(pid, None)
            if callback is not None:
                callback(status)
            else:
                # A child that exited before `watch` was called, or an orphan; keep a bounded record.
                self._early[pid] = status
                if len(self._early) > 4096:
                    self._early.pop(next(iter(self._early)))


def describe_status(status: int) -> tuple[int, bool, str]:
    """(exit_code, exited, status text) as Go's ProcessState reports them, which E2B's SDK shows."""
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        return code, True, f"exit status {code}"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = (signal.strsignal(sig) or f"signal {sig}").lower()
        return -1, False, f"signal: {name}"
    return -1, False, "unknown"
