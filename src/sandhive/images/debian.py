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
from pathlib import Path


class BuildError(RuntimeError):
    """A build step failed; the message carries the tail of its output."""


def run(argv: list[str]) -> None:
    """Run a build step quietly; on failure raise BuildError with the end of its output."""
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-40:])
        raise BuildError(f"{shlex.join(argv[:4])} ... failed with exit status {result.returncode}:\n{tail}")


def mmdebstrap(target: Path, suite: str, sources: list[str], packages: list[str], *, apt_cache: Path,
               dpkg_excludes: list[str], variant: str = "extract") -> None:
    """Create `target` (must not exist) from `packages` and their dependencies, with merged /usr.

    `sources` are one-line apt entries (the host's mirror and keyring). Downloaded .debs are hard-linked
    into `apt_cache` and from there into the next build, so a rebuild downloads only what changed.
    The hooks below also run for the `extract` variant, which runs no maintainer scripts at all.
    """
    apt_cache.mkdir(parents=True, exist_ok=True)
    cache = shlex.quote(str(apt_cache))
    run([
        "mmdebstrap", f"--variant={variant}", f"--include={','.join(packages)}",
        *(f"--dpkgopt=path-exclude={pattern}" for pattern in dpkg_excludes),
        # merged /usr as bookworm has it (the extract variant does not set it up by itself)
        '--setup-hook=for d in bin sbin lib lib64; do mkdir -p "$1/usr/$d" && ln -s "usr/$d" "$1/$d"; done',
        f'--setup-hook=mkdir -p "$1/var/cache/apt/archives" && cp -al {cache}/. "$1/var/cache/apt/archives/"',
        f'--extract-hook=cp -aln "$1"/var/cache/apt/archives/*.deb {cache}/',
        suite, str(target), *sources,
    ])


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
