"""The JSON bodies of E2B's REST API, with E2B's own key names (camelCase, but `allow_internet_access`).

Field names are the wire keys on purpose: the released SDK reads exactly these, and a reader can match
them against docs/wire.md §2.3–§2.4 without an alias table in between.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    """Every error the API answers: the SDK parses `code` and `message` before it looks at the status."""

    code: int
    message: str
    error_code: str | None = None


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AutoResume(_Request):
    enabled: bool = False


class NewSandboxV2(_Request):
    """`POST /v2/sandboxes`. `timeout` is sent only when the user gives one: the server default applies."""

    templateID: str = Field(min_length=1)
    timeout: int | None = None
    metadata: dict[str, str] | None = None
    envVars: dict[str, str] | None = None
    autoPause: bool | None = None
    autoPauseMemory: bool | None = None
    autoResume: AutoResume | None = None
    allow_internet_access: bool | None = None
    network: dict[str, Any] | None = None
    mcp: dict[str, Any] | None = None
    iam: dict[str, Any] | None = None
    volumeMounts: list[dict[str, Any]] | None = None


class SandboxNetworkUpdate(_Request):
    """`PUT /sandboxes/{id}/network`: the whole egress configuration; omitted fields are cleared."""

    allowOut: list[str] | None = None
    denyOut: list[str] | None = None
    dnsServers: list[str] | None = None
    egressProxy: dict[str, Any] | None = None
    rules: dict[str, Any] | None = None
    allow_internet_access: bool | None = None


class NewSandbox(NewSandboxV2):
    """`POST /sandboxes` (v1, older SDKs): the same fields plus `secure`, which is always on here."""

    secure: bool | None = None


class ConnectSandbox(_Request):
    timeout: int | None = None
    memory: bool | None = None


class PauseBody(_Request):
    """`POST /sandboxes/{id}/pause`: `memory` false keeps only the files (the resume cold-boots)."""

    memory: bool | None = None
    requireHealthyGuest: bool | None = None


class ResumeBody(_Request):
    """`POST /sandboxes/{id}/resume` (deprecated): `autoPause` is accepted and ignored, as E2B now does."""

    timeout: int | None = None
    autoPause: bool | None = None


class Persistence(BaseModel):
    """What the server's backend keeps of a sandbox (docs/persistence.md)."""

    pauseModes: list[str] = Field(default_factory=list, description="memory and/or filesystem")
    memorySnapshots: bool = False


class TimeoutBody(_Request):
    timeout: int


class RefreshBody(_Request):
    duration: int | None = None


class Sandbox(BaseModel):
    """Answer to create and connect."""

    templateID: str
    sandboxID: str
    clientID: str
    envdVersion: str
    envdAccessToken: str
    alias: str | None = None
    domain: str | None = None
    trafficAccessToken: str | None = None


class Lifecycle(BaseModel):
    autoResume: bool = False
    onTimeout: Literal["kill", "pause"] = "kill"


class ListedSandbox(BaseModel):
    templateID: str
    sandboxID: str
    clientID: str
    alias: str | None = None
    startedAt: datetime
    endAt: datetime
    cpuCount: int
    memoryMB: int
    diskSizeMB: int
    state: Literal["running", "paused"]
    envdVersion: str
    metadata: dict[str, str] = Field(default_factory=dict)


class SandboxDetail(ListedSandbox):
    envdAccessToken: str
    allowInternetAccess: bool | None = None
    network: dict[str, Any] | None = None  # the honoured SandboxNetworkConfig keys it was created with
    domain: str | None = None
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)


class SandboxMetric(BaseModel):
    timestamp: datetime
    timestampUnix: int
    cpuCount: int
    cpuUsedPct: float
    memUsed: int
    memTotal: int
    memCache: int
    diskUsed: int
    diskTotal: int


class SandboxLog(BaseModel):
    timestamp: datetime
    line: str


class SandboxLogEntry(BaseModel):
    timestamp: datetime
    message: str
    level: Literal["debug", "info", "warn", "error"] = "info"
    fields: dict[str, str] = Field(default_factory=dict)


class SandboxLogs(BaseModel):
    logs: list[SandboxLog]
    logEntries: list[SandboxLogEntry]


class Health(BaseModel):
    status: str
    version: str
    backend: str
    platform: str | None = Field(None, description="gvisor: the runsc platform in use (systrap or ptrace)")
    accelerator: str | None = Field(None, description="microvm: kvm, or tcg (emulation) where KVM cannot run")
    persistence: Persistence = Field(default_factory=Persistence)


class TemplateListing(BaseModel):
    """One entry of `GET /templates` (E2B's shape, minus the build history Sandhive does not keep)."""

    templateID: str
    aliases: list[str]
    cpuCount: int
    memoryMB: int
    diskSizeMB: int
    public: bool
    buildStatus: Literal["ready"]
    createdAt: datetime
    updatedAt: datetime


class WarmPool(BaseModel):
    """One warm pool: sandboxes of one template and size, started ahead (Sandhive's own, not E2B's)."""

    templateID: str
    backend: str
    cpuCount: int
    memoryMB: int
    diskSizeMB: int
    allow_internet_access: bool
    ready: int = Field(description="sandboxes waiting to be handed out")
    starting: int = Field(description="sandboxes being started for the pool")
    target: int = Field(description="ready + starting the pool aims at (base size, grown by recent demand)")
    hits: int
    misses: int
    fillMs: float = Field(description="how long starting one takes (moving average)")
    pinned: bool = Field(description="kept warm without demand")


class NodeStatus(BaseModel):
    """`GET /sandhive/node`: the host budget, what is reserved from it, and the warm pools."""

    backend: str
    memoryBudgetMB: int
    cpuBudget: float
    reservedMemoryMB: int
    reservedCpus: int
    pooledMemoryMB: int
    pooledCpus: int
    pools: list[WarmPool]
    egressDeniedTotal: int | None = None  # egress attempts denied since the server started (admin keys only)
    # Admission by real use (node/admission.py): the limits may add up to memoryBudgetMB × memoryOvercommit,
    # what sandboxes really use (inUseMemoryMB) must fit memoryBudgetMB; at most maxSandboxes run at once.
    memoryOvercommit: float = 1.0
    inUseMemoryMB: int = 0
    sandboxes: int = 0  # running on this node, pooled ones included
    maxSandboxes: int | None = None
    memoryPressure: str | None = None  # why the node admits nothing now, if it is short of real memory
