"""envd's pure-Python modules served from one file of the system image, to make envd's start cheaper.

Why: envd imports ~430 modules (~370 from .py files) before it answers its first `/health`, and under
gVisor the first open and read of each file in a fresh sandbox costs ~2.5 ms (the sandbox kernel walks
and opens it through its gofer), so a pool miss spent hundreds of milliseconds on imports. The image
build therefore writes `MODULE_BUNDLE`: the code object of every module envd loads from a .py file up
to its first `/health` (see module_bundle_writer), in one file that envd reads with one open.

How: `install()`, called first thing in `sandhive.envd.__main__`, puts a finder in front of the path
finder that serves those modules. Each module keeps its real file: its spec comes from
`spec_from_file_location` with the real path and package search locations, and its loader is a
`SourceFileLoader` that only takes its code from the bundle. So `__file__`, `__path__`, `__spec__`,
tracebacks, `get_data`, resource readers and `importlib.metadata` work from the real files as
before. Anything not in the bundle imports normally, and an entry is dropped once served (a reload
reads the file).

When: only for the interpreter and image the bundle was written by and for. It lives in the image,
next to the interpreter (`<image>/usr` is that Python's `sys.prefix`); its header names the bytecode
magic number, the exact `sys.version` and the image layout (and, for diagnosis, the image's key); the
image is immutable and the bundle is written by the same build as the .pyc files it is made from. Any
mismatch, or a missing or unreadable bundle, means a normal import and one line on stderr. envd run
from a source tree or a venv (development, tests) is not inside an image and never looks for one.
"""

from __future__ import annotations

import _imp
import marshal
import os
import sys
from importlib.machinery import ModuleSpec, PathFinder, SourceFileLoader
from importlib.util import MAGIC_NUMBER, spec_from_file_location
from types import CodeType

MODULE_BUNDLE = "usr/lib/sandhive/envd-modules.marshal"  # inside the image
SITE_PACKAGES = "opt/sandhive/site-packages"  # inside the image: where sandhive and envd's dependencies live
SIGNATURE = b"sandhive envd module bundle\n"
FORMAT = 1  # bump when the layout of the header or the entries changes

# An entry: (is_package, file path relative to the image root, package search locations relative to
# the image root, marshalled code object). Bytes, not code objects: only what is imported is unmarshalled.
Entry = tuple[bool, str, tuple[str, ...], bytes]


class BundleError(Exception):
    """The bundle cannot be used (missing, unreadable, or written for another interpreter or image)."""


def _identity() -> dict[str, object]:
    """The header fields a bundle must have been written with for this interpreter and image layout to use it."""
    return {"format": FORMAT, "python": sys.version, "cache_tag": sys.implementation.cache_tag,
            "site_packages": SITE_PACKAGES}


def encode(entries: dict[str, Entry], image_key: str) -> bytes:
    """The bundle file: signature, this Python's bytecode magic number, then (header, entries) marshalled.

    The header also names the image's cache key: not checked (the bundle lives inside that immutable image),
    but it says which build wrote a bundle found somewhere.
    """
    return SIGNATURE + MAGIC_NUMBER + marshal.dumps(({**_identity(), "image_key": image_key}, entries))


def decode(data: bytes) -> tuple[dict[str, object], dict[str, Entry]]:
    """(header, entries) of a bundle written for this interpreter; BundleError otherwise."""
    if not data.startswith(SIGNATURE):
        raise BundleError("not an envd module bundle")
    magic = data[len(SIGNATURE):len(SIGNATURE) + len(MAGIC_NUMBER)]
    if magic != MAGIC_NUMBER:  # marshal's format is only defined per bytecode version: check before loads
        raise BundleError(f"written for another Python (bytecode magic {magic.hex()}, not {MAGIC_NUMBER.hex()})")
    try:
        info, entries = marshal.loads(memoryview(data)[len(SIGNATURE) + len(MAGIC_NUMBER):])
    except (EOFError, ValueError, TypeError) as exc:
        raise BundleError(f"unreadable: {exc}") from None
    if not isinstance(info, dict) or not isinstance(entries, dict):
        raise BundleError("unreadable: no header")
    for field, value in _identity().items():
        if info.get(field) != value:
            raise BundleError(f"written for {field} {info.get(field)!r}, this is {value!r}")
    return info, entries


def image_root() -> str | None:
    """The root of the system image this envd runs from, or None outside one (a source tree, a venv).

    Pure string work, no file access: the image's Python has `<root>/usr` as its prefix, and sandhive
    is then imported from the image's own site-packages.
    """
    root = os.path.dirname(sys.prefix)
    return root if __file__.startswith(os.path.join(root, SITE_PACKAGES) + os.sep) else None


class BundleLoader(SourceFileLoader):
    """A source file loader that takes the module's code from the bundle, once; all else from the file."""

    def __init__(self, fullname: str, path: str, code: bytes) -> None:
        super().__init__(fullname, path)
        self._bundled_code: bytes | None = code

    def get_code(self, fullname: str) -> CodeType | None:
        code, self._bundled_code = self._bundled_code, None
        if code is None or fullname != self.name:
            return super().get_code(fullname)
        obj = marshal.loads(code)
        # The code was compiled where the image was built: point it, as a normal import does, at this path.
        _imp._fix_co_filename(obj, self.path)  # type: ignore[attr-defined]  # CPython-internal; typeshed omits it
        return obj


class BundleFinder:
    """A meta path finder serving the bundle's modules with their real paths under `root`."""

    def __init__(self, root: str, entries: dict[str, Entry], info: dict[str, object]) -> None:
        self.root = root
        self.info = info
        self._entries = entries

    @classmethod
    def load(cls, path: str, root: str) -> BundleFinder:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
        info, entries = decode(data)
        return cls(root, entries, info)

    def __len__(self) -> int:
        return len(self._entries)

    def discard(self, names: list[str]) -> None:
        """Forget entries for `names` (modules imported already: the bundle would never serve them)."""
        for name in names:
            self._entries.pop(name, None)

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        entry = self._entries.pop(fullname, None)
        if entry is None:
            return None
        is_package, file, locations, code = entry
        origin = os.path.join(self.root, file)
        search = [os.path.join(self.root, location) for location in locations] if is_package else None
        return spec_from_file_location(fullname, origin, loader=BundleLoader(fullname, origin, code),
                                       submodule_search_locations=search)

    def invalidate_caches(self) -> None:
        """Nothing to invalidate: the image does not change."""


def install() -> BundleFinder | None:
    """Serve envd's modules from the image's bundle, if envd runs from an image that has a usable one."""
    root = image_root()
    if root is None:
        return None
    installed = next((f for f in sys.meta_path if isinstance(f, BundleFinder)), None)
    if installed is not None:  # `sandhive.envd.__main__` imported a second time
        return installed
    try:
        finder = BundleFinder.load(os.path.join(root, MODULE_BUNDLE), root)
    except BundleError as exc:
        print(f"envd: module bundle not used, importing from files: {exc}", file=sys.stderr, flush=True)
        return None
    finder.discard(list(sys.modules))
    position = next((i for i, f in enumerate(sys.meta_path) if f is PathFinder), len(sys.meta_path))
    sys.meta_path.insert(position, finder)  # after the built-in and frozen importers, as files are
    return finder
