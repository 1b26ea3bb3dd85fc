"""The host-wide buildah storage's working containers: which builds may have some, and who removes the ones a
killed build left behind.

Why a lock and not "remove what appeared while my build ran": buildah records nothing in a working container that
says which `bud` made it, and every build on the host (every server, team and data dir) shares one storage. A
build that removed whatever had appeared while it ran also removed the containers of other teams' builds running
at the same time, and those failed ("identifier is not a container"): one team's failing build broke another's.

So every build holds the storage's lock shared for as long as it may have working containers (`in_use`). A build
that may leave some behind (it failed, was killed or stopped, or it is its process's first: a crashed server
leaves containers and no mark) marks the storage. A build that ends marked and holding the only lock removes
every working container, since with no build running each one is an orphan, and clears the mark. A build that
ends while others run leaves that to the last of them. buildah itself removes a failed step's container
(`--force-rm`); the sweep is for builds killed mid-step (timeout, out of memory, server stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from . import build_sandbox
from .buildah import Buildah, BuildahError

log = logging.getLogger(__name__)
LOCK_NAME = "buildah-containers.lock"
MARK_NAME = "buildah-containers.orphans"
_swept_by_this_process: set[Path] = set()


@contextmanager
def in_use(cache_dir: Path) -> Iterator[None]:
    """Held by a build for as long as it may have working containers (and its network namespace, so that
    `idle` sees none of either); on the way out, removes the orphans if this build was the last one running."""
    cache_dir, fd = _open_lock(cache_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        ended_clean = False
        try:
            yield
            ended_clean = True
        finally:
            _end(fd, cache_dir, ended_clean)
    finally:
        os.close(fd)


@asynccontextmanager
async def in_use_async(cache_dir: Path) -> AsyncIterator[None]:
    """`in_use` for a build driven from an event loop (the server's): it waits for the lock without blocking
    the loop, and sweeps in a thread."""
    cache_dir, fd = await asyncio.to_thread(_open_lock, cache_dir)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:  # a sweep or `idle` holds it: seconds at most
                await asyncio.sleep(0.2)
        ended_clean = False
        try:
            yield
            ended_clean = True
        finally:
            await asyncio.to_thread(_end, fd, cache_dir, ended_clean)
    finally:
        os.close(fd)


def _end(fd: int, cache_dir: Path, ended_clean: bool) -> None:
    if not ended_clean or cache_dir not in _swept_by_this_process:
        _mark(cache_dir)
    _swept_by_this_process.add(cache_dir)
    # Converting the lock drops the shared one first (flock(2)); this build is over, so that is fine.
    with contextlib.suppress(BlockingIOError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _remove_orphans(cache_dir)


@contextmanager
def idle(cache_dir: Path, *, timeout: float) -> Iterator[None]:
    """No build runs on the host while this is held (new ones wait), and none left orphans: every working
    container in the storage then is a leak. For tools and tests; waits up to `timeout` seconds for the
    builds that run to end."""
    cache_dir, fd = _open_lock(cache_dir)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"template builds still running on this host after {timeout:.0f}s") from None
                time.sleep(0.5)
        _remove_orphans(cache_dir)
        yield
    finally:
        os.close(fd)


def _open_lock(cache_dir: Path) -> tuple[Path, int]:
    """The resolved cache dir (the key of `_swept_by_this_process`) and the lock's open file."""
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    # In the root-owned cache dir, mode 0600: no build process (BUILD range) can open it to hold off a sweep.
    return cache_dir, os.open(cache_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _mark(cache_dir: Path) -> None:
    (cache_dir / MARK_NAME).touch(mode=0o600)


def _remove_orphans(cache_dir: Path) -> None:
    """With the lock held exclusively: remove every working container if the storage is marked."""
    mark = cache_dir / MARK_NAME
    if not mark.exists():
        return
    try:
        with build_sandbox.unlimited(cache_dir) as sandbox:
            orphans = Buildah(sandbox).quiet("containers", "--quiet").split()
            if orphans:
                Buildah(sandbox).quiet("rm", "--all")
                log.info("removed %d working containers left by killed template builds", len(orphans))
    except (BuildahError, build_sandbox.CommandFailed) as exc:
        log.warning("could not remove the working containers of killed template builds (kept for the next "
                    "build to retry): %s", exc)
        return
    mark.unlink(missing_ok=True)
