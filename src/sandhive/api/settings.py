"""What one control-plane server is configured with (the CLI builds it from flags and environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None = None  # None: SQLite at <data_dir>/sandhive.db
    max_lifetime_seconds: int | None = None  # None: a sandbox may live as long as its timeouts say
    default_timeout_seconds: int = 300  # E2B's v2 default when a create omits `timeout`
    trust_host_ca: bool = True  # hand the host's CA bundle to every sandbox (TLS through intercepting proxies)
    client_id: str = "sandhive"  # E2B's `clientID`: which node runs the sandbox
    expiry_interval_seconds: float = 1.0  # how often expired sandboxes are looked for
    max_sandboxes_per_team: int | None = None  # running sandboxes a team may have on this server (429 beyond)
    # -- sandbox egress (node/network.py) --
    egress_allow: tuple[str, ...] = ()  # CIDRs sandboxes may reach despite the default drops (private ranges, ...)
