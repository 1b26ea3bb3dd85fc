"""The envd system image: a read-only directory holding envd and its own Python runtime.

envd must run inside any template rootfs, even one with no Python and no glibc (busybox, distroless).
So the node mounts this image read-only at `/.sandhive` inside the sandbox and starts envd through the
image's own dynamic loader with `--library-path`. Unlike LD_LIBRARY_PATH that setting lives in the
loader, not the environment, so the commands envd starts use the rootfs's own programs and libraries
and never see envd's Python.

The image is built in two cached layers so that editing sandhive's source redoes only the fast one:

- `base-<key>`: Debian's python3.11, its stdlib and bash, extracted by mmdebstrap from the host's
  mirror (about 10 s; downloaded .debs are kept). Key: package list, options, apt sources.
- `image-<key>`: a hard-linked copy of the base plus the sandhive wheel and its dependencies in
  `/opt/sandhive/site-packages`, envd's spawn helper compiled statically from `spawn_helper.c`, and
  the one-file bundle of envd's compiled modules that makes its start cheap under gVisor (seconds).
  Key: base key, source tree, pinned dependency versions, the helper's source and flags.

Usage: `python -m sandhive.images.system_image build [--force] [--cache-dir DIR]` or `... path`.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..envd.module_bundle import MODULE_BUNDLE
from ..envd.system_shell import SPAWN_HELPER
from .apt_sources import host_sources
from .debian import BuildError, make_symlinks_relative, mmdebstrap, remove_tree, run

MOUNTPOINT = "/.sandhive"
ENVD_PORT = 49983

# Layout inside the image (relative paths; the image works wherever it is mounted).
LOADER = "lib64/ld-linux-x86-64.so.2"
LIBRARY_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
PYTHON = "usr/bin/python3.11"
BASH = "usr/bin/bash"
SITE_PACKAGES = "opt/sandhive/site-packages"
# Debian's site.py adds <prefix>/lib/python3/dist-packages; a .pth there adds SITE_PACKAGES.
DIST_PACKAGES = "usr/lib/python3/dist-packages"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The Debian base layer. Everything here goes into its cache key.
LAYOUT_VERSION = 1  # bump when the steps below change what ends up in the image
SUITES = ("bookworm", "bookworm-updates", "bookworm-security")
PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "bash")
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*",
                 "/usr/share/lintian/*")
# What of sandhive goes into the image: envd, the generated RPC contract, the package marker and its version.
ENVD_SOURCES = ("sandhive/__init__.py", "sandhive/version.py", "sandhive/envd", "sandhive/rpc")
# envd's third-party dependencies (versions pinned to the host's by constraint).
ENVD_REQUIREMENTS = ("connectrpc", "protobuf-py", "starlette", "uvicorn", "httptools", "python-multipart",
                     "asyncinotify")
# envd's privilege-dropping exec helper (see spawn_helper.c): static, so exec'ing it maps no loader or libc.
SPAWN_HELPER_SOURCE = Path(__file__).with_name("spawn_helper.c")
SPAWN_HELPER_CFLAGS = ("-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror")
KEEP_GENERATIONS = 3  # older layers are pruned; a sandbox may still have a recent one mounted

Log = Callable[[str], None]


# ---- starting envd from the mounted image -------------------------------------------------------

def loader_command(mountpoint: str = MOUNTPOINT) -> list[str]:
    """argv prefix that runs one of the image's programs with the image's own loader and libraries."""
    libs = ":".join(f"{mountpoint}/{d}" for d in LIBRARY_DIRS)
    return [f"{mountpoint}/{LOADER}", "--library-path", libs]


def envd_command(mountpoint: str = MOUNTPOINT, port: int = ENVD_PORT,
                 host: str | None = None) -> tuple[list[str], dict[str, str]]:
    """argv and complete environment that start envd from the image mounted at `mountpoint`.

    Python runs isolated (`-I`): it ignores PYTHON* variables and finds its stdlib from its own path
    (prefix `<mountpoint>/usr`), and the image's .pth adds the sandhive site-packages. So envd's
    environment carries no PYTHONHOME/PYTHONPATH that would leak into, and break, the rootfs's own
    python in the commands envd starts. `-B` because the image is read-only (it is precompiled).
    """
    argv = [*loader_command(mountpoint), f"{mountpoint}/{PYTHON}", "-I", "-B",
            "-m", "sandhive.envd", "--port", str(port)]
    if host is not None:
        argv += ["--host", host]
    return argv, {"PATH": DEFAULT_PATH, "SANDHIVE_SYSTEM_ROOT": mountpoint}


def system_bash_command(mountpoint: str = MOUNTPOINT) -> list[str]:
    """argv prefix that runs the image's bash, envd's fallback shell when the rootfs has no /bin/bash."""
    return [*loader_command(mountpoint), f"{mountpoint}/{BASH}"]


# ---- cache keys and lookup ----------------------------------------------------------------------

def default_cache_dir() -> Path:
    """`$SANDHIVE_CACHE_DIR`, else /var/cache/sandhive (builds need root: mmdebstrap, device nodes)."""
    return Path(os.environ.get("SANDHIVE_CACHE_DIR") or "/var/cache/sandhive")


def source_root() -> Path:
    """The sandhive source tree this module belongs to (a build packages it as a wheel)."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").is_file() or not (root / "src" / "sandhive").is_dir():
        raise BuildError(f"no sandhive source tree at {root}: the system image is built from a checkout")
    return root


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()[:16]


def base_key(sources: list[str]) -> str:
    """Key of the Debian layer: what mmdebstrap is asked for, and from where."""
    spec = {"layout": LAYOUT_VERSION, "packages": PACKAGES, "excludes": DPKG_EXCLUDES, "sources": sources}
    return _digest(json.dumps(spec, sort_keys=True))


def _source_files(root: Path) -> Iterator[Path]:
    """The files of envd and what it imports: the only part of sandhive the image carries."""
    for entry in ENVD_SOURCES:
        path = root / "src" / entry
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for candidate in candidates:
            if candidate.is_file() and "__pycache__" not in candidate.parts:
                yield candidate


def host_pins() -> str:
    """Pins (`name==version`) of the host environment, so envd in the image runs the dependency
    versions the host's tests ran against rather than whatever PyPI has today."""
    pins: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] or ""
        canonical = re.sub(r"[-_.]+", "-", name).lower()
        if name and canonical != "sandhive" and canonical not in pins:
            pins[canonical] = f"{name}=={dist.version}"
    return "".join(f"{pin}\n" for pin in sorted(pins.values()))


def image_key(base: str, root: Path, pins: str) -> str:
    """Key of the Python layer: the base it sits on, envd's source files, its requirements and the pins."""
    files: list[str | bytes] = [part for f in _source_files(root)
                                for part in (str(f.relative_to(root)), f.read_bytes())]
    helper: list[str | bytes] = [SPAWN_HELPER, *SPAWN_HELPER_CFLAGS, SPAWN_HELPER_SOURCE.read_bytes()]
    return _digest(str(LAYOUT_VERSION), base, pins, *ENVD_REQUIREMENTS, *files, *helper)


class _Plan:
    """Where the layers for the current source tree and host live, and what goes into them."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.cache_dir = cache_dir or default_cache_dir()
        self.root = self.cache_dir / "system-image"
        self.sources_by_suite = host_sources(SUITES)
        self.sources = [line for lines in self.sources_by_suite.values() for line in lines]
        self.pins = host_pins()
        base = base_key(self.sources)
        self.base = self.root / f"base-{base}"
        self.image = self.root / f"image-{image_key(base, source_root(), self.pins)}"


def find(cache_dir: Path | None = None) -> Path | None:
    """The image built from the current source tree and host environment, or None if not built yet."""
    image = _Plan(cache_dir).image
    return image if image.is_dir() else None


# ---- building -----------------------------------------------------------------------------------

def build(cache_dir: Path | None = None, force: bool = False, log: Log = print) -> Path:
    """Build (or reuse) the system image for the current source tree; return its directory.

    Each layer is built in a temporary directory and renamed into place, so a failed or interrupted
    build leaves nothing that a later run could mistake for a finished layer.
    """
    plan = _Plan(cache_dir)
    if plan.image.is_dir() and not force:
        log(f"system-image: up to date: {plan.image}")
        return plan.image
    if sys.version_info[:2] != (3, 11):
        raise BuildError("build with CPython 3.11: pip picks the image's wheels for the running python")
    if not plan.sources_by_suite[SUITES[0]]:
        raise BuildError(f"the host's apt sources (/etc/apt) list no {SUITES[0]!r} suite")
    started = time.monotonic()
    old_umask = os.umask(0o022)  # the sandbox's non-root users must be able to read the image
    try:
        plan.root.mkdir(parents=True, exist_ok=True)
        with _locked(plan.root):
            _remove_stale_temps(plan.root)
            if force or not plan.base.is_dir():
                _build_base(plan, log)
            if force or not plan.image.is_dir():  # another build may have made it while we waited
                _build_image(plan, log)
            _prune(plan.root, "image-", plan.image)
            _prune(plan.root, "base-", plan.base)
    finally:
        os.umask(old_umask)
    log(f"system-image: ready in {time.monotonic() - started:.1f}s: {plan.image} ({_du(plan.image)})")
    return plan.image


def _build_base(plan: _Plan, log: Log) -> None:
    """Debian's python3.11, its stdlib and bash, with their libraries: the runtime envd needs.

    The `extract` variant unpacks the packages and their dependencies without running maintainer
    scripts: the image is a runtime for one program, not a system, so nothing needs configuring.
    """
    missing = [suite for suite, lines in plan.sources_by_suite.items() if not lines]
    if missing:
        log(f"system-image: warning: the host's apt sources lack {', '.join(missing)}")
    tmp = _temp_for(plan.base)
    with _step(log, f"base layer: mmdebstrap {' '.join(PACKAGES)}"), _cleanup_on_error(tmp):
        mmdebstrap(tmp, SUITES[0], plan.sources, list(PACKAGES), apt_cache=plan.cache_dir / "apt-archives",
                   dpkg_excludes=list(DPKG_EXCLUDES))
        make_symlinks_relative(tmp)
        for transient in ("dev", "var/cache/apt", "var/lib/apt", "var/log"):  # no device nodes, no apt state
            shutil.rmtree(tmp / transient, ignore_errors=True)
        (tmp / "dev").mkdir()
        _compile(tmp, [tmp / "usr/lib/python3.11"])
        _install(tmp, plan.base)


def _build_image(plan: _Plan, log: Log) -> None:
    """Hard-link the base layer into the image, then add envd's code and its dependencies only.

    Not the whole sandhive distribution: the control plane's stack (FastAPI, SQLAlchemy, psycopg, ...)
    has no business inside a sandbox, and keying on envd's files alone spares a rebuild per API edit.
    """
    tmp = _temp_for(plan.image)
    with _step(log, "python layer: envd + its dependencies"), _cleanup_on_error(tmp), \
            tempfile.TemporaryDirectory(prefix="sandhive-pins-") as work_dir:
        run(["cp", "-al", str(plan.base), str(tmp)])
        work = Path(work_dir)
        (work / "pins.txt").write_text(plan.pins)
        site = tmp / SITE_PACKAGES
        run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
             "--only-binary=:all:", "--target", str(site), "--constraint", str(work / "pins.txt"),
             *ENVD_REQUIREMENTS])
        shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts pointing at the host's python
        _copy_envd_sources(source_root() / "src", site)
        compile_spawn_helper(tmp / SPAWN_HELPER)
        (tmp / DIST_PACKAGES).mkdir(parents=True)
        (tmp / DIST_PACKAGES / "sandhive.pth").write_text(os.path.relpath(site, tmp / DIST_PACKAGES) + "\n")
        _compile(tmp, [site])
        _check_envd(tmp)
        _write_module_bundle(tmp, plan.image.name.removeprefix("image-"))
        _install(tmp, plan.image)


def compile_spawn_helper(target: Path) -> None:
    """Compile `spawn_helper.c` into a static binary at `target` (mode 0755), and check that it runs.

    The host's gcc and static glibc (Debian's gcc and libc6-dev) build it: a static binary needs
    nothing from the image or the rootfs it later runs in.
    """
    compiler = shutil.which("gcc")
    if compiler is None:
        raise BuildError("the system image needs a C compiler for envd's spawn helper: gcc is not installed "
                         "(run `make debian-packages`, or apt-get install gcc libc6-dev)")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        run([compiler, *SPAWN_HELPER_CFLAGS, "-o", str(target), str(SPAWN_HELPER_SOURCE)])
    except BuildError as exc:
        raise BuildError(f"compiling envd's spawn helper failed (static linking needs libc6-dev): {exc}") from None
    target.chmod(0o755)
    run([str(target), "--", "/bin/sh", "-c", "exit 0"])


def _copy_envd_sources(src: Path, site: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for entry in ENVD_SOURCES:
        source, target = src / entry, site / entry
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        else:
            shutil.copy2(source, target)


def _compile(tree: Path, dirs: list[Path]) -> None:
    """Byte-compile with the image's own python, so the read-only image never needs to write .pyc files.

    `unchecked-hash` pycs are never revalidated against their sources: the image does not change.
    """
    run([*loader_command(str(tree)), str(tree / PYTHON), "-I", "-m", "compileall", "-q", "-j0",
         "--invalidation-mode", "unchecked-hash", *map(str, dirs)])


def _check_envd(tree: Path) -> None:
    """Fail the build, not the first sandbox, if the image's python cannot load envd and its stack."""
    python = [*loader_command(str(tree)), str(tree / PYTHON), "-I", "-B"]
    run([*python, "-c", "import ssl, sqlite3, ctypes, uvicorn, starlette, connectrpc"])
    run([*python, "-m", "sandhive.envd", "--help"])


def _write_module_bundle(tree: Path, key: str) -> None:
    """Write MODULE_BUNDLE: the code of the modules envd imports before its first /health, in one file.

    Under gVisor each file's first open costs milliseconds, and envd imports hundreds of modules as it starts;
    from the bundle it reads one file (see sandhive.envd.module_bundle). The image's own Python writes it, as
    marshal's format is its own, by starting envd from this tree (module_bundle_writer).
    """
    run([*loader_command(str(tree)), str(tree / PYTHON), "-I", "-B", "-m", "sandhive.envd.module_bundle_writer",
         str(tree / MODULE_BUNDLE), "--image-key", key])


# ---- helpers ------------------------------------------------------------------------------------

def _temp_for(layer: Path) -> Path:
    return layer.with_name(f".tmp-{layer.name}-{os.getpid()}")


def _install(tmp: Path, layer: Path) -> None:
    """Rename a finished temp tree into place, replacing (on --force) an existing layer."""
    if layer.exists():
        old = layer.with_name(f".tmp-old-{layer.name}-{os.getpid()}")
        os.rename(layer, old)
        os.rename(tmp, layer)
        remove_tree(old)
    else:
        os.rename(tmp, layer)


@contextmanager
def _step(log: Log, what: str) -> Iterator[None]:
    log(f"system-image: {what} ...")
    started = time.monotonic()
    yield
    log(f"system-image: {what}: done in {time.monotonic() - started:.1f}s")


@contextmanager
def _cleanup_on_error(tmp: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        if tmp.exists():
            remove_tree(tmp)
        raise


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One build at a time per cache (two test sessions may both find the image missing)."""
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _remove_stale_temps(root: Path) -> None:
    for tmp in root.glob(".tmp-*"):
        remove_tree(tmp)


def _prune(root: Path, prefix: str, keep: Path) -> None:
    """Delete all but the newest KEEP_GENERATIONS layers named `prefix*` (never `keep`)."""
    layers = sorted(root.glob(f"{prefix}*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in layers if p != keep][KEEP_GENERATIONS - 1:]:
        remove_tree(old)


def _du(path: Path) -> str:
    out = subprocess.run(["du", "-sh", str(path)], stdout=subprocess.PIPE, text=True).stdout
    return out.split()[0] if out else "?"


# ---- command line -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandhive.images.system_image",
                                     description="Build or locate the envd system image.")
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="build (or reuse) the image and print its path")
    build_cmd.add_argument("--force", action="store_true", help="rebuild both layers")
    path_cmd = sub.add_parser("path", help="print the image's path if it is built for the current source")
    for cmd in (build_cmd, path_cmd):
        cmd.add_argument("--cache-dir", type=Path, default=None,
                         help="cache directory (default: $SANDHIVE_CACHE_DIR or /var/cache/sandhive)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            path = build(args.cache_dir, force=args.force, log=lambda m: print(m, file=sys.stderr, flush=True))
        else:
            found = find(args.cache_dir)
            if found is None:
                print("system image not built for the current source tree (or it changed since): "
                      "run `make system-image` (python -m sandhive.images.system_image build)", file=sys.stderr)
                return 1
            path = found
    except BuildError as exc:
        print(f"system-image: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
