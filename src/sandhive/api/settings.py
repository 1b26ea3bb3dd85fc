"""What one control-plane server is configured with (the CLI builds it from flags and environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..templates.quotas import TemplateQuotas


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None = None  # None: SQLite at <data_dir>/sandhive.db
    max_lifetime_seconds: int | None = None  # None: a sandbox may live as long as its timeouts say
    default_timeout_seconds: int = 300  # E2B's v2 default when a create omits `timeout`
    trust_host_ca: bool = True  # hand the host's CA bundle to every sandbox (TLS through intercepting proxies)
    client_id: str = "sandhive"  # E2B's `clientID`: which node runs the sandbox
    expiry_interval_seconds: float = 1.0  # how often expired sandboxes are looked for
    metrics_interval_seconds: float = 5.0  # how often sandboxes' use and teams' counts are sampled (E2B: 5 s)
    # ---- what one client may cost this server (part "server" of issue 12) ----
    # Running sandboxes a team may have on this server (429 beyond); None: no limit. The default keeps one
    # team from taking a whole host's budget: E2B's own default concurrent-sandbox quota is 20.
    max_sandboxes_per_team: int | None = 20
    # Paused sandboxes a team may keep on this server (each holds its disk and memory image on the node's disk).
    max_paused_per_team: int | None = 100
    max_snapshot_bytes_per_team: int | None = 20 * 2**30  # snapshots a team may keep (429 beyond); None: no limit
    max_json_body_bytes: int = 2**20  # JSON request bodies (413 beyond, checked before they are read)
    max_upload_body_bytes: int = 4 * 2**30  # a template-files tar, streamed to disk
    body_timeout_seconds: float = 30.0  # a whole JSON body, or a pause within an upload (408 beyond)
    template_quotas: TemplateQuotas = TemplateQuotas()  # per team: templates, builds, build minutes, upload bytes
    # Template builds (templates.build_sandbox.Limits): what one build may use before it fails as the user's error.
    build_memory_mb: int = 4096
    build_cpus: float = 2.0
    build_pids: int = 4096
    build_timeout_seconds: int = 1800
    # -- sandbox egress (node/network.py) --
    egress_allow: tuple[str, ...] = ()  # CIDRs sandboxes may reach despite the default drops (private ranges, ...)
    # -- volumes (api/volumes.py): each volume's size, and what a team's volumes may take together (429 beyond)
    volume_size_mb: int = 1024
    team_volume_mb: int = 10240
    # -- the action audit log (api/audit.py): off with `serve --no-audit`; events older than the retention go
    audit: bool = True
    audit_retention_days: int = 7
    # -- many hosts (sandhive.cluster): the token nodes and control planes share; None: an embedded node --
    cluster_token: str | None = None
