"""What a caller asks the node for: a sandbox of a template with limits, and who it becomes once started.

The node, not the caller, picks the sandbox id: a warm-pool sandbox already has one (its hostname and
network namespace carry it from the moment it starts), so the caller learns the id from the handle that
`Node.create` returns and derives the sandbox's access token from it (`Identity.token_for`).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .admission import Resources
from .runtime import SandboxSpec, TemplateImage, VolumeMount

ID_ALPHABET = string.ascii_lowercase + string.digits
ID_LENGTH = 20  # after the leading "i", like E2B's ids; no dashes, the proxy splits <port>-<id> on them


def new_sandbox_id() -> str:
    return "i" + "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


@dataclass(frozen=True)
class CreateRequest:
    """One sandbox of `template` with these limits. Two equal requests can be served by the same warm pool."""

    template: TemplateImage
    cpu_count: int
    memory_mb: int
    disk_mb: int
    allow_internet_access: bool = True
    volumes: tuple[VolumeMount, ...] = ()  # a sandbox with volumes is never a warm-pool one

    @classmethod
    def of(cls, template: TemplateImage, allow_internet_access: bool = True,
           volumes: tuple[VolumeMount, ...] = ()) -> CreateRequest:
        """The template's own limits."""
        return cls(template, template.cpu_count, template.memory_mb, template.disk_mb, allow_internet_access,
                   volumes)

    @property
    def resources(self) -> Resources:
        return Resources(memory_mb=self.memory_mb, cpu_count=self.cpu_count)

    def spec(self, sandbox_id: str) -> SandboxSpec:
        return SandboxSpec(sandbox_id=sandbox_id, template=self.template, cpu_count=self.cpu_count,
                           memory_mb=self.memory_mb, disk_mb=self.disk_mb,
                           allow_internet_access=self.allow_internet_access, volumes=self.volumes)


@dataclass(frozen=True)
class Identity:
    """Who a started sandbox becomes at `/init`: its environment, token and defaults (the node adds its id,
    template and clock; the host's CA bundle was given when it started). `token_for(sandbox_id)` gives
    envd's access token; None leaves envd open (tests that talk to envd directly)."""

    env_vars: dict[str, str] = field(default_factory=dict)
    default_user: str | None = None
    default_workdir: str | None = None
    token_for: Callable[[str], str] | None = None

    def init_body(self, sandbox_id: str, template_id: str) -> dict:
        body: dict = {"sandboxId": sandbox_id, "templateId": template_id, "envVars": self.env_vars,
                      "timestamp": datetime.now(UTC).isoformat()}
        token = self.token_for(sandbox_id) if self.token_for else None
        for key, value in (("accessToken", token), ("defaultUser", self.default_user),
                           ("defaultWorkdir", self.default_workdir)):
            if value:
                body[key] = value
        return body
