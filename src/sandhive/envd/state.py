"""What `/init` tells envd: the sandbox's identity, its environment, its token and its defaults.

A warm-pool sandbox or a snapshot clone starts with none of this and becomes a particular sandbox
in one `/init` round trip, so everything identity-shaped lives here and nowhere else.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class SandboxState:
    """Mutable, process-wide facts set by `/init`."""

    env_vars: dict[str, str] = field(default_factory=dict)
    access_token: str | None = None
    default_user: str | None = None
    default_workdir: str | None = None
    sandbox_id: str | None = None
    template_id: str | None = None
    ca_bundle_path: str | None = None

    def token_ok(self, presented: str | None) -> bool:
        """True when no token is configured or `presented` equals it (compared in constant time)."""
        if not self.access_token:
            return True
        return presented is not None and hmac.compare_digest(presented, self.access_token)

    def sandbox_env(self) -> dict[str, str]:
        """Variables every process gets before the request's own: E2B markers, CA paths, init vars."""
        env: dict[str, str] = {"E2B_SANDBOX": "true"}
        if self.sandbox_id:
            env["E2B_SANDBOX_ID"] = self.sandbox_id
        if self.template_id:
            env["E2B_TEMPLATE_ID"] = self.template_id
        if self.ca_bundle_path:
            for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CURL_CA_BUNDLE",
                         "NODE_EXTRA_CA_CERTS"):
                env[name] = self.ca_bundle_path
        env.update(self.env_vars)
        return env
