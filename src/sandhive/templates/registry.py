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
import builtins
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from ..node.runtime import TemplateImage
from . import base, layout
from . import code_interpreter as code_interpreter_template
from .info import TEMPLATE_JSON, TemplateInfo

_logger = logging.getLogger("sandhive.templates")
# An alias (a name sandboxes are created by) or a tag: lowercase, digits and `-_.`, optionally `namespace/name`.
ALIAS_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}(/[a-z0-9][a-z0-9._-]{0,62})?")
TAG_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
DEFAULT_TAG = "default"  # the tag of a build that was given none (E2B's)

Log = Callable[[str], None]


class TemplateRegistry:
    """Templates under `<data_dir>/templates/`; `cache_dir` holds build downloads (apt, npm)."""

    def __init__(self, data_dir: Path, cache_dir: Path | None = None, log: Log = _logger.info) -> None:
        self.data_dir = Path(data_dir)
        self.cache_dir = cache_dir
        self.log = log
        self._build_lock = asyncio.Lock()  # not bound to a loop until first used
        self._base_checked = False  # has this process made sure `base` is built from today's recipe?
        self._ci_lock = asyncio.Lock()  # the code interpreter's build (it takes `_build_lock` for base)
        self._ci_checked = False  # likewise for `code-interpreter-v1`
        self._ci_task: asyncio.Task[TemplateInfo] | None = None
        self._index: dict[str, TemplateInfo] = {}
        self._index_stamp: tuple[int, int] | None = None

    @property
    def root(self) -> Path:
        return layout.templates_root(self.data_dir)

    async def resolve(self, name: str) -> TemplateImage:
        """The template called `name` (id or alias). `base` is built if it is not yet, and rebuilt once per
        process if it was built from an older recipe (a host that upgraded Sandhive).

        Raises LookupError for an unknown name, and BuildError if building `base` fails.
        """
        info = self._lookup(name)
        is_base = info.id == base.TEMPLATE_ID if info is not None else name in base.ALIASES + (base.TEMPLATE_ID,)
        if is_base and (info is None or not self._base_checked):
            info = await self._build_base()
        is_ci = (info.id == code_interpreter_template.TEMPLATE_ID if info is not None
                 else name in code_interpreter_template.NAMES)
        if is_ci and (info is None or not self._ci_checked):
            info = await self._build_code_interpreter()
        if info is None:
            raise LookupError(f"template '{name}' not found")
        return info.image(layout.template_dir(self.data_dir, info.id))

    def changed(self) -> None:
        """A template was added or replaced by someone else (a pull): read the index again at the next lookup."""
        self._index_stamp = None

    def list(self) -> list[TemplateInfo]:
        """Built templates, oldest first (`base` appears once it has been built)."""
        return sorted(self._current_index().values(), key=lambda info: (info.created_at, info.id))

    def get(self, name: str) -> TemplateInfo | None:
        """The built template called `name` (id, alias, or `name:tag` with a tag of its build), or None.

        Aliases are per team, so two templates may share one: the API never looks a team's name up here but
        through `catalog.TemplateCatalog`, which knows the owners. Ids are unique.
        """
        return self._lookup(name)

    def matching(self, name: str) -> builtins.list[TemplateInfo]:  # `list` here is the method above
        """Every built template answering to `name` (id, alias, or `name:tag`), the one with that id first."""
        index = self._current_index()
        bare, sep, tag = name.partition(":")
        found = [index[bare]] if bare in index else []
        found += [info for info in index.values() if bare in info.aliases and info.id != bare]
        return [info for info in found if not sep or tag in tags_of(info)]

    # ---- changing templates -------------------------------------------------------------------------
    # Each takes the template's build lock, so it never races a build of the same template, and rewrites
    # template.json in one rename. Sandboxes already running are not affected by any of them except
    # `delete`, which takes their root filesystem away: the API refuses to delete a template that has
    # running sandboxes.

    def delete(self, template_id: str) -> TemplateInfo:
        """Remove a built template (LookupError if there is none). Its directory is renamed out of sight
        first, so a concurrent resolve sees the template or nothing, never half of it."""
        with layout.build_lock(self.data_dir, template_id):
            info = layout.read_built(self.data_dir, template_id)
            if info is None:
                raise LookupError(f"template '{template_id}' not found")
            final = layout.template_dir(self.data_dir, template_id)
            doomed = final.with_name(f".old-{template_id}-{os.getpid()}-{secrets.token_hex(4)}")
            os.rename(final, doomed)
            self._index_stamp = None
            layout.remove_leftovers(self.data_dir, template_id)
        return info

    def set_aliases(self, template_id: str, aliases: Iterable[str],
                    among: Iterable[str] | None = None) -> TemplateInfo:
        """Replace the template's aliases. ValueError for a malformed alias or one another template
        answers to (as its id or an alias; only the templates `among` are compared when given, since names
        are per team); LookupError if the template is not built."""
        wanted = tuple(dict.fromkeys(aliases))
        for alias in wanted:
            if not ALIAS_PATTERN.fullmatch(alias):
                raise ValueError(f"invalid alias {alias!r}: use lowercase letters, digits, '.', '-' and '_' "
                                 "(optionally namespace/name), up to 63 characters each")
        compared = None if among is None else set(among)
        for other in self._current_index().values():
            if other.id == template_id or (compared is not None and other.id not in compared):
                continue
            taken = set(wanted) & set(other.names)
            if taken:
                raise ValueError(f"alias {sorted(taken)[0]!r} is already used by template {other.id!r}")
        return self._rewrite(template_id, lambda info: replace(info, aliases=wanted))

    def set_tags(self, template_id: str, tags: Iterable[str]) -> TemplateInfo:
        """Replace the tags of the template's (one, current) build: `name:tag` resolves to it for each."""
        wanted = list(dict.fromkeys(tags))
        for tag in wanted:
            if not TAG_PATTERN.fullmatch(tag):
                raise ValueError(f"invalid tag {tag!r}: use lowercase letters, digits, '.', '-' and '_'")
        return self._rewrite(template_id, lambda info: replace(info, build={**info.build, "tags": wanted}))

    def _rewrite(self, template_id: str, change: Callable[[TemplateInfo], TemplateInfo]) -> TemplateInfo:
        with layout.build_lock(self.data_dir, template_id):
            info = layout.read_built(self.data_dir, template_id)
            if info is None:
                raise LookupError(f"template '{template_id}' not found")
            updated = change(info)
            directory = layout.template_dir(self.data_dir, template_id)
            tmp = directory / f".{TEMPLATE_JSON}.{os.getpid()}.tmp"
            tmp.write_text(updated.to_json())
            os.replace(tmp, directory / TEMPLATE_JSON)
        self._index_stamp = None  # template.json changed inside the directory: its mtime did not
        return updated

    async def _build_base(self) -> TemplateInfo:
        async with self._build_lock:
            built = self._lookup(base.TEMPLATE_ID)
            if built is not None and self._base_checked:  # built or checked by the call we waited for
                return built
            if built is None:
                self.log("templates: the base template is not built yet: building it now (about a minute)")
            info = await asyncio.to_thread(base.build, self.data_dir, self.cache_dir, log=self.log)
            self._index_stamp = None
            self._base_checked = True
            return info

    async def _build_code_interpreter(self) -> TemplateInfo:
        """`code-interpreter-v1`: built on first use (minutes from PyPI; a copy from the tree cache when another
        data dir built it), `base` first, in a build network namespace made on this loop. The build is a task
        of its own: a caller that gives up (a client's timeout) neither stops it nor pulls its network away."""
        async with self._ci_lock:
            built = self._lookup(code_interpreter_template.TEMPLATE_ID)
            if built is not None and self._ci_checked:
                return built
            if self._ci_task is None or self._ci_task.done():
                self._ci_task = asyncio.get_running_loop().create_task(self._code_interpreter_build())
            task = self._ci_task
        return await asyncio.shield(task)

    async def _code_interpreter_build(self) -> TemplateInfo:
        from . import builder

        ci = code_interpreter_template
        plan = await asyncio.to_thread(ci.plan, self.data_dir, self.cache_dir)
        if plan == "build":
            self.log(f"templates: {ci.TEMPLATE_ID} is not built yet: building it now (a few minutes)")
            await self._build_base()
            async with builder.build_network() as netns:
                info = await asyncio.to_thread(ci.build, self.data_dir, self.cache_dir, log=self.log, netns=netns)
        else:
            info = await asyncio.to_thread(ci.build, self.data_dir, self.cache_dir, log=self.log)
        self._index_stamp = None
        self._ci_checked = True
        return info

    def _lookup(self, name: str) -> TemplateInfo | None:
        index = self._current_index()
        if name in index:
            return index[name]
        found = next((info for info in index.values() if name in info.aliases), None)
        if found is None and ":" in name:
            bare, _, tag = name.rpartition(":")
            found = self._lookup(bare)
            if found is not None and tag not in tags_of(found):
                found = None
        return found

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


def tags_of(info: TemplateInfo) -> list[str]:
    """The tags of a template's build (`default` when it was given none)."""
    tags = info.build.get("tags")
    return list(tags) if isinstance(tags, list) and tags else [DEFAULT_TAG]
