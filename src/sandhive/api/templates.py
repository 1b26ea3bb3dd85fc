"""How the API finds templates: anything that turns a template id or alias into a `TemplateImage`.

`sandhive.templates.registry.TemplateRegistry` is the real one; the API depends only on this protocol.
"""

from __future__ import annotations

from typing import Protocol

from ..node.runtime import TemplateImage


class TemplateResolver(Protocol):
    async def resolve(self, name: str) -> TemplateImage:
        """The built template called `name` (id or alias); LookupError when there is none."""
        ...
