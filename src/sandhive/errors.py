"""What went wrong, and whose it is: a user's mistake (shown to them) or an internal failure (logged).

E2B infra's split. A `UserError` carries the HTTP status the API answers and a message that is safe to show
and says what to do; the API maps it without knowing any of its cases. `NodeError` is the node's kind of it
(the host is full, a template's start command fails, a template asks for another backend). Anything else
raised while serving a request is internal: it is logged with a short id (`report_internal`) and the client
gets one generic sentence naming that id, so no runtime output or host path reaches a client by accident.
"""

from __future__ import annotations

import logging
import secrets


class UserError(Exception):
    """A refused request: `message` says what to fix; `error_code` is E2B's; `headers` e.g. Retry-After."""

    def __init__(self, status: int, message: str, error_code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers


class NodeError(UserError):
    """The node could not do what was asked, for a reason the user can act on (the message says how)."""


def report_internal(log: logging.Logger, exc: BaseException, doing: str) -> str:
    """Log `exc` (with its traceback) under a new short id; return the sentence a client sees instead."""
    incident = secrets.token_hex(4)
    log.error("internal error %s while %s", incident, doing, exc_info=exc)
    return internal_message(incident)


def internal_message(incident: str) -> str:
    return f"internal error (id {incident}); see the server log"
