"""The node's internal failures: what went wrong on the host, in detail, for the server's log.

A failure the user can act on is a `sandhive.errors.NodeError` (its message is shown to them: `HostFull`,
`BackendMismatch`, `StartCommandFailed`). Everything here is not theirs to fix: its message may quote runtime
output, a dead envd's log or host paths, so the API logs it under an id and answers a generic 500.
"""

from __future__ import annotations


class BackendError(Exception):
    """A backend (or a host tool it ran) failed: the message says how, for the operator."""


class BackendUnavailable(BackendError):
    """The backend asked for cannot run on this host (or is not part of this installation): said at start."""
