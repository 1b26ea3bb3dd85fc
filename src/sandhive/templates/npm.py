"""npm for the base template, from the npm registry instead of Debian.

Debian's `npm` package drags in ~300 `node-*` packages (~160 MB, 25,000 files): it doubles the rootfs
and makes a warm build take over a minute, most of it dpkg unpacking small files. npm's own release
tarball bundles its dependencies (~10 MB) and is how the official `node` images ship it. The version
and its sha512 are pinned here, so the build is reproducible and the download verified; the tarball
is kept in the cache directory, so a rebuild does not fetch it again.

It is installed the way the official images have it: `/usr/local/lib/node_modules/npm`, linked from
`/usr/local/bin`, with global installs going to `/usr/local` (dpkg never touches it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import urllib.request
from pathlib import Path

from ..images.debian import BuildError, run

VERSION = "10.9.9"  # the newest npm that supports bookworm's Node.js 18 (engines: ^18.17.0 || >=20.5.0)
INTEGRITY = "sha512-1g+6jLQvaIuB4zwvHL7yrXuXcWZwDsCtBX8bbWDqbvJSSr9nPiDDWTHNgwXR27iIcTTW7v3A57hDW9RYv2W4Yg=="
REGISTRY = "https://registry.npmjs.org"
# npm's "builtin" config (the `npmrc` next to its package.json): global installs under /usr/local, as
# in the official images (node is /usr/bin/node here, which would make the prefix /usr), and no
# update check against the registry on every command.
BUILTIN_NPMRC = "prefix=/usr/local\nupdate-notifier=false\n"


def tarball(cache_dir: Path, timeout: float = 120.0) -> Path:
    """The verified npm tarball, downloaded into `cache_dir/downloads` unless already there."""
    path = cache_dir / "downloads" / f"npm-{VERSION}.tgz"
    if path.is_file() and _matches(path.read_bytes()):
        return path
    url = f"{REGISTRY}/npm/-/npm-{VERSION}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except OSError as exc:
        raise BuildError(f"cannot download npm {VERSION} from {url}: {exc}") from exc
    if not _matches(data):
        raise BuildError(f"npm {VERSION} from {url} does not match its pinned sha512: not installing it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def install(rootfs: Path, archive: Path) -> None:
    """Unpack npm into the rootfs (owned by root, as if root had installed it) and link npm and npx."""
    package = rootfs / "usr/local/lib/node_modules/npm"
    package.mkdir(parents=True)
    run(["tar", "-xzf", str(archive), "-C", str(package), "--strip-components=1", "--no-same-owner"])
    (package / "npmrc").write_text(BUILTIN_NPMRC)
    bin_dir = rootfs / "usr/local/bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("npm", "npx"):
        (bin_dir / name).symlink_to(f"../lib/node_modules/npm/bin/{name}-cli.js")


def _matches(data: bytes) -> bool:
    algorithm, _, expected = INTEGRITY.partition("-")
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode() == expected
