"""The action audit log's recorder (issue 18): one place every recorded action goes through.

`AuditLog.record` is cheap and synchronous: it stamps the event with the time and the calling API key's id and
appends it to a queue. A background task writes the queue to the store in batches (every FLUSH_SECONDS, or
sooner when BATCH events wait), so a request never waits on an audit write; `close()` writes what is left, so a
clean shutdown loses nothing. The same task prunes events older than the retention.

The key id comes from `CURRENT_KEY`, which the auth dependency sets for the request (api/auth.py): a service
method deep inside a request records its action without threading the key through every call.
Events from inside sandboxes come from the edge proxy (proxy/audit.py) through `envd_sink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any

from ..store import AuditEntry, Store

log = logging.getLogger("sandhive.api")

CURRENT_KEY: ContextVar[str | None] = ContextVar("sandhive_audit_key", default=None)
FLUSH_SECONDS = 0.5
BATCH = 500
MAX_PENDING = 200_000  # with the database down this long, the oldest events go (and a warning says so)
PRUNE_SECONDS = 3600.0


class AuditLog:
    """Queue of events on their way to the store; `enabled=False` (`sandhive serve --no-audit`) records nothing."""

    def __init__(self, store: Store, *, enabled: bool = True, retention_days: int = 7,
                 flush_seconds: float = FLUSH_SECONDS, prune_seconds: float = PRUNE_SECONDS) -> None:
        self.store = store
        self.enabled = enabled
        self.retention = timedelta(days=retention_days)
        self.flush_seconds = flush_seconds
        self.prune_seconds = prune_seconds
        self._pending: list[AuditEntry] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._dropped = 0

    def record(self, team_id: str, action: str, *, sandbox_id: str | None = None, target: str | None = None,
               detail: dict[str, Any] | None = None, system: bool = False) -> None:
        """Queue one event, by the key of the request being served; `system`: by the server itself (a timer, a
        sandbox that died), with no key even where the calling task inherited a request's context."""
        if not self.enabled:
            return
        self._pending.append(AuditEntry(time=datetime.now(UTC), team_id=team_id, action=action,
                                        key_id=None if system else CURRENT_KEY.get(),
                                        sandbox_id=sandbox_id, target=target, detail=detail))
        if len(self._pending) > MAX_PENDING:
            del self._pending[:len(self._pending) - MAX_PENDING]
            self._dropped += 1
        if len(self._pending) >= BATCH:
            self._wake.set()

    def envd_sink(self, sandbox_id: str, team_id: str | None, action: str, target: str | None,
                  detail: dict[str, Any]) -> None:
        """What the edge proxy calls for each envd action it saw (no API key: the sandbox's own token)."""
        if team_id is not None:
            self.record(team_id, action, sandbox_id=sandbox_id, target=target, detail=detail, system=True)

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop the background task and write every queued event."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Write what is queued now (in order; one writer at a time). A failed write keeps the events queued."""
        async with self._lock:
            while self._pending:
                batch = self._pending[:BATCH]
                try:
                    await asyncio.to_thread(self.store.add_audit_events, batch)
                except Exception:
                    log.exception("writing %d audit events failed; will retry", len(batch))
                    return
                del self._pending[:len(batch)]
            if self._dropped:
                log.warning("the audit queue overflowed %d times while the store failed; the oldest events went",
                            self._dropped)
                self._dropped = 0

    async def prune(self) -> int:
        return await asyncio.to_thread(self.store.prune_audit_events, datetime.now(UTC) - self.retention)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            self._wake.clear()
            await self.flush()
            if loop.time() >= next_prune:
                next_prune = loop.time() + self.prune_seconds
                try:
                    gone = await self.prune()
                except Exception:
                    log.exception("pruning the audit log failed")
                else:
                    if gone:
                        log.info("audit log: %d events older than %s pruned", gone, self.retention)
