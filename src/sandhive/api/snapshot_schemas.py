"""The JSON shapes of E2B's snapshot and fork routes (E2B's OpenAPI: SandboxSnapshotRequest, SnapshotInfo,
SandboxForkRequest and the fork's per-sandbox result)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .schemas import Sandbox

MAX_FORK_COUNT = 100  # the API's bound (the released SDK checks 1..20 before sending)


class SnapshotRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = None
    memory: bool | None = None  # false: a filesystem-only snapshot (not on this backend yet: 409)


class SnapshotInfo(BaseModel):
    snapshotID: str  # `<id>:default`, or `<team-slug>/<name>:default` when named
    names: list[str]


class ForkRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    timeout: int | None = None
    count: int = Field(default=1, ge=1, le=MAX_FORK_COUNT)


class ForkError(BaseModel):
    code: int
    message: str


class ForkResult(BaseModel):
    """One fork: the sandbox it became, or why it did not start."""

    sandbox: Sandbox | None = None
    error: ForkError | None = None
