"""The node API's wire, version 1 (`/node/v1`): pydantic models shared by the node (`node_api`) and the control
plane (`remote_node`), and their conversions to and from the node's own dataclasses.

Everything a control plane sends is about one sandbox or the node as a whole; templates travel by id (each
node resolves them in its own registry), identities without their token (both sides derive it from the
cluster secret, `cluster_secret`), so no credential of a sandbox crosses the wire.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter

from ..node.egress import EgressPolicy
from ..node.egress_audit import EgressEntry
from ..node.node import LogNote
from ..node.pool import PoolStatus
from ..node.runtime import ResourceUsage, SandboxHandle, TemplateImage

API_PREFIX = "/node/v1"
TOKEN_HEADER = "Sandhive-Cluster-Token"  # the cluster token, on the node API and on proxied sandbox traffic
# Keys the node adds to a handle's state for the control plane; stripped before the node's runtime sees it.
NODE_ID_KEY = "cluster_node"
NODE_PROXY_KEY = "cluster_proxy"
CREATE_LOG_KEY = "cluster_create_log"  # what the node did for the create before the sandbox ran (`CREATE_LOG`)


def cluster_secret(token: str) -> bytes:
    """The secret sandboxes' access tokens are derived from (`api.tokens.access_token`), the same on every node
    and control-plane replica of a cluster, and not the cluster token itself."""
    return hmac.new(token.encode(), b"sandhive sandbox access tokens", hashlib.sha256).hexdigest().encode()


def read_token(path: Path) -> str:
    """The cluster token from `--cluster-token-file` (first line; at least 32 characters)."""
    token = path.read_text().strip()
    if len(token) < 32:
        raise ValueError(f"{path}: the cluster token must be at least 32 characters")
    return token


class Handle(BaseModel):
    sandbox_id: str
    backend: str
    address: str
    state: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, handle: SandboxHandle) -> Handle:
        return cls(sandbox_id=handle.sandbox_id, backend=handle.backend, address=handle.address,
                   state=dict(handle.state))

    def to_remote(self) -> SandboxHandle:
        """The handle as the control plane keeps it: the node's id and proxy stay in its state."""
        return SandboxHandle(self.sandbox_id, self.backend, self.address, dict(self.state))

    def to_handle(self) -> SandboxHandle:
        """The handle as the node's runtime knows it (without what the node added for control planes)."""
        state = {k: v for k, v in self.state.items() if not k.startswith("cluster_")}
        return SandboxHandle(self.sandbox_id, self.backend, self.address, state)


class Template(BaseModel):
    """A template as the control plane needs it to make a request: its defaults (the tree stays on the node)."""

    template_id: str
    default_user: str
    default_workdir: str
    env: dict[str, str]
    start_cmd: str | None
    ready_cmd: str | None
    cpu_count: int
    memory_mb: int
    disk_mb: int
    backend: str | None

    @classmethod
    def of(cls, image: TemplateImage) -> Template:
        return cls(template_id=image.template_id, default_user=image.default_user,
                   default_workdir=image.default_workdir, env=dict(image.env), start_cmd=image.start_cmd,
                   ready_cmd=image.ready_cmd, cpu_count=image.cpu_count, memory_mb=image.memory_mb,
                   disk_mb=image.disk_mb, backend=image.backend)

    def to_image(self, rootfs: Path = Path("/nonexistent-remote-template")) -> TemplateImage:
        return TemplateImage(self.template_id, rootfs, self.default_user, self.default_workdir, dict(self.env),
                             self.start_cmd, self.ready_cmd, self.cpu_count, self.memory_mb, self.disk_mb,
                             self.backend)


class Mount(BaseModel):
    """A volume of this node's (cluster/node_volume_api.py) shown at `path` in the sandbox."""

    volume_id: str
    path: str


class CreateBody(BaseModel):
    template_id: str
    cpu_count: int
    memory_mb: int
    disk_mb: int
    allow_internet_access: bool = True
    env_vars: dict[str, str] = Field(default_factory=dict)
    default_user: str | None = None
    default_workdir: str | None = None
    volumes: list[Mount] = Field(default_factory=list)


class Egress(BaseModel):
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    domains: list[str] = Field(default_factory=list)
    rules: list[tuple[str, list[tuple[str, str]]]] = Field(default_factory=list)

    @classmethod
    def of(cls, policy: EgressPolicy) -> Egress:
        return cls(allow=[str(n) for n in policy.allow], deny=[str(n) for n in policy.deny],
                   domains=list(policy.domains), rules=[(p, list(hs)) for p, hs in policy.rules])

    def to_policy(self) -> EgressPolicy:
        return EgressPolicy(allow=tuple(ipaddress.ip_network(n) for n in self.allow),
                            deny=tuple(ipaddress.ip_network(n) for n in self.deny), domains=tuple(self.domains),
                            rules=tuple((p, tuple((n, v) for n, v in hs)) for p, hs in self.rules))


class SetEgress(BaseModel):
    handle: Handle
    policy: Egress


# A sandbox's usage crosses the wire as the node's own `ResourceUsage` (a dataclass pydantic checks).
USAGE = TypeAdapter(ResourceUsage)
# A create's own log entries (a template pulled for it), kept in the handle's state under CREATE_LOG_KEY, so the
# store keeps them with the sandbox and any replica shows them first in the sandbox's logs.
CREATE_LOG = TypeAdapter(list[LogNote])


class Logs(BaseModel):
    lines: list[str]


class EgressEntries(BaseModel):
    entries: list[EgressEntry]  # the node's own dataclass, checked and serialised by pydantic


class Running(BaseModel):
    running: bool


class Reconcile(BaseModel):
    known: list[Handle]
    resources: dict[str, tuple[int, int]] = Field(default_factory=dict)  # id → (memory MB, vCPUs)
    paused: list[str] = Field(default_factory=list)


class Alive(BaseModel):
    alive: list[str]


class Start(BaseModel):
    prewarm: list[str] = Field(default_factory=list)  # template ids kept warm from now on


class Status(BaseModel):
    """The node as the control plane polls it every `POLL_SECONDS`: its identity, budget, pools, the templates it
    has (for placement) and the ids of the sandboxes it runs (so the control plane notices deaths without a watch
    per sandbox)."""

    version: int = 1
    node_id: str
    backend: str
    proxy: str  # host:port of its node-side proxy, as the control plane reaches it
    memory_mb: int
    cpus: float
    memory_overcommit: float
    max_sandboxes: int | None
    reserved_memory_mb: int
    reserved_cpus: int
    pooled_memory_mb: int
    pooled_cpus: int
    in_use_mb: int
    sandboxes: int
    pressure: str | None
    pools: list[PoolStatus]  # the node's own dataclass: pydantic checks and serialises it as a model
    running: list[str]
    # The ids of the templates in its data dir, which a create there needs neither pull nor build (placement
    # prefers these nodes). Added within version 1: a node that does not send it has none as far as placement goes.
    templates: list[str] = Field(default_factory=list)
    boot_id: str = ""  # new at every start of the node process: a change tells control planes it restarted
    reconciled: bool = False  # has a control plane reconciled this process yet (adopted what still runs)?
    egress_denied_total: int = 0  # egress attempts its sandboxes were refused (the egress audit), since it started
    pause_modes: list[str] = Field(default_factory=list)  # its runtime's `Persistence` (node_saved_api)
    memory_snapshots: bool = False


# ---- template builds on a node (cluster/node_builds.py, cluster/remote_builds.py) ----------------------------
BUILDS_PREFIX = "/builds"


class BuildJob(BaseModel):
    """A planned template build, as a control plane sends it to a node: the Dockerfile with team names already
    rewritten to template ids, and the build's settings; its context was PUT before, by `build_id`."""

    template_id: str
    build_id: str
    dockerfile: str
    has_context: bool = False
    aliases: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    cpu_count: int
    memory_mb: int
    disk_mb: int
    start_cmd: str | None = None
    ready_cmd: str | None = None
    build_args: dict[str, str] = Field(default_factory=dict)
    no_cache: bool = False
    trust_host_ca: bool = True
    build_memory_mb: int = 4096
    build_cpus: float = 2.0
    build_pids: int = 4096
    build_timeout_seconds: int = 1800


class BuildEvent(BaseModel):
    """One line of a node build's NDJSON answer: a log line, then either the result (`info`: template.json, and
    the pushed image's `digest`) or a failure (`error`, the build step, the log's last lines)."""

    line: str | None = None
    info: dict[str, Any] | None = None
    digest: str | None = None
    error: str | None = None
    internal: bool = False  # the failure is the node's, not the Dockerfile's
    step: str | None = None
    log_tail: list[str] = Field(default_factory=list)
