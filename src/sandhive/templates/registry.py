"""The template registry: template ids and aliases → the `TemplateImage` a backend runs.

The API resolves a name on every sandbox create, so resolving a built template costs a `stat` of the
templates directory (the index is re-read only when a template was added or removed). The `base`
template is built on first use rather than shipped: it is made from the host's Debian mirror. That
first use waits about a minute, with progress in the log; concurrent first uses wait for one build
(an asyncio lock in this process, a file lock across processes), and the blocking build runs in a
thread so the server keeps serving meanwhile. `make up` builds it ahead
(`python -m sandhive.templates.base build`) so the first `Sandbox.create()` is fast.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..node.runtime import TemplateImage
from . import base, layout
from .info import TemplateInfo

_logger = logging.getLogger("sandhive.templates")

Log = Callable[[str], None]


class TemplateRegistry:
    """Templates under `<data_dir>/templates/`; `cache_dir` holds build downloads (apt, npm)."""

    def __init__(self, data_dir: Path, cache_dir: Path | None = None, log: Log = _logger.info) -> None:
        self.data_dir = Path(data_dir)
        self.cache_dir = cache_dir
        self.log = log
        self._build_lock = asyncio.Lock()  # not bound to a loop until first used
        self._index: dict[str, TemplateInfo] = {}
        self._index_stamp: tuple[int, int] | None = None

    @property
    def root(self) -> Path:
        return layout.templates_root(self.data_dir)

    async def resolve(self, name: str) -> TemplateImage:
        """The template called `name` (id or alias). `base` is built if it is not yet.

        Raises LookupError for an unknown name, and BuildError if building `base` fails.
        """
        info = self._lookup(name)
        if info is None and name in base.ALIASES + (base.TEMPLATE_ID,):
            info = await self._build_base()
        if info is None:
            raise LookupError(f"template '{name}' not found")
        return info.image(layout.template_dir(self.data_dir, info.id))

    def list(self) -> list[TemplateInfo]:
        """Built templates, oldest first (`base` appears once it has been built)."""
        return sorted(self._current_index().values(), key=lambda info: (info.created_at, info.id))

    async def _build_base(self) -> TemplateInfo:
        async with self._build_lock:
            built = self._lookup(base.TEMPLATE_ID)
            if built is not None:  # built by the call we waited for
                return built
            self.log("templates: the base template is not built yet: building it now (about a minute)")
            info = await asyncio.to_thread(base.build, self.data_dir, self.cache_dir, log=self.log)
            self._index_stamp = None
            return info

    def _lookup(self, name: str) -> TemplateInfo | None:
        index = self._current_index()
        if name in index:
            return index[name]
        return next((info for info in index.values() if name in info.aliases), None)

    def _current_index(self) -> dict[str, TemplateInfo]:
        """id → info of every complete template, re-read when the templates directory changed.

        Templates appear and disappear by rename within that directory, which changes its mtime. An
        mtime from the last second is not trusted (a rename in the same clock tick would not change it).
        """
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._index_stamp:
            self._index = self._read_index()
            self._index_stamp = stamp if time.time_ns() - st.st_mtime_ns > 1_000_000_000 else None
        return self._index

    def _read_index(self) -> dict[str, TemplateInfo]:
        index: dict[str, TemplateInfo] = {}
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            info = layout.read_built(self.data_dir, entry.name)
            if info is None:
                continue
            if info.id != entry.name:
                self.log(f"templates: ignoring {entry}: its template.json says id {info.id!r}")
                continue
            index[info.id] = info
        return index
