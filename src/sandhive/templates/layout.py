"""Where templates live on disk, and the protocol that keeps half-built ones out of sight.

`<data_dir>/templates/<id>/` appears only complete: a build fills `.tmp-<id>-...` next to it and renames
it into place (one `rename(2)`, atomic on one filesystem). A failed or interrupted build leaves nothing
a reader could mistake for a template; its leftovers (`.tmp-*`, `.old-*`) are deleted by the next build
of the same template. One build per template runs at a time across processes (`flock` on
`.lock-<id>`), and a build that waited re-checks before it starts, so concurrent first uses build once.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..images.debian import remove_tree
from .info import TEMPLATE_JSON, TemplateInfo

TEMPLATES_DIR = "templates"

Log = Callable[[str], None]


def templates_root(data_dir: Path) -> Path:
    return data_dir / TEMPLATES_DIR


def template_dir(data_dir: Path, template_id: str) -> Path:
    return templates_root(data_dir) / template_id


def read_built(data_dir: Path, template_id: str) -> TemplateInfo | None:
    """The template's info if it is built (its directory holds a readable template.json), else None."""
    try:
        return TemplateInfo.read(template_dir(data_dir, template_id))
    except (OSError, ValueError):
        return None


@contextmanager
def build_lock(data_dir: Path, template_id: str) -> Iterator[None]:
    """Hold the template's build lock (blocks while another thread or process builds it)."""
    root = templates_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".lock-{template_id}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_into_place(data_dir: Path, template_id: str, build: Callable[[Path], TemplateInfo], *,
                     force: bool = False, current: Callable[[TemplateInfo], bool] | None = None) -> TemplateInfo:
    """Build the template unless it is built and `current` (or rebuild it: `force`), with the lock held.

    `build(tmp)` fills the empty directory `tmp` with `rootfs/` and returns the info, which is then
    written to `tmp/template.json`; then `tmp` is renamed to the template's directory. On any failure
    `tmp` is deleted and the exception propagates: nothing new is left behind.
    """
    with build_lock(data_dir, template_id):
        built = None if force else read_built(data_dir, template_id)
        if built is not None and (current is None or current(built)):
            return built  # another thread or process built it while we waited for the lock
        remove_leftovers(data_dir, template_id)
        final = template_dir(data_dir, template_id)
        tmp = final.with_name(f".tmp-{template_id}-{os.getpid()}-{secrets.token_hex(4)}")
        tmp.mkdir(mode=0o700)  # root only: the rootfs has setuid binaries owned by the sandbox range
        try:
            info = build(tmp)
            if info.id != template_id:
                raise ValueError(f"builder made template {info.id!r}, not {template_id!r}")
            info.write(tmp)
            _replace(tmp, final)
        except BaseException:
            if tmp.exists():
                remove_tree(tmp)
            raise
        return info


def remove_leftovers(data_dir: Path, template_id: str) -> None:
    """Delete what failed or interrupted builds of this template left (call with its lock held).

    Replaced builds (`.old-*`) are kept while any sandbox's overlay still names the template's rootfs:
    a sandbox started before a rebuild keeps running on the tree it started with (an overlay's lower
    layer must not change under it). They go at a later build or delete, once no sandbox uses them.
    """
    root = templates_root(data_dir)
    for path in root.glob(f".tmp-{template_id}-*"):
        remove_tree(path)
    old = list(root.glob(f".old-{template_id}-*"))
    if old and not rootfs_in_use(template_dir(data_dir, template_id)):
        for path in old:
            remove_tree(path)


def rootfs_in_use(template: Path) -> bool:
    """Whether a mount (a sandbox's overlay) was made from `template`'s rootfs. Mount options keep the
    path as it was at mount time, so this also covers a tree renamed aside since."""
    needle = f"lowerdir={template / 'rootfs'}"
    try:
        with open("/proc/self/mountinfo") as mountinfo:
            return any(needle in line for line in mountinfo)
    except OSError:
        return True  # cannot tell: keep the tree


def _replace(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final`; an existing `final` (a rebuild) is moved aside, then deleted unless
    running sandboxes still use it (see `remove_leftovers`)."""
    if not (final / TEMPLATE_JSON).exists() and final.exists():
        remove_tree(final)  # a directory without template.json is not a template (e.g. copied by hand, half)
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}-{secrets.token_hex(4)}")
        in_use = rootfs_in_use(final)
        os.rename(final, old)
        os.rename(tmp, final)
        if not in_use:
            remove_tree(old)
    else:
        os.rename(tmp, final)


class Steps:
    """Progress of a build as log lines: each step when it starts and, with its time, when it ends."""

    def __init__(self, prefix: str, log: Log) -> None:
        self.prefix = prefix
        self.log = log
        self.started = time.monotonic()
        self.times: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, message: str) -> None:
        self.log(f"{self.prefix}: [{self.elapsed():5.1f}s] {message}")

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.say(f"{name} ...")
        started = time.monotonic()
        yield
        self.times[name] = round(time.monotonic() - started, 1)
        self.say(f"{name}: done in {self.times[name]:.1f}s")


def tree_size(path: Path) -> int:
    """Bytes a tree uses on disk (`du`), hard links counted once."""
    out = subprocess.run(["du", "-s", "--block-size=1", str(path)], stdout=subprocess.PIPE, text=True).stdout
    return int(out.split()[0]) if out else 0
