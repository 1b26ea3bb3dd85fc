"""`template.json`: what a built template is, besides its files.

The registry reads it to resolve names (id and aliases) and to hand backends a `TemplateImage`; the
API reports its sizes and defaults. It is written once, by the build, into the template's directory
before that directory is renamed into place, so a template with a readable `template.json` is complete.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..node.runtime import TemplateImage

TEMPLATE_JSON = "template.json"
ROOTFS = "rootfs"
# Ids name directories: no dots (those are temp and lock files), no slashes.
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


@dataclass(frozen=True)
class TemplateInfo:
    """One built template. `envd` says what the template expects of envd (the version it was built
    against, where the system image is mounted); `build` records how and how fast it was built."""

    id: str
    aliases: tuple[str, ...] = ()
    default_user: str = "user"
    default_workdir: str = "/home/user"
    env: dict[str, str] = field(default_factory=dict)
    start_cmd: str | None = None
    ready_cmd: str | None = None
    cpu_count: int = 2
    memory_mb: int = 512
    disk_mb: int = 1024
    backend: str | None = None  # a backend the template must run on (None: the server's)
    created_at: str = field(default_factory=lambda: now_iso())
    envd: dict[str, Any] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not ID_PATTERN.fullmatch(self.id):
            raise ValueError(f"invalid template id {self.id!r} (want {ID_PATTERN.pattern})")

    @property
    def names(self) -> tuple[str, ...]:
        """Every name this template answers to: its id, then its aliases."""
        return (self.id, *self.aliases)

    def image(self, template_dir: Path) -> TemplateImage:
        """The template as a backend runs it, given the directory it lives in."""
        return TemplateImage(template_id=self.id, rootfs=template_dir / ROOTFS, default_user=self.default_user,
                             default_workdir=self.default_workdir, env=dict(self.env), start_cmd=self.start_cmd,
                             ready_cmd=self.ready_cmd,
                             cpu_count=self.cpu_count, memory_mb=self.memory_mb, disk_mb=self.disk_mb,
                             backend=self.backend)

    def to_json(self) -> str:
        data = asdict(self)
        data["aliases"] = list(self.aliases)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TemplateInfo:
        """Parse `template.json`; unknown keys (from a newer Sandhive) are ignored, missing ones default."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("template.json is not an object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["aliases"] = tuple(known.get("aliases") or ())
        return cls(**known)

    def write(self, template_dir: Path) -> None:
        (template_dir / TEMPLATE_JSON).write_text(self.to_json())

    @classmethod
    def read(cls, template_dir: Path) -> TemplateInfo:
        return cls.from_json((template_dir / TEMPLATE_JSON).read_text())


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
