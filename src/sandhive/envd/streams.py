"""Server streams' timing: keepalives when a stream is quiet, and the end of a stream at its deadline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from connectrpc.code import Code
from connectrpc.errors import ConnectError

T = TypeVar("T")
K = TypeVar("K")


async def with_keepalive(source: AsyncIterator[T], interval: float,
                         keepalive: Callable[[], K]) -> AsyncIterator[T | K]:
    """Yield `source`'s items, and `keepalive()` whenever `interval` seconds pass without one.

    Closing this generator closes `source`, so a disconnected client releases what it held.
    """
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield keepalive()
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


async def until_deadline(source: AsyncIterator[T], deadline: float | None) -> AsyncIterator[T]:
    """Yield `source`'s items until the event loop's clock reaches `deadline` (None: forever), then end the
    stream with DEADLINE_EXCEEDED, as a Go Connect server does when the request's context expires (the
    SDK raises its TimeoutException). An item that arrives at or after the deadline is not sent.

    Closing this generator closes `source`.
    """
    if deadline is None:
        async for item in source:
            yield item
        return
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=max(0.0, deadline - loop.time()))
            if not done or loop.time() >= deadline:
                raise ConnectError(Code.DEADLINE_EXCEEDED, "the request's timeout (Connect-Timeout-Ms) passed")
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
