"""Server streams' timing: keepalives when a stream is quiet, and the end of a stream at its deadline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import NoReturn, TypeVar

from connectrpc.code import Code
from connectrpc.errors import ConnectError

T = TypeVar("T")
K = TypeVar("K")


async def _paced(source: AsyncIterator[T], wait: Callable[[], float],
                 quiet: Callable[[], K]) -> AsyncGenerator[T | K, None]:
    """Yield `source`'s items; whenever `wait()` seconds pass without one, yield `quiet()` (which may raise).
    The one wait loop under keepalives and deadlines. Closing this generator closes `source`."""
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=wait())
            if not done:
                yield quiet()
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


def with_keepalive(source: AsyncIterator[T], interval: float,
                   keepalive: Callable[[], K]) -> AsyncIterator[T | K]:
    """Yield `source`'s items, and `keepalive()` whenever `interval` seconds pass without one.

    Closing this generator closes `source`, so a disconnected client releases what it held.
    """
    return _paced(source, lambda: interval, keepalive)


def _deadline_exceeded() -> NoReturn:
    raise ConnectError(Code.DEADLINE_EXCEEDED, "the request's timeout (Connect-Timeout-Ms) passed")


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
    paced = _paced(source, lambda: max(0.0, deadline - loop.time()), _deadline_exceeded)
    async with contextlib.aclosing(paced):
        async for item in paced:
            if loop.time() >= deadline:
                _deadline_exceeded()
            yield item
