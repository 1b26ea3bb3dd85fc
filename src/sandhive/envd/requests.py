"""Facts read off an RPC request's headers: the acting user, the keepalive interval and the deadline."""

from __future__ import annotations

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext

from .state import SandboxState
from .users import UnknownUserError, User, resolve, username_from_basic_auth

DEFAULT_KEEPALIVE = 90.0  # seconds, envd's default when the client asks for none


def request_user(ctx: RequestContext, state: SandboxState) -> User:
    """The user named by Basic auth, else the default user; UNAUTHENTICATED if it does not exist."""
    name = username_from_basic_auth(ctx.request_headers.get("authorization"))
    try:
        return resolve(name, state)
    except UnknownUserError as exc:
        raise ConnectError(Code.UNAUTHENTICATED, f"invalid username: '{exc.args[0]}'") from None


def keepalive_interval(ctx: RequestContext) -> float:
    """Seconds between keepalive events, from `Keepalive-Ping-Interval` (E2B's SDK sends 50)."""
    raw = ctx.request_headers.get("keepalive-ping-interval")
    try:
        value = float(raw) if raw else DEFAULT_KEEPALIVE
    except ValueError:
        return DEFAULT_KEEPALIVE
    return value if value > 0 else DEFAULT_KEEPALIVE


def request_timeout(ctx: RequestContext) -> float | None:
    """Seconds the client gave the call (`Connect-Timeout-Ms`), or None for no limit (absent or 0, as in
    E2B's envd). The SDK sends its `timeout` argument there; connectrpc does not enforce it on a server."""
    raw = ctx.request_headers.get("connect-timeout-ms")
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        raise ConnectError(Code.INVALID_ARGUMENT, f"invalid Connect-Timeout-Ms header: {raw[:20]!r}")
    return int(raw) / 1000 if int(raw) > 0 else None
