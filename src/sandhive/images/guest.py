"""The microVM guest: a PVH kernel and a small initramfs, built from Debian's packages alone, cached.

- kernel: the `vmlinux` ELF (it carries a PVH entry note, so QEMU's `microvm` machine jumps straight
  into it: no firmware boot loader, no decompressor) taken out of the bzImage in Debian's
  `linux-image-cloud-amd64`. The package is downloaded with `apt-get download`, never installed.
- initramfs: busybox from `busybox-static`, the kernel's virtio/erofs modules (the cloud kernel builds
  them as modules) in dependency order, and `/init` (guest_init.py). An uncompressed newc cpio with
  fixed owners and timestamps, so the same packages give the same bytes (and TCG spends no time
  decompressing it).

Assets live in `<cache>/guest/<key>/`; the key covers the two packages' exact versions, the modules,
the init script (which holds envd's command line) and the layout version.

Usage: `python -m sandhive.images.guest build [--force] [--cache-dir DIR]`.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import guest_init, system_image
from .debian import BuildError

LAYOUT_VERSION = 1
KERNEL_PACKAGE = "linux-image-cloud-amd64"  # a metapackage: its first Depends names the kernel itself
BUSYBOX_PACKAGE = "busybox-static"
# Modules the guest needs (their dependencies are added from the modules' own `depends=`).
MODULES = ("virtio_mmio", "virtio_blk", "virtio_net", "erofs")
FIXED_MTIME = 0
APT_LISTS = Path("/var/lib/apt/lists")

Log = Callable[[str], None]


@dataclass(frozen=True)
class GuestAssets:
    """A built guest: what QEMU's `-kernel`/`-initrd` take, and the key snapshots are tied to."""

    key: str
    kernel: Path
    initramfs: Path
    kernel_release: str


# ---- packages -----------------------------------------------------------------------------------

def _apt_show(*packages: str) -> dict[str, dict[str, str]]:
    """`apt-cache show` of the candidate versions: package -> its control fields."""
    proc = subprocess.run(["apt-cache", "show", "--no-all-versions", *packages], capture_output=True, text=True)
    found: dict[str, dict[str, str]] = {}
    for stanza in proc.stdout.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(" "):
                key, _, value = line.partition(":")
                fields.setdefault(key, value.strip())
        if "Package" in fields:
            found.setdefault(fields["Package"], fields)
    missing = [p for p in packages if p not in found]
    if missing:
        raise BuildError(f"apt knows no package {', '.join(missing)}: run `apt-get update` (and check that the "
                         f"host's apt sources list Debian's main archive)")
    return found


def resolve_packages(cache: Path | None = None) -> dict[str, str]:
    """`name -> version` of the kernel package behind the metapackage, and of busybox-static.

    apt-cache takes most of a second per call on a full package list, so the answer is kept in `cache`
    until apt's lists change (`apt-get update` renames files into /var/lib/apt/lists).
    """
    stamp = str(APT_LISTS.stat().st_mtime_ns) if APT_LISTS.exists() else ""
    if cache is not None:
        try:
            saved = json.loads(cache.read_text())
            if saved.get("stamp") == stamp and stamp:
                return dict(saved["packages"])
        except (OSError, ValueError, KeyError):
            pass
    shown = _apt_show(KERNEL_PACKAGE, BUSYBOX_PACKAGE)
    depends = shown[KERNEL_PACKAGE].get("Depends", "")
    kernel = next((d.split()[0] for d in depends.split(",") if d.strip().startswith("linux-image-")), None)
    if kernel is None:
        raise BuildError(f"{KERNEL_PACKAGE} depends on no linux-image package: {depends!r}")
    packages = {kernel: _apt_show(kernel)[kernel]["Version"], BUSYBOX_PACKAGE: shown[BUSYBOX_PACKAGE]["Version"]}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"stamp": stamp, "packages": packages}))
    return packages


def _download(name: str, version: str, debs: Path) -> Path:
    """The .deb of `name=version`, downloaded into `debs` once (apt-get picks the host's mirror)."""
    debs.mkdir(parents=True, exist_ok=True)
    found = _find_deb(debs, name, version)
    if found is None:
        proc = subprocess.run(["apt-get", "download", "-q", f"{name}={version}"], cwd=debs, capture_output=True,
                              text=True)
        found = _find_deb(debs, name, version)
        if proc.returncode != 0 or found is None:
            raise BuildError(f"apt-get download {name}={version} failed: {proc.stderr.strip()[-500:]}")
    return found


def _find_deb(debs: Path, name: str, version: str) -> Path | None:
    quoted = version.replace(":", "%3a")
    matches = sorted(debs.glob(f"{name}_{quoted}_*.deb")) + sorted(debs.glob(f"{name}_{version.split(':')[-1]}_*.deb"))
    return matches[0] if matches else None


# ---- kernel -------------------------------------------------------------------------------------

def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF vmlinux inside a bzImage (boot protocol >= 2.08 gives the payload's place and length).

    Debian compresses it with LZ4 (legacy frames); the payload ends with the uncompressed size as a
    little-endian u32, which checks the result.
    """
    if bzimage[0x202:0x206] != b"HdrS":
        raise BuildError("the kernel is not a bzImage")
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = bzimage[start:start + length]
    expected = struct.unpack("<I", payload[-4:])[0]
    tools = {b"\x02\x21\x4c\x18": ["lz4", "-dc"], b"\x28\xb5\x2f\xfd": ["zstd", "-dc"],
             b"\x1f\x8b\x08\x00": ["gzip", "-dc"], b"\xfd7zXZ": ["xz", "-dc"]}
    tool = next((argv for magic, argv in tools.items() if payload.startswith(magic)), None)
    if tool is None:
        raise BuildError(f"unknown kernel compression (magic {payload[:4].hex()})")
    if shutil.which(tool[0]) is None:
        raise BuildError(f"{tool[0]} is needed to unpack the kernel: apt-get install {tool[0]}")
    proc = subprocess.run(tool, input=payload[:-4], capture_output=True)
    vmlinux = proc.stdout
    if not vmlinux.startswith(b"\x7fELF") or len(vmlinux) != expected:
        raise BuildError(f"unpacking the kernel with {tool[0]} failed: {proc.stderr.decode(errors='replace')}")
    return vmlinux


def _modinfo_depends(ko: bytes) -> list[str]:
    at = ko.find(b"\0depends=")
    if at < 0:
        return []
    value = ko[at + len(b"\0depends="):ko.index(b"\0", at + 1)].decode()
    return [name.replace("-", "_") for name in value.split(",") if name]


def module_closure(wanted: tuple[str, ...], available: dict[str, Path]) -> list[str]:
    """`wanted` and everything they depend on, each after its dependencies (the order to insmod)."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name not in available:
            raise BuildError(f"module {name} (needed by {' <- '.join(path) or 'the guest'}) is not in the kernel")
        for dep in _modinfo_depends(available[name].read_bytes()):
            visit(dep, (name, *path))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


# ---- initramfs ----------------------------------------------------------------------------------

class Cpio:
    """An uncompressed newc archive written in order, with fixed owner (root) and time."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ino = 0

    def _entry(self, name: str, mode: int, body: bytes) -> None:
        self.ino += 1
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, FIXED_MTIME, len(body), 0, 0, 0, 0, len(encoded), 0)
        self.data += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        self.data += b"\0" * (-len(self.data) % 4) + body
        self.data += b"\0" * (-len(self.data) % 4)

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755, b"")

    def file(self, name: str, body: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, body)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"")
        return bytes(self.data) + b"\0" * (-len(self.data) % 512)


def initramfs(busybox: bytes, applets: list[str], modules: dict[str, bytes], init: str) -> bytes:
    archive = Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"):
        archive.directory(d)
    archive.file("bin/busybox", busybox, 0o755)
    for applet in sorted(set(applets) - {"busybox"}):
        archive.symlink(f"bin/{applet}", "busybox")
    for name in sorted(modules):
        archive.file(f"lib/modules/{name}.ko", modules[name])
    archive.file("init", init.encode(), 0o755)
    return archive.finish()


def init_script(modules: list[str]) -> str:
    argv, env = system_image.envd_command(system_image.MOUNTPOINT, system_image.ENVD_PORT)
    return guest_init.script(modules, [*argv, "--set-clock"], env, system_image.MOUNTPOINT)


# ---- build and cache ----------------------------------------------------------------------------

def default_cache_dir() -> Path:
    return system_image.default_cache_dir()


def _key(packages: dict[str, str]) -> str:
    # The init script depends on the module order, which depends on the kernel: key on its inputs.
    spec = {"layout": LAYOUT_VERSION, "packages": packages, "modules": MODULES,
            "init": init_script(list(MODULES))}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _assets(directory: Path, key: str) -> GuestAssets | None:
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return GuestAssets(key, directory / "vmlinux", directory / "initramfs.cpio", manifest["kernel_release"])


def build(cache_dir: Path | None = None, force: bool = False, log: Log = print) -> GuestAssets:
    """Build (or reuse) the guest kernel and initramfs for the packages apt offers now."""
    cache_dir = cache_dir or default_cache_dir()
    root = cache_dir / "guest"
    packages = resolve_packages(root / "packages.json")
    key = _key(packages)
    final = root / key
    if not force and (found := _assets(final, key)) is not None:
        return found
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        if not force and (found := _assets(final, key)) is not None:
            return found  # built by another process while we waited
        started = time.monotonic()
        log(f"guest: building kernel + initramfs from {', '.join(f'{n} {v}' for n, v in packages.items())}")
        with tempfile.TemporaryDirectory(prefix=".tmp-", dir=root) as tmp:
            work = Path(tmp)
            out = work / "out"
            out.mkdir()
            release = _build_into(out, work, packages, cache_dir / "guest-debs")
            if final.exists():
                shutil.rmtree(final)
            os.rename(out, final)
        for old in root.iterdir():  # one kernel generation is enough: snapshots are keyed on it
            if old.is_dir() and old.name not in (key,) and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
        log(f"guest: ready in {time.monotonic() - started:.1f}s: {final} (kernel {release})")
    assets = _assets(final, key)
    assert assets is not None
    return assets


def _build_into(out: Path, work: Path, packages: dict[str, str], debs: Path) -> str:
    trees: dict[str, Path] = {}
    for name, version in packages.items():
        tree = work / name
        deb = _download(name, version, debs)
        proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"dpkg-deb -x {deb.name} failed: {proc.stderr.strip()}")
        trees[name] = tree
    kernel_tree = next(tree for name, tree in trees.items() if name != BUSYBOX_PACKAGE)
    vmlinuz = sorted((kernel_tree / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise BuildError("the kernel package holds no /boot/vmlinuz-*")
    release = vmlinuz[0].name.removeprefix("vmlinuz-")
    (out / "vmlinux").write_bytes(extract_vmlinux(vmlinuz[0].read_bytes()))
    available = {p.name.removesuffix(".ko").replace("-", "_"): p
                 for p in (kernel_tree / "lib/modules" / release).rglob("*.ko")}
    order = module_closure(MODULES, available)
    busybox_path = next((p for p in (trees[BUSYBOX_PACKAGE] / "bin/busybox",
                                     trees[BUSYBOX_PACKAGE] / "usr/bin/busybox") if p.is_file()), None)
    if busybox_path is None:
        raise BuildError(f"{BUSYBOX_PACKAGE} holds no busybox binary")
    applets = subprocess.run([str(busybox_path), "--list"], capture_output=True, text=True, check=True).stdout.split()
    image = initramfs(busybox_path.read_bytes(), applets, {m: available[m].read_bytes() for m in order},
                      init_script(order))
    (out / "initramfs.cpio").write_bytes(image)
    (out / "manifest.json").write_text(json.dumps(
        {"kernel_release": release, "packages": packages, "modules": order, "layout": LAYOUT_VERSION},
        indent=2, sort_keys=True) + "\n")
    return release


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# ---- command line -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandhive.images.guest",
                                     description="Build (or reuse) the microVM guest kernel and initramfs.")
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="build (or reuse) and print the assets' directory")
    build_cmd.add_argument("--force", action="store_true", help="rebuild even if cached")
    build_cmd.add_argument("--cache-dir", type=Path, default=None,
                           help="cache directory (default: $SANDHIVE_CACHE_DIR or /var/cache/sandhive)")
    args = parser.parse_args(argv)
    try:
        assets = build(args.cache_dir, force=args.force, log=lambda m: print(m, file=sys.stderr, flush=True))
    except BuildError as exc:
        print(f"guest: {exc}", file=sys.stderr)
        return 1
    print(assets.kernel.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
