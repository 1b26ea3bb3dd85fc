"""Base images made from Debian's repository: what `FROM python:3.11-slim` means on a Sandhive host.

Docker Hub is not used (these hosts cannot reach it, and many self-hosted setups must not). The official
images that templates start from most often are stood in for by Debian bookworm trees that mmdebstrap
builds from the host's mirror, configured to behave like the official images where it matters:

- `debian:bookworm`, `debian:bookworm-slim`, `debian:12[-slim]`, `debian:stable[-slim]`: minbase (apt, bash,
  coreutils) + ca-certificates.
- `python:3.11-slim`, `python:3.11-slim-bookworm`, `python:3-slim`: python3 (3.11), pip, venv, `python` →
  python3, ca-certificates, tzdata, netbase; pip installs outside a venv as root (no PEP 668 marker, and
  `PIP_BREAK_SYSTEM_PACKAGES=1`), as in the official image.
- `python:3.11`, `python:3.11-bookworm`, `python:3`: the above + python3-dev, build-essential, git, curl.
- `node:18-slim`, `node:18-bookworm-slim` (and `node:lts[-slim]`): Node.js 18 (bookworm's) + npm 10 from npm's registry.
- `node:18`, `node:18-bookworm`: the above + build-essential, git, curl, python3.

Each is built once per host (20–40 s from the mirror, downloads kept in the apt cache) and stored as a
one-layer image in Sandhive's buildah storage, labelled with its recipe key: a change of recipe or of
the host's apt sources builds it again. Images are named `localhost/sandhive-base/<name>:<tag>` so that
they can never be mistaken for (or shadowed by) a registry image.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..images.debian import mmdebstrap, remove_tree
from ..images.system_image import DPKG_EXCLUDES, SUITES
from . import npm, rootfs
from .buildah import Buildah, Log

RECIPE_VERSION = 1
RECIPE_LABEL = "dev.sandhive.base-recipe"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PY_SLIM = ("python3", "python3-pip", "python3-venv", "python-is-python3", "ca-certificates", "tzdata", "netbase")
_BUILD = ("build-essential", "git", "curl")


@dataclass(frozen=True)
class Recipe:
    """How one local base is made."""

    key_name: str  # the image name under localhost/sandhive-base/
    packages: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    cmd: str
    with_npm: bool = False


_DEBIAN = Recipe("debian:bookworm", ("ca-certificates",), (("LANG", "C.UTF-8"),), "bash")
_PYTHON_SLIM = Recipe("python:3.11-slim", _PY_SLIM,
                      (("LANG", "C.UTF-8"), ("PIP_BREAK_SYSTEM_PACKAGES", "1")), "python3")
_PYTHON = Recipe("python:3.11", (*_PY_SLIM, "python3-dev", *_BUILD),
                 (("LANG", "C.UTF-8"), ("PIP_BREAK_SYSTEM_PACKAGES", "1")), "python3")
_NODE_SLIM = Recipe("node:18-slim", ("nodejs", "ca-certificates", "tzdata", "netbase"),
                    (("LANG", "C.UTF-8"),), "node", with_npm=True)
_NODE = Recipe("node:18", ("nodejs", "ca-certificates", "tzdata", "netbase", "python3", *_BUILD),
               (("LANG", "C.UTF-8"),), "node", with_npm=True)

CATALOGUE: dict[str, Recipe] = {
    **{f"debian:{tag}": _DEBIAN for tag in ("bookworm", "bookworm-slim", "12", "12-slim", "stable", "stable-slim")},
    **{f"python:{tag}": _PYTHON_SLIM for tag in ("3.11-slim", "3.11-slim-bookworm", "3-slim", "3-slim-bookworm")},
    **{f"python:{tag}": _PYTHON for tag in ("3.11", "3.11-bookworm", "3", "3-bookworm")},
    **{f"node:{tag}": _NODE_SLIM for tag in ("18-slim", "18-bookworm-slim", "lts-slim")},
    **{f"node:{tag}": _NODE for tag in ("18", "18-bookworm", "lts")},
}


def canonical(ref: str) -> str | None:
    """The catalogue name `ref` means (`docker.io/library/python:3.11-slim` → `python:3.11-slim`), or None."""
    name = ref
    for prefix in ("docker.io/library/", "docker.io/", "library/", "index.docker.io/library/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if "@" in name:
        return None  # a digest names one exact upstream image: we cannot stand in for it
    if ":" not in name:
        name += ":latest"
    aliases = {"debian:latest": "debian:bookworm", "python:latest": "python:3.11", "node:latest": None}
    name = aliases.get(name, name) or ""
    return name if name in CATALOGUE else None


def known_names() -> list[str]:
    return sorted(CATALOGUE)


def image_name(recipe: Recipe) -> str:
    return f"localhost/sandhive-base/{recipe.key_name}"


def recipe_key(recipe: Recipe, sources: list[str]) -> str:
    spec = {"v": RECIPE_VERSION, "packages": recipe.packages, "env": recipe.env, "cmd": recipe.cmd,
            "npm": npm.VERSION if recipe.with_npm else None, "excludes": DPKG_EXCLUDES, "sources": sources}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def ensure(buildah: Buildah, name: str, sources: list[str], cache_dir: Path, log: Log) -> str:
    """The buildah image standing in for catalogue name `name`, built now if missing or outdated."""
    recipe = CATALOGUE[name]
    image = image_name(recipe)
    key = recipe_key(recipe, sources)
    if buildah.label(image, RECIPE_LABEL) == key:
        return image
    log(f"base image {name}: building it from Debian bookworm with mmdebstrap (once per host, ~30 s)")
    work = Path(tempfile.mkdtemp(prefix="sandhive-base-", dir=cache_dir))
    tree = work / "rootfs"
    old_umask = os.umask(0o022)
    try:
        mmdebstrap(tree, SUITES[0], sources, list(recipe.packages), apt_cache=cache_dir / "apt-archives",
                   dpkg_excludes=list(DPKG_EXCLUDES), variant="minbase",
                   on_line=lambda line: log(f"  mmdebstrap: {line[3:]}") if line.startswith("I: ") else None)
        rootfs.write_apt_sources(tree, sources)
        rootfs.write_network_files(tree, "sandbox")
        rootfs.allow_pip_install(tree)
        if recipe.with_npm:
            npm.install(tree, npm.tarball(cache_dir))
        rootfs.clear_transient(tree)
        config = {"env": [f"{k}={v}" for k, v in (("PATH", PATH), *recipe.env)], "cmd": recipe.cmd,
                  "workingdir": "/"}
        buildah.commit_tree(tree, image, config, {RECIPE_LABEL: key}, trusted=True)
        log(f"base image {name}: ready")
        return image
    finally:
        os.umask(old_umask)
        remove_tree(work)
