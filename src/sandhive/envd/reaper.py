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

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except OSError:
            pass  # not Linux-like enough; orphans then go to the real init
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()

    def watch(self, pid: int, callback: ExitCallback) -> None:
        """Call `callback(status)` once `pid` exits.

        Must be called in the same turn of the event loop as the spawn that made `pid`: `reap` runs only
        from the loop's SIGCHLD handler, so a child cannot be reaped before it is watched. That is why no
        status is kept for unknown pids: an orphan's status kept by pid would be handed to a later command
        that happens to get the same pid once pids wrap, which would then look ended at once.
        """
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
            if callback is not None:  # else an orphan re-parented to envd: reaped, nobody waits for it
                callback(status)


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
