"""The expiry timer: a background task that ends sandboxes whose deadline has passed.

The deadline lives in the store (`end_at`), not in an in-memory timer per sandbox, so a restart or a
second API replica loses nothing: every pass asks the store what is due.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .sandboxes import SandboxService

log = logging.getLogger("sandhive.api")


async def run_expiry(service: SandboxService, interval: float,
                     sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
    """Forever: wait `interval`, kill what is due. A failing pass is logged and the next one tries again.
    `sleep` is for tests (a clock they drive)."""
    while True:
        await sleep(interval)
        try:
            await service.expire_due()
        except Exception:
            log.exception("expiry pass failed")
