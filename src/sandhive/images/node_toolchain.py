"""The node toolchain image: host-side tools newer than the host's Debian ships, in a cached rootfs.

Debian 12's CRIU 3.17 fails its vdso check on new kernels (6.18 here); trixie's CRIU 4.x works. The node
must not mix trixie into the host's apt sources, so it extracts trixie's `criu` (and `crun`) with their
libraries into a directory of their own (mmdebstrap, `extract` variant: no maintainer scripts) and runs
them through that directory's own dynamic loader, as envd's system image runs its Python.

runc takes `--criu PATH` and execs PATH as one binary, so the image gets a small wrapper script
(`bin/criu-wrapper`) that execs the loader with the image's library path and the real criu. The loader, not
the environment, carries the library path, so whatever criu itself starts sees the host's libraries. The
wrapper also makes the loader preload `criu_sockopt_shim.c` (CRIU 4.1.1 cannot dump TCP sockets on Linux
>= 6.16 without it) and points criu at the image's `criu.conf` unless the caller names its own config.

Cached under `<cache>/node-toolchain/image-<key>` (key: suite, packages, excludes, apt sources, layout),
built on first use. Usage: `python -m sandhive.images.node_toolchain build [--force] [--cache-dir DIR]`.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .apt_sources import APT_DIR, host_sources
from .debian import BuildError, make_symlinks_relative, mmdebstrap, remove_tree, run
from .system_image import LIBRARY_DIRS, LOADER, Log, _digest, default_cache_dir

LAYOUT_VERSION = 1  # bump when the steps below change what ends up in the image
SUITE = "trixie"
SUITES = ("trixie", "trixie-updates", "trixie-security")
# The host suite whose mirror and keyring the trixie sources borrow (its lines are rewritten per suite).
HOST_SUITES = {"trixie": "bookworm", "trixie-updates": "bookworm-updates", "trixie-security": "bookworm-security"}
PACKAGES = ("criu", "crun")
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*",
                 "/usr/share/lintian/*")
CRIU = "usr/sbin/criu"
CRUN = "usr/bin/crun"
CRIU_WRAPPER = "bin/criu-wrapper"
CRUN_WRAPPER = "bin/crun-wrapper"
CRIU_CONFIG = "etc/sandhive-criu.conf"
SOCKOPT_SHIM = "lib/sandhive/criu_sockopt_shim.so"
SOCKOPT_SHIM_SOURCE = Path(__file__).with_name("criu_sockopt_shim.c")
# Options runc 1.1 has no flag for. tcp-close: a connection open at dump time (the API's keep-alive to envd)
# is restored closed rather than failing the dump; the sandbox may come back on another address anyway.
# network-lock skip: CRIU's lock (firewall rules in the namespace while it works) guards live TCP state,
# which Sandhive never carries over (tcp-close, and `ss -K` before a pause); on restore the namespace is
# empty until the node wires it. The unlock alone cost 53-66 ms of every restore (bench/RESULTS.md).
CRIU_OPTIONS = ("tcp-close", "network-lock skip")
MIN_CRIU_VERSION = (4, 0)
KEEP_GENERATIONS = 2


def trixie_sources(apt_dir: Path = APT_DIR) -> list[str]:
    """One-line apt entries for trixie from the host's mirror and keyring.

    The host (Debian 12) lists only bookworm suites: each bookworm line is reused with its suite renamed,
    so the build fetches from the same mirror (or proxy) the host is configured with. Debian's archive
    keyring on the host carries trixie's keys.
    """
    by_host_suite = host_sources(HOST_SUITES.values(), apt_dir)
    lines: list[str] = []
    for suite, host_suite in HOST_SUITES.items():
        for line in by_host_suite[host_suite]:
            words = line.split()
            words[words.index(host_suite)] = suite
            lines.append(" ".join(words))
    return lines


def image_key(sources: list[str]) -> str:
    spec = {"layout": LAYOUT_VERSION, "suite": SUITE, "shim": SOCKOPT_SHIM_SOURCE.read_text(),
            "criu_options": CRIU_OPTIONS, "packages": PACKAGES, "excludes": DPKG_EXCLUDES,
            "sources": sources}
    return _digest(json.dumps(spec, sort_keys=True))


def image_dir(cache_dir: Path | None = None) -> Path:
    """Where the toolchain for the host's current apt sources lives (built or not)."""
    root = (cache_dir or default_cache_dir()) / "node-toolchain"
    return root / f"image-{image_key(trixie_sources())}"


def loader_command(tree: Path) -> list[str]:
    """argv prefix that runs one of the image's programs with the image's own loader and libraries."""
    return [str(tree / LOADER), "--library-path", ":".join(str(tree / d) for d in LIBRARY_DIRS)]


def criu_command(tree: Path) -> list[str]:
    """argv that runs the image's criu directly (for `criu check`, or a caller that builds its own argv)."""
    return [*loader_command(tree), str(tree / CRIU)]


def criu_wrapper(cache_dir: Path | None = None) -> Path:
    """The single executable runc's `--criu PATH` wants; builds the toolchain on first use."""
    return build(cache_dir, log=lambda m: print(m, file=sys.stderr, flush=True)) / CRIU_WRAPPER


def find(cache_dir: Path | None = None) -> Path | None:
    """The built toolchain for the host's current apt sources, or None."""
    tree = image_dir(cache_dir)
    return tree if (tree / CRIU_WRAPPER).is_file() else None


def build(cache_dir: Path | None = None, force: bool = False, log: Log = print) -> Path:
    """Build (or reuse) the toolchain; return its directory. Built in a temp dir, renamed into place."""
    cache = cache_dir or default_cache_dir()
    tree = image_dir(cache)
    if (tree / CRIU_WRAPPER).is_file() and not force:
        return tree
    sources = trixie_sources()
    if not sources:
        raise BuildError("the host's apt sources list no bookworm suite to borrow a Debian mirror from")
    started = time.monotonic()
    tree.parent.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o022)
    try:
        with open(tree.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (tree / CRIU_WRAPPER).is_file() and not force:
                return tree
            for stale in tree.parent.glob(".tmp-*"):
                remove_tree(stale)
            tmp = tree.with_name(f".tmp-{tree.name}-{os.getpid()}")
            try:
                log(f"node-toolchain: mmdebstrap {SUITE} {' '.join(PACKAGES)} ...")
                mmdebstrap(tmp, SUITE, sources, list(PACKAGES), apt_cache=cache / "apt-archives-trixie",
                           dpkg_excludes=list(DPKG_EXCLUDES))
                make_symlinks_relative(tmp)
                for transient in ("dev", "var/cache/apt", "var/lib/apt", "var/log"):
                    shutil.rmtree(tmp / transient, ignore_errors=True)
                _compile_shim(tmp / SOCKOPT_SHIM)
                (tmp / CRIU_CONFIG).parent.mkdir(parents=True, exist_ok=True)
                (tmp / CRIU_CONFIG).write_text("".join(f"{option}\n" for option in CRIU_OPTIONS))
                _write_wrapper(tmp, tree, CRIU_WRAPPER, CRIU, criu=True)
                _write_wrapper(tmp, tree, CRUN_WRAPPER, CRUN)
                _check(tmp)
                if tree.exists():
                    remove_tree(tree)
                os.rename(tmp, tree)
            except BaseException:
                if tmp.exists():
                    remove_tree(tmp)
                raise
            _prune(tree)
    finally:
        os.umask(old_umask)
    log(f"node-toolchain: ready in {time.monotonic() - started:.1f}s: {tree}")
    return tree


def _write_wrapper(tmp: Path, final: Path, name: str, program: str, criu: bool = False) -> None:
    """A shell script that execs `program` through the image's loader; paths are those of the final tree.

    For criu: the loader preloads the sockopt shim, and CRIU_CONFIG_FILE (read by criu in runc's RPC mode
    too) defaults to the image's config; a caller may export its own (it must repeat CRIU_OPTIONS).
    """
    loader = loader_command(final)
    if criu:
        loader = [loader[0], "--preload", str(final / SOCKOPT_SHIM), *loader[1:]]
    argv = [*loader, str(final / program)]
    head = f': "${{CRIU_CONFIG_FILE:={final / CRIU_CONFIG}}}"\nexport CRIU_CONFIG_FILE\n' if criu else ""
    wrapper = tmp / name
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text("#!/bin/sh\n" + head + "exec " + " ".join(f"'{a}'" for a in argv) + ' "$@"\n')
    wrapper.chmod(0o755)


def _compile_shim(target: Path) -> None:
    """Build the sockopt shim with the host's gcc (glibc 2.36): trixie's newer glibc runs it unchanged."""
    compiler = shutil.which("gcc")
    if compiler is None:
        raise BuildError("the node toolchain needs gcc for its criu shim (apt-get install gcc libc6-dev)")
    target.parent.mkdir(parents=True, exist_ok=True)
    run([compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(target), str(SOCKOPT_SHIM_SOURCE)])


def _check(tmp: Path) -> None:
    """Fail the build, not the first checkpoint, if the image's criu does not run or is too old."""
    loader = loader_command(tmp)
    out = _output([loader[0], "--preload", str(tmp / SOCKOPT_SHIM), *loader[1:], str(tmp / CRIU), "--version"])
    version = next((w for w in out.split() if w[:1].isdigit()), "0")
    if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < MIN_CRIU_VERSION:
        raise BuildError(f"the toolchain's criu is {version}; CRIU >= 4.0 is needed on new kernels")
    run([*loader_command(tmp), str(tmp / CRUN), "--version"])


def _output(argv: list[str]) -> str:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{argv[-2:]} failed: {proc.stdout[-2000:]}")
    return proc.stdout


def _prune(keep: Path) -> None:
    layers = sorted(keep.parent.glob("image-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in layers if p != keep][KEEP_GENERATIONS - 1:]:
        remove_tree(old)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandhive.images.node_toolchain",
                                     description="Build or locate the node toolchain (trixie's criu and crun).")
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="build (or reuse) the toolchain and print its path")
    build_cmd.add_argument("--force", action="store_true")
    path_cmd = sub.add_parser("path", help="print the toolchain's path if it is built")
    for cmd in (build_cmd, path_cmd):
        cmd.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            path = build(args.cache_dir, force=args.force, log=lambda m: print(m, file=sys.stderr, flush=True))
        else:
            found = find(args.cache_dir)
            if found is None:
                print("node toolchain not built: python -m sandhive.images.node_toolchain build", file=sys.stderr)
                return 1
            path = found
    except BuildError as exc:
        print(f"node-toolchain: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
