"""The control plane's REST API: E2B's endpoints over a node, a template resolver and the store.

`create_app(settings, node, templates)` builds it; `sandhive serve` runs it behind the edge proxy.
"""

from .app import create_app
from .settings import Settings
from .templates import TemplateResolver

__all__ = ["Settings", "TemplateResolver", "create_app"]
