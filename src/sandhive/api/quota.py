"""A per-team limit on running sandboxes: E2B's "concurrent sandboxes" quota, answered 429 as E2B does.

Counted in this server's memory (rebuilt from the store at start), creates in flight included, so a
burst of creates cannot overshoot the limit. 429 means "your team's share is used up"; a host whose
memory or CPU budget is spent answers 503 instead (see `node/admission.py`): the first is about the
caller, the second about the server.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator

from ..errors import UserError

RETRY_AFTER_SECONDS = 10  # sandboxes end on their own timers; nothing frees a team's slot sooner


class TeamQuota:
    """`what` names the counted things in the 429 (running sandboxes; paused ones have a quota of their own)."""

    def __init__(self, limit: int | None, what: str = "running sandboxes",
                 error_code: str = "team_sandbox_limit") -> None:
        self.limit = limit
        self.what = what
        self.error_code = error_code
        self._live: defaultdict[str, set[str]] = defaultdict(set)
        self._creating: defaultdict[str, int] = defaultdict(int)
        self.rejected = 0  # 429s given since the server started (Prometheus' admission rejections)

    def add(self, team_id: str, sandbox_id: str) -> None:
        self._live[team_id].add(sandbox_id)

    def remove(self, team_id: str, sandbox_id: str) -> None:
        self._live[team_id].discard(sandbox_id)

    def counts(self) -> dict[str, int]:
        """How many each team has now (teams that had some and have none left answer 0)."""
        return {team_id: len(ids) for team_id, ids in self._live.items()}

    @contextlib.contextmanager
    def slot(self, team_id: str) -> Iterator[None]:
        """Hold one of the team's places while its sandbox is created; 429 when none is left."""
        if self.limit is not None and len(self._live[team_id]) + self._creating[team_id] >= self.limit:
            self.rejected += 1
            raise UserError(429, f"Your team has reached its limit of {self.limit} {self.what} on this "
                                "server; kill one or retry later", self.error_code,
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        self._creating[team_id] += 1
        try:
            yield
        finally:
            self._creating[team_id] -= 1
