"""The `base` template: Debian bookworm with Python, Node.js, git, curl and a sudo-capable `user`.

It stands in for E2B's default template (what `Sandbox.create()` starts with no template named) and
for the official `python`/`node` images: `pip install` works outside a venv, `npm` is npm's own
release, `apt-get install` works (after `apt-get update`) against the host's mirror, commands run as
`user` in `/home/user` by default, and `sudo` needs no password.

Built with mmdebstrap from the host's mirror and keyring (bookworm, -updates, -security), `apt` variant
plus the packages below, without docs, man pages and translations. Downloaded .debs and the npm
tarball are kept in the cache directory, so a rebuild downloads only what changed. Finally the tree's
ownership is shifted into the sandbox uid range (root-owned files become uid 100000, user's 101000).
The finished tree is kept in the cache too (`tree_cache`): the next data dir gets a copy in seconds.

Times here (2 cores): ~55 s from an empty cache, ~45 s with the apt cache warm, ~3 s from the tree cache.

Built ahead by `sandhive template build-builtin base` (`make base-template`; also
`python -m sandhive.templates.base build [--data-dir DIR] [--cache-dir DIR] [--force]`), see `builtin`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from ..envd import ENVD_VERSION
from ..images.apt_sources import host_sources
from ..images.debian import BuildError, mmdebstrap
from ..images.system_image import DPKG_EXCLUDES, MOUNTPOINT, SUITES, default_cache_dir
from ..node import userns
from . import layout, npm, rootfs
from .builtin import Builtin
from .info import ROOTFS, TemplateInfo, now_iso
from .tree_cache import TreeCache

TEMPLATE_ID = "base"
ALIASES = ("base",)  # E2B's default template name: the SDKs ask for "base" when none is given
RECIPE_VERSION = 3  # bump when a step below changes what ends up in the rootfs (3: `python` next to `python3`)
VARIANT = "apt"  # essential packages + apt; everything else is named here
PACKAGES = (
    "python3", "python3-pip", "python3-venv", "nodejs", "git", "curl", "ca-certificates", "sudo", "bash",
    "procps", "iproute2", "less", "passwd",
    "python-is-python3",  # `python` as well as `python3`, as in E2B's base image (agents call `python`)
    "netbase", "tzdata",  # /etc/services and /usr/share/zoneinfo, which the official python images have too
)
USER, USER_ID = "user", 1000
HOSTNAME = "sandbox"
ENV = {
    "LANG": "C.UTF-8",  # glibc's built-in UTF-8 locale: no locale package needed
    "PIP_BREAK_SYSTEM_PACKAGES": "1",  # pip ignores PEP 668 even if a reinstalled python3 brings the marker back
}
SMOKE_TEST = f"""
python3 -c 'import ssl, sqlite3, venv, pip'
python --version
node --version
npm --version
git --version
curl --version
test "$(id -u {USER})" = {USER_ID}
setpriv --reuid={USER} --regid={USER} --init-groups sudo -n true
"""

Log = layout.Log


def host_apt_sources() -> list[str]:
    """The host's apt entries for the bookworm suites; the build fails without the main suite."""
    by_suite = host_sources(SUITES)
    if not by_suite[SUITES[0]]:
        raise BuildError(f"the host's apt sources (/etc/apt) list no {SUITES[0]!r} suite")
    return [line for lines in by_suite.values() for line in lines]


def recipe_key(sources: list[str]) -> str:
    """What the rootfs is made from: a different key means a rebuild would give a different tree."""
    spec = {"recipe": RECIPE_VERSION, "variant": VARIANT, "packages": PACKAGES, "excludes": DPKG_EXCLUDES,
            "sources": sources, "npm": npm.VERSION, "env": ENV}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def build(data_dir: Path, cache_dir: Path | None = None, *, force: bool = False, log: Log = print) -> TemplateInfo:
    """Build the base template into `<data_dir>/templates/base` unless it is there and current.

    A base built from another recipe (an older RECIPE_VERSION, other packages or apt sources) is rebuilt, so
    a host that upgrades Sandhive gets what the new recipe promises (e.g. `python`); sandboxes already
    running keep the tree they started on (`layout.build_into_place`). `force` rebuilds it from the mirror
    (the tree cache is skipped: the point is fresh packages).
    Blocking (a minute from the mirror, seconds from the tree cache): call it from a thread in async
    code. Concurrent callers, in this process or others, wait for one build; a failed build leaves
    nothing behind.
    """
    cache_dir = cache_dir or default_cache_dir()
    built = layout.read_built(data_dir, TEMPLATE_ID)
    if built is not None and not force:
        if is_current(built):
            log(f"base: built {built.created_at} in {built.build.get('seconds', '?')}s")
            return built
        log("base: built from an older recipe or other apt sources: rebuilding it")
    return layout.build_into_place(data_dir, TEMPLATE_ID, lambda tmp: _build(tmp, cache_dir, log, not force),
                                   force=force, current=is_current)


def is_current(info: TemplateInfo) -> bool:
    """True when `info` was built from today's recipe and apt sources (or the sources cannot be read: then
    a rebuild would fail anyway, and the base that is there keeps serving)."""
    try:
        current = recipe_key(host_apt_sources())
    except BuildError:
        return True
    return info.build.get("recipe") == current


def _build(tmp: Path, cache_dir: Path, log: Log, use_cache: bool) -> TemplateInfo:
    """Fill `tmp` with `rootfs/` (from the tree cache if it has this recipe, else from the mirror)."""
    steps = layout.Steps("base", log)
    steps.say(f"building the base template in {tmp}")
    sources = host_apt_sources()
    key = recipe_key(sources)
    cache = TreeCache(cache_dir)
    hit = cache.get(TEMPLATE_ID, key) if use_cache else None
    if hit is not None:
        cached, record = hit
        with steps.step(f"copy the tree built {record.get('built_at', '?')} from the cache"):
            cache.copy_out(cached, tmp / ROOTFS)
        record = {**record, "steps": steps.times, "seconds": round(steps.elapsed(), 1),
                  "from_cache": {"built_at": record.get("built_at"), "seconds": record.get("seconds")}}
    else:
        _build_from_mirror(tmp / ROOTFS, cache_dir, sources, steps)
        record = {"builder": "sandhive.templates.base", "recipe": key, "built_at": now_iso(),
                  "seconds": round(steps.elapsed(), 1), "steps": steps.times,
                  "size_bytes": layout.tree_size(tmp / ROOTFS), "suite": SUITES[0], "sources": sources,
                  "packages": list(PACKAGES), "npm": npm.VERSION}
        with steps.step("keep a copy in the tree cache"):
            try:
                cache.put(TEMPLATE_ID, key, tmp / ROOTFS, record)
            except (BuildError, OSError) as exc:  # the template is fine; only the next build is slower
                steps.say(f"warning: could not store the tree in the cache: {exc}")
    steps.say(f"built in {steps.elapsed():.1f}s, rootfs {record['size_bytes'] / 1e6:.0f} MB")
    return TemplateInfo(
        id=TEMPLATE_ID, aliases=ALIASES, default_user=USER, default_workdir=f"/home/{USER}", env=dict(ENV),
        envd={"version": ENVD_VERSION, "system_image_mountpoint": MOUNTPOINT}, build=record,
    )


def _build_from_mirror(tree: Path, cache_dir: Path, sources: list[str], steps: layout.Steps) -> None:
    """mmdebstrap, configuration, a smoke test, and the ownership shift; each step logged with its time."""
    old_umask = os.umask(0o022)  # the sandbox's non-root users must be able to read what we write
    try:
        with steps.step("npm tarball (pinned, verified)"):
            npm_archive = npm.tarball(cache_dir)
        with steps.step(f"mmdebstrap {VARIANT} + {len(PACKAGES)} packages"):
            mmdebstrap(tree, SUITES[0], sources, list(PACKAGES), apt_cache=cache_dir / "apt-archives",
                       dpkg_excludes=list(DPKG_EXCLUDES), variant=VARIANT, on_line=_mmdebstrap_progress(steps))
        with steps.step("configure: user, sudo, apt sources, pip, /etc files, npm, login profile"):
            rootfs.add_user(tree, USER, USER_ID)
            rootfs.allow_sudo(tree, USER)
            rootfs.write_apt_sources(tree, sources)
            rootfs.write_network_files(tree, HOSTNAME)
            rootfs.allow_pip_install(tree)
            npm.install(tree, npm_archive)
            rootfs.add_mountpoint(tree, MOUNTPOINT)
            make_login_fork_free(tree)
        with steps.step("smoke test: python3, node, npm, git, curl, sudo"):
            rootfs.smoke_test(tree, SMOKE_TEST)
        rootfs.clear_transient(tree)
        with steps.step(f"shift ownership into the sandbox range (uid {userns.BASE}+)"):
            userns.shift_tree(tree)
    finally:
        os.umask(old_umask)


# Debian's login files start a process each login shell: /etc/profile runs `$(id -u)`, root's ~/.profile
# `mesg n`. The SDK runs every command as `bash -l -c`, and in gVisor each fork+exec costs ~20 ms, so
# a `commands.run('true')` paid for two more programs than it ran. bash knows its uid ($EUID); sh
# (no $EUID) still asks `id`. `mesg` only acts on a terminal, so it runs only when stdin is one.
LOGIN_EDITS = {
    "etc/profile": ('"$(id -u)"', '"${EUID:-$(id -u)}"'),
    "root/.profile": ("\nmesg n 2> /dev/null || true\n", "\nif [ -t 0 ]; then mesg n 2> /dev/null || true; fi\n"),
}


def make_login_fork_free(tree: Path) -> None:
    """Rewrite the login files of LOGIN_EDITS; fail the build if Debian's text changed under us."""
    for name, (old, new) in LOGIN_EDITS.items():
        path = tree / name
        text = path.read_text()
        if old not in text:
            raise BuildError(f"base: {name} no longer contains {old.strip()!r}: revisit LOGIN_EDITS")
        path.write_text(text.replace(old, new))


def _mmdebstrap_progress(steps: layout.Steps) -> layout.Log:
    """Pass mmdebstrap's phase lines ("I: installing remaining packages ...") on as progress."""
    def on_line(line: str) -> None:
        if line.startswith("I: ") and "running --" not in line:
            steps.say(f"  mmdebstrap: {line[3:]}")
    return on_line


def _build_builtin(data_dir: Path, cache_dir: Path | None, force: bool, log: Log) -> TemplateInfo:
    return build(data_dir, cache_dir, force=force, log=log)


BUILTIN = Builtin("base", TEMPLATE_ID, "base", "Debian bookworm with Python, Node.js, git, curl and `user` (about a "
                  "minute from the mirror, seconds from the tree cache)", _build_builtin)

if __name__ == "__main__":
    from .builtin import main

    sys.exit(main(BUILTIN))
