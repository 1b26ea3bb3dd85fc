"""What the build service says went wrong: a user's mistake, or its own.

E2B infra's split: a `UserError` tells the caller what to fix (its `status` is the HTTP status the API
answers, so the API maps it without knowing the service's cases). Anything else the service raises is an
internal error: the API answers 500 with an id, and the details go to the server's log only.
"""

from __future__ import annotations


class UserError(Exception):
    """A refused request: `message` says what to fix; `headers` e.g. Retry-After on a 429."""

    def __init__(self, status: int, message: str, error_code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers
