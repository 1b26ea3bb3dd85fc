"""Which templates a team sees, and what a name means to it: templates belong to teams.

A name a team gives (sandbox create, `GET /templates/aliases/{alias}`, `FROM name` in a build, `fromTemplate`)
resolves in this order, and nowhere else:

1. the team's own template: its id, its name in the team's namespace, one of its aliases (`name:tag` picks a tag);
2. a built-in of the server: a template built on the host, with no owning team (`base`, `code-interpreter-v1`);
3. another team's **public** template, by its full name `team-slug/name` or its id.

Another team's private template is never found: the caller gets exactly the "not found" of a name that does not
exist, so names and ids are no oracle. Built-in names are reserved: no team can register them (no shadowing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..store import Store, TemplateOwner
from . import base
from . import code_interpreter as code_interpreter_template
from .info import TemplateInfo
from .registry import tags_of

# Names a team can never register: the server's built-ins and the SDKs' defaults (E2B's code-interpreter SDK
# asks for `code-interpreter-v1`), so that no team's template answers to them.
RESERVED_NAMES = frozenset({*base.ALIASES, base.TEMPLATE_ID, *code_interpreter_template.NAMES,
                            "e2bdev/base", "e2bdev/code-interpreter", "mcp-gateway", "desktop"})


class Registry(Protocol):
    """What the catalog needs of `templates.registry.TemplateRegistry`."""

    async def resolve(self, name: str) -> Any: ...
    def get(self, name: str) -> TemplateInfo | None: ...
    def matching(self, name: str) -> list[TemplateInfo]: ...
    def list(self) -> Sequence[TemplateInfo]: ...


@dataclass(frozen=True)
class Found:
    """A template as one team sees it: built (`info`), owned by a team (`owner`; None for a built-in), or both."""

    template_id: str
    info: TemplateInfo | None
    owner: TemplateOwner | None

    @property
    def builtin(self) -> bool:
        return self.owner is None


def split_tag(name: str) -> tuple[str, str | None]:
    bare, sep, tag = name.partition(":")
    return bare, (tag if sep else None)


class TemplateCatalog:
    """Team-scoped lookups over the registry (built templates) and the store (who owns which)."""

    def __init__(self, store: Store, registry: Registry | None) -> None:
        self.store = store
        self.registry = registry

    # ---- blocking lookups (call through asyncio.to_thread) ----------------------------------------------

    def find_blocking(self, team_id: str, name: str) -> Found | None:
        bare, tag = split_tag(name.strip())
        slug, sep, rest = bare.partition("/")
        mine = rest if sep and slug == self.store.team_slug_of(team_id) else bare  # `my-slug/name` is mine
        found = self._own(team_id, mine) or self._builtin(name) or self._public(bare)
        if (found is not None and tag is not None and found.owner is not None
                and (found.info is None or tag not in tags_of(found.info))):
            return None
        return found

    def _info(self, template_id: str) -> TemplateInfo | None:
        return self.registry.get(template_id) if self.registry is not None else None

    def _own(self, team_id: str, bare: str) -> Found | None:
        owner = self.store.team_template(team_id, bare)
        if owner is None:  # an alias given later (PUT /templates/{id}/aliases) lives in template.json
            for candidate in self.store.team_templates(team_id):
                info = self._info(candidate.template_id)
                if info is not None and bare in info.aliases:
                    return Found(candidate.template_id, info, candidate)
            return None
        return Found(owner.template_id, self._info(owner.template_id), owner)

    def _builtin(self, name: str) -> Found | None:
        if self.registry is None:
            return None
        candidates = self.registry.matching(name)
        if not candidates:
            return None
        owned = self.store.owned_template_ids()
        info = next((c for c in candidates if c.id not in owned), None)
        return Found(info.id, info, None) if info is not None else None

    def _public(self, bare: str) -> Found | None:
        slug, sep, rest = bare.partition("/")
        owner = self.store.public_template(slug, rest) if sep else None
        if owner is None:
            by_id = self.store.template_owner(bare)
            owner = by_id if by_id is not None and by_id.public else None
        return Found(owner.template_id, self._info(owner.template_id), owner) if owner is not None else None

    def builtin_names(self) -> set[str]:
        """Every name a built-in answers to, and the reserved ones: names no team may take."""
        names = set(RESERVED_NAMES)
        if self.registry is not None:
            owned = self.store.owned_template_ids()
            for info in self.registry.list():
                if info.id not in owned:
                    names.update(info.names)
        return names

    def visible_blocking(self, team_id: str) -> list[tuple[TemplateInfo, TemplateOwner | None]]:
        """What `GET /templates` lists: the team's built templates and the server's built-ins, oldest first."""
        if self.registry is None:
            return []
        mine = {owner.template_id: owner for owner in self.store.team_templates(team_id)}
        owned = self.store.owned_template_ids()
        return [(info, mine.get(info.id)) for info in self.registry.list() if info.id in mine or info.id not in owned]

    # ---- async wrappers ---------------------------------------------------------------------------------

    async def find(self, team_id: str, name: str) -> Found | None:
        return await asyncio.to_thread(self.find_blocking, team_id, name)

    async def resolve(self, team_id: str, name: str) -> Any:
        """The `TemplateImage` the team means by `name` (LookupError if it sees none). `base` and
        `code-interpreter-v1` are built on first use, as the registry does."""
        if self.registry is None:
            raise LookupError(f"template '{name}' not found")
        found = await self.find(team_id, name)
        if found is None or found.info is None:
            bare = split_tag(name)[0]
            if found is None and bare in (*base.ALIASES, base.TEMPLATE_ID, *code_interpreter_template.NAMES):
                return await self.registry.resolve(bare)
            raise LookupError(f"template '{name}' not found")
        return await self.registry.resolve(found.template_id)
