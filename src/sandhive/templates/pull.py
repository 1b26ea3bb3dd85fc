"""Templates a node does not have, pulled from the template registry on first use (`oci_registry` pushed them).

`PullingTemplates` wraps a node's `TemplateRegistry`: a template id it lacks is looked up in the registry, its
image copied by skopeo into a content-addressed cache (`<cache>/sha256-<manifest digest>/`, an OCI layout), and
unpacked into the template's directory. The cache may be shared by several data dirs on one host
(`--template-cache`): an entry is written to a temp dir and renamed into place under a `flock`, like
`layout.build_into_place`, so two nodes pulling the same image at once copy it once and never see half of it.

The unpack is `umoci raw unpack --rootless` run as root of a user namespace mapped to the canonical template range
(`userns.BASE`), with the new rootfs as its working directory: whatever the layer holds (`../` names, absolute
links, setuid-root files, device nodes), it is written by an unprivileged host uid that owns nothing of the host's,
and files "owned by root" in the image are owned by the template range, as in a local build. The cache entry is
handed to it as an open file descriptor (it lies under the root-only data dir).

A template pulled before is checked against the registry's tag at most every `RECHECK_SECONDS`: a rebuild through
another replica is pulled again at the next create after that.

A create that waited for a pull is told so (`resolve_for_create` returns a `Pulled`): the node puts it in the
sandbox's own log (cluster/node_api.py), so the user sees where the seconds went, not only the node's log.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..images.debian import remove_tree
from ..node import userns
from ..node.runtime import TemplateImage
from . import layout
from .info import ID_PATTERN, ROOTFS, TemplateInfo
from .oci_registry import LATEST, RegistryError, TemplateRegistryRef, as_template_root, lookup

if TYPE_CHECKING:
    from .registry import TemplateRegistry

_logger = logging.getLogger("sandhive.templates")
Log = Callable[[str], None]
DIGEST_KEY = "registry_digest"  # in template.json's `build`: the manifest a pulled template came from
RECHECK_SECONDS = 30.0
_DIGEST_HEX = frozenset("0123456789abcdef")


def cache_entry(cache: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or not set(hexdigest) <= _DIGEST_HEX:
        raise RegistryError(f"unexpected manifest digest {digest!r}")
    return cache / f"sha256-{hexdigest}"


def fetch(ref: TemplateRegistryRef, template_id: str, digest: str, cache: Path) -> Path:
    """The OCI layout of the image `digest` in the cache, copied from the registry unless it is there."""
    entry = cache_entry(cache, digest)
    if (entry / "index.json").is_file():
        return entry
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(cache / f".lock-{entry.name}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (entry / "index.json").is_file():
            return entry  # another node (or thread) copied it while we waited
        tmp = cache / f".tmp-{entry.name}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            source = f"docker://{ref.host}/{ref.repository(template_id)}@{digest}"
            result = subprocess.run(["skopeo", "copy", "--quiet", *ref.tls_flag("src"), source, f"oci:{tmp}:{LATEST}"],
                                    capture_output=True, text=True, timeout=3600,
                                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"})
            if result.returncode != 0:
                raise RegistryError(f"copying template {template_id} from {ref.host} failed: "
                                    f"{result.stderr.strip()[-1500:]}")
            os.rename(tmp, entry)
        finally:
            if tmp.exists():
                remove_tree(tmp)
    return entry


def unpack_layout(entry: Path, rootfs: Path) -> None:
    """Unpack the OCI layout `entry` into the empty directory `rootfs`, as root of the template range."""
    os.chown(rootfs, userns.BASE, userns.BASE)
    os.chmod(rootfs, 0o755)
    fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        as_template_root(["umoci", "raw", "unpack", "--image", f"/proc/self/fd/{fd}:{LATEST}", "."],
                         cwd=rootfs, pass_fds=(fd,))
    finally:
        os.close(fd)


def pull(data_dir: Path, ref: TemplateRegistryRef, template_id: str, cache: Path, log: Log = _logger.info,
         found: tuple[str, TemplateInfo] | None = None) -> TemplateInfo:
    """Pull the template into `<data_dir>/templates/<id>` (replacing an older pull). LookupError if the registry
    has no such template. Blocking."""
    found = found or lookup(ref, template_id)
    if found is None:
        raise LookupError(f"template '{template_id}' not found")
    digest, info = found
    started = time.monotonic()
    log(f"pulling template {template_id} from registry {ref.host}")
    entry = fetch(ref, template_id, digest, cache)

    def unpack(tmp: Path) -> TemplateInfo:
        (tmp / ROOTFS).mkdir()
        unpack_layout(entry, tmp / ROOTFS)
        return replace(info, build={**info.build, DIGEST_KEY: digest})

    def current(built: TemplateInfo) -> bool:
        return built.build.get(DIGEST_KEY) == digest

    pulled = layout.build_into_place(data_dir, template_id, unpack, current=current)
    log(f"template {template_id} pulled in {time.monotonic() - started:.1f}s")
    return pulled


@dataclass(frozen=True)
class Pulled:
    """A pull a create waited for: the template, where from, which image, when it began and how long it took."""

    template_id: str
    registry: str
    digest: str
    started: float  # unix seconds
    seconds: float

    def message(self) -> str:
        return (f"template {self.template_id} pulled from registry {self.registry} for this sandbox "
                f"(digest {self.digest}, {self.seconds:.1f} s)")

    def fields(self) -> dict[str, str]:
        return {"logger": "template", "template_id": self.template_id, "registry": self.registry,
                "digest": self.digest, "seconds": f"{self.seconds:.1f}"}


class PullingTemplates:
    """A node's templates: its own registry, and the template registry for ids it has not got (see the module)."""

    def __init__(self, local: TemplateRegistry, data_dir: Path, ref: TemplateRegistryRef, cache: Path,
                 log: Log = _logger.info) -> None:
        self.local = local  # templates.registry.TemplateRegistry
        self.data_dir = data_dir
        self.ref = ref
        self.cache = cache
        self.log = log
        self._locks: dict[str, asyncio.Lock] = {}
        self._checked: dict[str, float] = {}

    def list(self) -> list[TemplateInfo]:
        """The templates in the data dir (built, pulled, or built-in once made)."""
        return self.local.list()

    async def resolve(self, name: str) -> TemplateImage:
        return (await self.resolve_for_create(name))[0]

    async def resolve_for_create(self, name: str) -> tuple[TemplateImage, Pulled | None]:
        """The template, and the pull this call waited for (None: it was here and current)."""
        local = self.local
        info = local.get(name)
        if info is not None and DIGEST_KEY not in info.build:
            return await local.resolve(name), None
        if info is None and not ID_PATTERN.fullmatch(name):
            return await local.resolve(name), None
        template_id = info.id if info is not None else name
        if info is not None and time.monotonic() - self._checked.get(template_id, 0.0) < RECHECK_SECONDS:
            return await local.resolve(template_id), None
        pulled: Pulled | None = None
        began, began_at = time.monotonic(), time.time()  # waiting for another create's pull counts too
        async with self._locks.setdefault(template_id, asyncio.Lock()):
            try:
                found = await asyncio.to_thread(lookup, self.ref, template_id)
            except RegistryError as exc:
                self.log(f"templates: cannot look template {template_id} up in the registry: {exc}")
                if info is not None:  # the registry is away: what we pulled before still serves
                    return await local.resolve(template_id), None
                return await local.resolve(name), None  # a built-in, or "not found"
            if found is None:
                if info is not None:
                    return await local.resolve(template_id), None
                return await local.resolve(name), None  # built-ins, or 404
            if info is None or info.build.get(DIGEST_KEY) != found[0]:
                try:
                    await asyncio.to_thread(pull, self.data_dir, self.ref, template_id, self.cache, self.log, found)
                except RegistryError as exc:
                    _logger.error("pulling template %s failed: %s", template_id, exc)
                    if info is None:
                        raise UserError(503, f"template '{template_id}' could not be pulled from the template "
                                             "registry now: retry later", None, {"Retry-After": "5"}) from None
                else:
                    pulled = Pulled(template_id, self.ref.host, found[0], began_at, time.monotonic() - began)
                local.changed()
            self._checked[template_id] = time.monotonic()
        return await local.resolve(template_id), pulled
