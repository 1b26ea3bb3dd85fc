"""Close abandoned blocking HTTP bodies on a thread of their own, never inside the garbage collector.

A blocking stream nobody reads to its end — a handle dropped while its command runs, or one kept alive by an
exception's traceback until the cycle collector frees it — is finalized by the garbage collector, which runs
at arbitrary allocations, including inside httpcore while it holds its connection pool's (non-reentrant)
lock. Closing the httpx response there takes that lock again: the thread deadlocks on itself (seen in the
tests). So a body that did not end normally parks its iterator and response here; `queue.SimpleQueue.put`
is safe to call from finalizers, and this thread closes them, waiting for the lock like any other thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any

_queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
_started = threading.Lock()
_thread: threading.Thread | None = None


def ensure_started() -> None:
    """Start the closing thread. Called from normal code paths, since starting a thread is not GC-safe."""
    global _thread
    if _thread is not None:
        return
    with _started:
        if _thread is None:
            _thread = threading.Thread(target=_run, name="sandhive-sdk-reaper", daemon=True)
            _thread.start()


def close_later(*closables: Any) -> None:
    """Close these (generators, responses) soon, on the reaper thread. Safe inside finalizers."""
    _queue.put(closables)


def _run() -> None:
    while True:
        for item in _queue.get():
            with contextlib.suppress(Exception):
                item.close()
