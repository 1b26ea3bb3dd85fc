"""Timeouts and the maximum lifetime: E2B's rules for when a sandbox must end.

A timeout is "seconds from now". It must be positive, must not exceed the configured maximum lifetime
(400, as E2B answers), and the deadline it gives never passes `started_at + max_lifetime`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..errors import UserError

MAX_REFRESH_SECONDS = 3600  # E2B's limit for POST /sandboxes/{id}/refreshes
MAX_TIMEOUT_SECONDS = 2**31 - 1  # E2B's int32; also keeps deadlines inside datetime's range without a maximum


def _describe(seconds: int) -> str:
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour" + ("s" if hours != 1 else "")
    return f"{seconds} seconds"


class Lifetime:
    def __init__(self, max_lifetime_seconds: int | None) -> None:
        self.max_seconds = max_lifetime_seconds

    def check_timeout(self, seconds: int) -> None:
        if seconds <= 0:
            raise UserError(400, "Timeout must be greater than 0")
        limit = min(self.max_seconds or MAX_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS)
        if seconds > limit:
            raise UserError(400, f"Timeout cannot be greater than {_describe(limit)}")

    @staticmethod
    def check_refresh(seconds: int) -> None:
        if not 0 <= seconds <= MAX_REFRESH_SECONDS:
            raise UserError(400, f"Duration must be between 0 and {MAX_REFRESH_SECONDS} seconds")

    def deadline(self, started_at: datetime, now: datetime, seconds: int) -> datetime:
        end = now + timedelta(seconds=seconds)
        if self.max_seconds is not None:
            end = min(end, started_at + timedelta(seconds=self.max_seconds))
        return end
