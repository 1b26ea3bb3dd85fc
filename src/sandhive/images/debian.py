"""Tools for building root filesystem trees from Debian packages with mmdebstrap.

Kept apart from any one image so template base images can share them: the apt cache (a warm cache
saves the downloads on every rebuild), making a tree position-independent so it works wherever it is
mounted, and deleting build trees without ever descending into something still mounted.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

MERGED_USR_HOOKS = "/usr/share/mmdebstrap/hooks/merged-usr"


class BuildError(RuntimeError):
    """A build step failed; the message carries the tail of its output."""


def run(argv: list[str], on_line: Callable[[str], None] | None = None) -> None:
    """Run a build step quietly; on failure raise BuildError with the end of its output.

    `on_line` sees each output line as it comes, so a long step (mmdebstrap: a minute) can show progress.
    """
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            if on_line is not None:
                on_line(line)
    if proc.returncode != 0:
        raise BuildError(f"{shlex.join(argv[:4])} ... failed with exit status {proc.returncode}:\n" + "\n".join(tail))


def mmdebstrap(target: Path, suite: str, sources: list[str], packages: list[str], *, apt_cache: Path,
               dpkg_excludes: list[str], variant: str = "extract", hooks: Sequence[str] = (),
               on_line: Callable[[str], None] | None = None) -> None:
    """Create `target` (must not exist) from `packages` and their dependencies, with merged /usr.

    `sources` are one-line apt entries (the host's mirror and keyring). Downloaded .debs are hard-linked
    (copied, if the cache is on another filesystem) into `apt_cache` and from there into the next build,
    so a rebuild downloads only what changed. `hooks` are further mmdebstrap options (e.g.
    `--customize-hook=...`). mmdebstrap runs in a private mount namespace: the /dev, /proc and /sys it
    mounts into the tree for maintainer scripts vanish with it even if it is killed half-way.
    """
    apt_cache.mkdir(parents=True, exist_ok=True)
    cache = shlex.quote(str(apt_cache))
    archives = '"$1"/var/cache/apt/archives'
    if variant == "extract":
        # merged /usr as bookworm has it (the extract variant does not set it up by itself)
        merged_usr = '--setup-hook=for d in bin sbin lib lib64; do mkdir -p "$1/usr/$d" && ln -s "usr/$d" "$1/$d"; done'
    else:
        # the symlinks plus the usr-is-merged package, so apt does not pull in usrmerge (and perl) for it
        merged_usr = f"--hook-dir={MERGED_USR_HOOKS}"
    save = _save_debs_hook(archives, cache)
    run([
        "unshare", "--mount", "--propagation", "private", "--",
        "mmdebstrap", f"--variant={variant}", f"--include={','.join(packages)}",
        *(f"--dpkgopt=path-exclude={pattern}" for pattern in dpkg_excludes),
        merged_usr,
        f"--setup-hook=mkdir -p {archives} && {_load_debs(cache, archives)}",
        f"--extract-hook={save}",
        # the variants that install more than the essential set download the rest after the extract hook
        *([f"--customize-hook={save}"] if variant != "extract" else []),
        *hooks,
        suite, str(target), *sources,
    ], on_line)


def _load_debs(cache: str, archives: str) -> str:
    """Shell that hard-links (or, across filesystems, copies) the cached .debs into the tree."""
    return f"(cp -al {cache}/. {archives}/ 2>/dev/null || cp -a {cache}/. {archives}/)"


def _save_debs_hook(archives: str, cache: str) -> str:
    """Shell that hard-links (or copies) the tree's downloaded .debs into the cache, keeping what is there.

    Never fails the build: the cache only saves downloads.
    """
    find = f"find {archives} -maxdepth 1 -name '*.deb' -exec"
    return f"{find} cp -aln -t {cache} {{}} + 2>/dev/null || {find} cp -an -t {cache} {{}} + 2>/dev/null || true"


def make_symlinks_relative(tree: Path) -> None:
    """Rewrite absolute symlinks inside `tree` as relative ones.

    Mounted at /.sandhive inside a sandbox, a link such as lib64/ld-linux-x86-64.so.2 ->
    /lib/x86_64-linux-gnu/... would resolve against the sandbox's rootfs, not the tree.
    """
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            link = Path(dirpath, name)
            if link.is_symlink() and os.readlink(link).startswith("/"):
                target = os.path.relpath(tree / os.readlink(link).lstrip("/"), dirpath)
                link.unlink()
                link.symlink_to(target)


def remove_tree(path: Path) -> None:
    """rmtree, but never through something mounted below `path` (a build tool's leftover /dev or /proc)."""
    prefix = str(path.resolve()) + "/"
    mounted = [m for m in _mountpoints() if (m + "/").startswith(prefix)]
    if mounted:
        raise BuildError(f"not deleting {path}: {', '.join(mounted)} still mounted below it")
    shutil.rmtree(path)


def _mountpoints() -> list[str]:
    with open("/proc/self/mounts") as mounts:
        fields = [line.split()[1] for line in mounts]
    return [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), f) for f in fields]
