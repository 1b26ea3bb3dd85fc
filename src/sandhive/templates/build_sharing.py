"""What lets every control-plane replica serve every step of a template build (issue 17).

E2B's SDK registers, uploads, starts and polls a build in separate requests, and a load balancer sends each to
any replica. So, on a control plane with remote nodes:

- **Uploads** are pushed to the template registry by the replica that received them (`shared_uploads`); a replica
  that starts a build whose files it lacks fetches and unpacks them.
- **Starting** a build claims it in the store for this replica (`Store.claim_build`): one replica runs it.
- **Log lines** the running replica relays from the node are appended to the store about every second, and
  before every status change, so a poll through any replica reads the same lines in the same order.
- **A replica that dies** stops refreshing its builds' heartbeat; any replica fails them after `STALE_SECONDS`
  with `ORPHANED` as the reason. A replica that (re)starts fails nothing else: the builds of live replicas run on.

A single host (`sandhive serve`) has none of this: its builds and logs stay in its process and data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from ..store import Store
from ..store.store import now_utc
from .build_logs import BuildLog, BuildLogs
from .shared_uploads import SharedUploads

log = logging.getLogger("sandhive.api.templates")
FLUSH_SECONDS = 1.0
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 30.0
LOG_RETENTION = timedelta(days=7)  # log rows of builds finished longer ago are dropped
ORPHANED = ("the control-plane replica running this build stopped (it sent no heartbeat for "
            f"{int(STALE_SECONDS)} s): start the build again")


def replica_id() -> str:
    """This process, as the owner of the builds it runs: host, pid and a random part (a restarted replica is
    another owner, whose predecessor's builds go stale)."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(4)}"


class BuildSharing:
    """This replica's side of shared builds (see the module)."""

    def __init__(self, store: Store, logs: BuildLogs, uploads: SharedUploads) -> None:
        self.store = store
        self.logs = logs
        self.uploads = uploads
        self.owner = replica_id()
        self._task: asyncio.Task[None] | None = None

    async def start(self, running: Callable[[], list[str]]) -> None:
        await self.fail_orphaned()
        self._task = asyncio.create_task(self._loop(running), name="template-build-sharing")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self.flush()

    async def claim(self, build_id: str) -> bool:
        return await asyncio.to_thread(self.store.claim_build, build_id, self.owner, now_utc())

    async def flush(self, build_id: str | None = None) -> None:
        """Append the new log entries of one running build (or of all) to the store."""
        for bid in [build_id] if build_id is not None else self.logs.live_ids():
            build_log = self.logs.live(bid)
            if build_log is None:
                continue
            first, entries = build_log.take_unshared()
            if not entries:
                continue
            try:
                await asyncio.to_thread(self.store.append_build_log, bid, first, entries)
            except Exception as exc:  # the database blinked: keep them for the next flush
                build_log.untake(first)
                log.warning("could not store log lines of template build %s: %s", bid, exc)

    async def read_log(self, build_id: str) -> BuildLog:
        """The build's log as the store has it (a build another replica runs, or ran)."""
        entries = await asyncio.to_thread(self.store.build_log, build_id)
        return BuildLog(Path("/nonexistent-shared-build-log"), entries)

    async def fail_orphaned(self) -> None:
        cutoff = now_utc() - timedelta(seconds=STALE_SECONDS)
        for build_id in await asyncio.to_thread(self.store.fail_orphaned_builds, cutoff, ORPHANED, now_utc()):
            log.warning("template build %s: its replica stopped sending heartbeats; marked failed", build_id)

    async def _loop(self, running: Callable[[], list[str]]) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            ticks += 1
            try:
                await self.flush()
                if ticks % int(HEARTBEAT_SECONDS / FLUSH_SECONDS) == 0:
                    await asyncio.to_thread(self.store.heartbeat_builds, self.owner, running(), now_utc())
                if ticks % int(2 * HEARTBEAT_SECONDS / FLUSH_SECONDS) == 0:
                    await self.fail_orphaned()
                if ticks % 3600 == 0:
                    await asyncio.to_thread(self.store.forget_build_logs, now_utc() - LOG_RETENTION)
            except Exception as exc:  # the database is away: try again at the next tick
                log.warning("template build sharing: %s", exc)
