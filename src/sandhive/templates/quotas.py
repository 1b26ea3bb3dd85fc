"""Per-team template quotas: how many templates, builds at once, build minutes a day, and stored upload bytes.

Defaults protect one host from one team: a build takes CPU, disk and minutes of the host, an upload takes its
disk. Each refusal is E2B's 429 (`{"code": 429, "message": ...}`) with `Retry-After`, saying which limit and
what frees it. Counting is here and only here; the build service asks before it registers, starts or stores.
Build minutes are checked when a build starts (a running build is not cut off when it crosses the line).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from ..errors import UserError
from ..store import Store
from ..store.store import now_utc

DAY = timedelta(days=1)


@dataclass(frozen=True)
class TemplateQuotas:
    """Limits per team; None means no limit."""

    max_templates: int | None = 50
    max_concurrent_builds: int | None = 2
    build_minutes_per_day: int | None = 120
    max_upload_bytes: int | None = 10 * 2**30  # the team's stored (unpacked) uploads


class QuotaExceeded(UserError):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(429, message, "team_quota_exceeded", headers={"Retry-After": str(retry_after)})


class TeamTemplateQuota:
    """Checks the limits of `TemplateQuotas` against the store and the upload directory (blocking calls)."""

    def __init__(self, limits: TemplateQuotas, store: Store) -> None:
        self.limits = limits
        self.store = store

    def check_new_template(self, team_id: str) -> None:
        limit = self.limits.max_templates
        if limit is not None and self.store.team_template_count(team_id) >= limit:
            raise QuotaExceeded(f"Your team has reached its limit of {limit} templates on this server: delete one "
                                "(DELETE /templates/{templateID}) before creating another", 3600)

    def check_build_start(self, team_id: str, running: int) -> None:
        """Before a build starts: `running` is how many of the team's builds run or wait now."""
        limit = self.limits.max_concurrent_builds
        if limit is not None and running >= limit:
            raise QuotaExceeded(f"Your team already has {running} template builds running (its limit is {limit}): "
                                "wait for one to finish, then start this build again", 60)
        minutes = self.limits.build_minutes_per_day
        if minutes is not None:
            used = self.store.build_seconds_since(team_id, now_utc() - DAY) / 60
            if used >= minutes:
                raise QuotaExceeded(f"Your team used {used:.0f} of its {minutes} build minutes of the last 24 hours:"
                                    " start this build later", 3600)

    def upload_allowance(self, team_root: Path) -> int | None:
        """Bytes the team may still upload (None: no limit), given its unpacked uploads under `team_root`."""
        limit = self.limits.max_upload_bytes
        if limit is None:
            return None
        return max(0, limit - stored_bytes(team_root))

    def upload_refused(self, stored_plus: int) -> QuotaExceeded:
        limit = self.limits.max_upload_bytes or 0
        return QuotaExceeded(f"This upload would take your team's stored template files past its limit of "
                             f"{limit / 2**20:.0f} MiB ({stored_plus / 2**20:.0f} MiB): delete templates, or let "
                             "unused uploads expire (after 7 days)", 3600)


def stored_bytes(root: Path) -> int:
    """Bytes of the regular files under `root` (0 if it does not exist); links are not followed."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            total += st.st_size
    return total
