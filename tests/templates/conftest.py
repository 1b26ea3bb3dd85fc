"""The base template, built once per session on a fresh data dir, and a way to run commands in it.

The build is the concurrent first use itself: three `resolve('base')` calls at once, from two registries
on the same data dir (so both the asyncio lock and the file lock are exercised), must build once. It
builds from the mirror every session (a cache dir of its own, so no finished tree from an earlier run
is reused), sharing only the default cache's downloads (.debs, npm), and takes under a minute warm.

Everything lives under /var/tmp, not in pytest's 0700 tmp dir, because the user-namespace checks
chroot, as the sandbox's root (host uid 100000), into an overlay mounted below it. It is deleted at
the end of the session.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import pytest

from sandhive.images.debian import remove_tree
from sandhive.images.system_image import default_cache_dir
from sandhive.node.runtime import TemplateImage
from sandhive.node.userns import BASE as SANDBOX_ROOT
from sandhive.templates.registry import TemplateRegistry

CHROOT_EXEC = Path(__file__).with_name("chroot_exec.py")
FILES_DIR = "/sandhive-test"


@dataclass
class BuiltBase:
    data_dir: Path
    images: list[TemplateImage]
    logs: list[str]
    seconds: float
    scratch_root: Path

    @property
    def rootfs(self) -> Path:
        return self.images[0].rootfs



BASE_BUILD_TIMEOUT = 900  # a cold build of the base from the mirror: about a minute quiet, several on a busy host


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The test that first needs `base_built` pays for the base's cold build: it gets the build's time budget
    (the default 300 s bounds a hang, and a busy CI host took longer than that to build)."""
    for item in items:
        if "base_built" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(BASE_BUILD_TIMEOUT))

@pytest.fixture(scope="package")
def work_root() -> Iterator[Path]:
    """A directory every uid can traverse (the sandbox range included); removed with all it holds."""
    for tool in ("mmdebstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install mmdebstrap util-linux coreutils)")
    if os.geteuid() != 0:
        pytest.skip("building templates needs root (mmdebstrap, chroot, chown into the sandbox range)")
    root = Path(tempfile.mkdtemp(prefix="sandhive-templates-test-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        remove_tree(root)


@pytest.fixture(scope="package")
def cache_dir(work_root: Path) -> Path:
    """A cache of the session's own whose downloads (apt .debs, npm tarball) are the default cache's."""
    shared = default_cache_dir()
    cache = work_root / "cache"
    cache.mkdir()
    for name in ("apt-archives", "downloads"):
        (shared / name).mkdir(parents=True, exist_ok=True)
        (cache / name).symlink_to(shared / name)
    return cache


@pytest.fixture(scope="package")
def base_built(work_root: Path, cache_dir: Path) -> BuiltBase:
    data_dir = work_root / "data"
    logs: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        logs.append(line)

    first, second = (TemplateRegistry(data_dir, cache_dir, log=log), TemplateRegistry(data_dir, cache_dir, log=log))

    async def first_uses() -> list[TemplateImage]:
        return list(await asyncio.gather(first.resolve("base"), first.resolve("base"), second.resolve("base")))

    started = time.monotonic()
    images = asyncio.run(first_uses())
    scratch = work_root / "scratch"
    scratch.mkdir(mode=0o755)
    return BuiltBase(data_dir, images, logs, time.monotonic() - started, scratch)


_scratch_ids = count()


def run_in_rootfs(built: BuiltBase, script: str, *, userns: bool = False, user: int = 0,
                  env: dict[str, str] | None = None, files: dict[str, bytes] | None = None,
                  timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `sh -c script` in the rootfs (over a throwaway overlay); see chroot_exec.py.

    Without `userns` it runs as host root in a plain chroot; with it, in the sandbox's uid range.
    `files` (name → content) appear in `/sandhive-test/`, owned by the sandbox's root.
    """
    scratch = built.scratch_root / f"run-{next(_scratch_ids)}"
    if files:
        drop = scratch / "upper" / FILES_DIR.lstrip("/")
        drop.mkdir(parents=True)
        for name, content in files.items():
            (drop / name).write_bytes(content)
        for path in (scratch / "upper", drop, *drop.iterdir()):
            os.chown(path, SANDBOX_ROOT, SANDBOX_ROOT)
    argv = ["unshare", "--mount", "--pid", "--uts", "--fork", "--kill-child", sys.executable, str(CHROOT_EXEC),
            *(["--userns"] if userns else []), "--user", str(user),
            *(f"--env={k}={v}" for k, v in (env or {}).items()),
            str(built.rootfs), str(scratch), "--", "sh", "-c", script]
    try:
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    finally:
        if scratch.exists():
            remove_tree(scratch)  # refuses if a mount leaked below it: the test then fails loudly
