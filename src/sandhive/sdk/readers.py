"""Helpers for the async face's stream readers (command output, directory watches).

A stream must be read from start to end by one task: connectrpc arms its deadline (`asyncio.timeout`) in
the task that first iterates the stream, and a deadline armed in the caller's task would cancel the caller.
So a reader task reads everything, including the first "started" message, and the caller waits for that.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from .exceptions import SandboxException


async def call(callback: Callable[[Any], Any], arg: Any) -> None:
    """Call a user callback, awaiting it if it is a coroutine function."""
    result = callback(arg)
    if inspect.isawaitable(result):
        await result


def start_reader(coro: Any) -> asyncio.Task[None]:
    """A reader task whose error is raised by whoever waits on it, and never logged as lost if nobody does."""
    task = asyncio.create_task(coro)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


async def wait_started(task: asyncio.Task[None], started: asyncio.Event, what: str) -> None:
    """Return once the reader saw its stream start; raise what ended the reader if it ended first.

    Cancelling the caller cancels the reader: nobody would be left to use it."""
    waiter = asyncio.ensure_future(started.wait())
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        waiter.cancel()
    if started.is_set():
        return
    await asyncio.wait({task})
    error = None if task.cancelled() else task.exception()
    raise error or SandboxException(f"{what}: the stream ended before it started")
