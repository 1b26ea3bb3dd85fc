"""A template's aliases and tags, changed after its build, on a control plane with remote nodes (issue 17).

A single host rewrites the built template's template.json. Through a control plane, the template's template.json
is the label of its image in the template registry, which nodes pull by digest: rewriting it would make every
node pull the whole template again for a rename. Names are the control plane's business only (nodes resolve by
id), so they live where the team's other names live: the template's `team_templates` row (`aliases`, `tags`;
NULL: as the image says). Every replica reads the row over the image's label whenever it looks a template up,
so a change through one replica holds on all at once, and survives rebuilds (a rebuild keeps the aliases, and
sets its own tags, as on a single host).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Protocol

from ..templates.info import TemplateInfo
from ..templates.registry import ALIAS_PATTERN, TAG_PATTERN


class NameStore(Protocol):
    """What this needs of the API's store (`store.build_sharing.BuildSharingQueries`)."""

    def template_names(self, template_id: str) -> tuple[list[str] | None, list[str] | None] | None: ...
    def set_template_names(self, template_id: str, **values: list[str]) -> bool: ...


def overlay(info: TemplateInfo, store: NameStore | None) -> TemplateInfo:
    """`info` with the aliases and tags the store holds for it."""
    if store is None:
        return info
    names = store.template_names(info.id)
    if names is None:
        return info
    aliases, tags = names
    if aliases is not None:
        info = replace(info, aliases=tuple(aliases))
    if tags is not None:
        info = replace(info, build={**info.build, "tags": list(tags)})
    return info


def set_aliases(store: NameStore, get: Callable[[str], TemplateInfo | None], template_id: str,
                aliases: Iterable[str], among: Iterable[str] | None) -> TemplateInfo:
    """As `TemplateRegistry.set_aliases`: ValueError for a malformed alias or one another of the team's
    templates (`among`) answers to, LookupError for a template that is not built or owned."""
    info = get(template_id)
    if info is None:
        raise LookupError(f"template '{template_id}' not found")
    wanted = list(dict.fromkeys(aliases))
    for alias in wanted:
        if not ALIAS_PATTERN.fullmatch(alias):
            raise ValueError(f"invalid alias {alias!r}: use lowercase letters, digits, '.', '-' and '_' "
                             "(optionally namespace/name), up to 63 characters each")
    for other_id in among or ():
        other = get(other_id) if other_id != template_id else None
        taken = set(wanted) & set(other.names) if other is not None else set()
        if taken:
            raise ValueError(f"alias {sorted(taken)[0]!r} is already used by template {other_id!r}")
    if not store.set_template_names(template_id, aliases=wanted):
        raise LookupError(f"template '{template_id}' not found")
    return replace(info, aliases=tuple(wanted))


def set_tags(store: NameStore, get: Callable[[str], TemplateInfo | None], template_id: str,
             tags: Iterable[str]) -> TemplateInfo:
    """As `TemplateRegistry.set_tags`: the tags `name:tag` resolves by."""
    info = get(template_id)
    if info is None:
        raise LookupError(f"template '{template_id}' not found")
    wanted = list(dict.fromkeys(tags))
    for tag in wanted:
        if not TAG_PATTERN.fullmatch(tag):
            raise ValueError(f"invalid tag {tag!r}: use lowercase letters, digits, '.', '-' and '_'")
    if not store.set_template_names(template_id, tags=wanted):
        raise LookupError(f"template '{template_id}' not found")
    return replace(info, build={**info.build, "tags": wanted})
