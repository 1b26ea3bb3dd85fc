"""How the API finds templates: anything that turns a template id or alias into a `TemplateImage`, and lists
the built ones.

`sandhive.templates.registry.TemplateRegistry` is the real one; the API depends only on these protocols.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from ..node.runtime import TemplateImage
from .schemas import TemplateListing


class TemplateSummary(Protocol):
    """What `GET /templates` reports of a built template (`templates.info.TemplateInfo` has these).
    Read-only properties: a frozen dataclass satisfies them."""

    @property
    def id(self) -> str: ...
    @property
    def aliases(self) -> tuple[str, ...]: ...
    @property
    def cpu_count(self) -> int: ...
    @property
    def memory_mb(self) -> int: ...
    @property
    def disk_mb(self) -> int: ...
    @property
    def created_at(self) -> str: ...  # ISO 8601


class TemplateResolver(Protocol):
    async def resolve(self, name: str) -> TemplateImage:
        """The built template called `name` (id or alias); LookupError when there is none."""
        ...

    def list(self) -> Sequence[TemplateSummary]:
        """The built templates (a template such as `base` that is built on first use appears once built)."""
        ...


def template_listing(info: TemplateSummary, public: bool = True) -> TemplateListing:
    """One template as E2B's `GET /templates` shows it: one of the team's own (`public` as its owner set it) or
    a built-in (public). Only complete builds are listed (`ready`); a template never changes after its build,
    so it was last updated when it was created."""
    created = datetime.fromisoformat(info.created_at)
    return TemplateListing(templateID=info.id, aliases=list(info.aliases), cpuCount=info.cpu_count,
                           memoryMB=info.memory_mb, diskSizeMB=info.disk_mb, public=public, buildStatus="ready",
                           createdAt=created, updatedAt=created)
