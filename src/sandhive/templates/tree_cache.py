"""Finished rootfs trees kept by recipe key, so building the same template again is a copy.

Test sessions and fresh data dirs build `base` over and over, and a build from the apt cache still
spends ~45 s in dpkg. A copy of the finished tree (ownership shifted, setuid bits kept) takes ~2 s.
Entries are keyed by everything the recipe puts in, and expire after `MAX_AGE` so that new data dirs
do not keep getting packages older than the mirror's security updates; `--force` skips the cache.

The cache is root-only (0700): its trees hold setuid binaries owned by the sandbox range, which no
host user should be able to run to become that uid.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from ..images.debian import remove_tree, run

MAX_AGE = 7 * 24 * 3600
KEEP = 2  # entries per template name; older ones are pruned when a new one is stored
RECORD = "build.json"
ROOTFS = "rootfs"


class TreeCache:
    """`<cache_dir>/templates/<name>-<key>/` holding `rootfs/` and the build record (`build.json`)."""

    def __init__(self, cache_dir: Path) -> None:
        self.root = cache_dir / "templates"

    def get(self, name: str, key: str, max_age: float = MAX_AGE) -> tuple[Path, dict[str, Any]] | None:
        """(rootfs, build record) of a fresh enough entry, or None."""
        entry = self.root / f"{name}-{key}"
        try:
            record = json.loads((entry / RECORD).read_text())
            age = time.time() - (entry / RECORD).stat().st_mtime
        except (OSError, ValueError):
            return None
        if age > max_age or not (entry / ROOTFS).is_dir():
            return None
        return entry / ROOTFS, record

    def copy_out(self, rootfs: Path, target: Path) -> None:
        """Copy a cached tree to `target` (must not exist): owners, modes, setuid bits and hard links kept."""
        run(["cp", "-a", str(rootfs), str(target)])

    def put(self, name: str, key: str, rootfs: Path, record: dict[str, Any]) -> None:
        """Store a copy of `rootfs` (a separate copy: the template may be changed or deleted later)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        entry = self.root / f"{name}-{key}"
        tmp = self.root / f".tmp-{name}-{key}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir(mode=0o700)
            run(["cp", "-a", str(rootfs), str(tmp / ROOTFS)])
            (tmp / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            old = None
            if entry.exists():  # an expired entry, or one another build stored meanwhile: replace it
                old = entry.with_name(f".old-{entry.name}-{os.getpid()}-{secrets.token_hex(4)}")
                os.rename(entry, old)
            os.rename(tmp, entry)
            if old is not None:
                remove_tree(old)
        finally:
            if tmp.exists():
                remove_tree(tmp)
        self._prune(name, keep=entry)

    def _prune(self, name: str, keep: Path) -> None:
        """Keep the newest KEEP entries of `name`; drop leftovers of puts that died over an hour ago."""
        pattern = re.compile(rf"{re.escape(name)}-[0-9a-f]{{16}}")
        entries = [p for p in self.root.iterdir() if pattern.fullmatch(p.name)]
        entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for old in [p for p in entries if p != keep][KEEP - 1:]:
            remove_tree(old)
        for leftover in [*self.root.glob(".tmp-*"), *self.root.glob(".old-*")]:
            if time.time() - leftover.stat().st_mtime > 3600:
                remove_tree(leftover)
