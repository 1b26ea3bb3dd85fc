"""Keepalive interleaving for server streams: envd sends a keepalive when a stream is quiet."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

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
