"""Access-token and signed-URL checks for envd's HTTP surface (E2B wire doc §3.1, §3.6)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from .state import SandboxState

ACCESS_TOKEN_HEADER = "x-access-token"
UNAUTHORIZED_MESSAGE = "unauthorized access, please provide a valid access token or method signing if supported"

# Paths that check access themselves (/files accepts a token or a signature) or need none.
OPEN_PATHS = frozenset({"/health", "/files", "/init"})


def file_signature(path: str, operation: str, username: str, token: str, expiration: int | None) -> str:
    """E2B's `v1_` signature: standard base64, unpadded, of sha256 over the colon-joined fields."""
    raw = f"{path}:{operation}:{username}:{token}"
    if expiration is not None:
        raw += f":{expiration}"
    digest = hashlib.sha256(raw.encode()).digest()
    return "v1_" + base64.b64encode(digest).decode().rstrip("=")


def files_access_ok(
    state: SandboxState,
    header_token: str | None,
    *,
    path: str,
    operation: str,
    username: str | None,
    signature: str | None,
    expiration: str | None,
) -> bool:
    """A `/files` request is allowed with the right token or a valid, unexpired signature."""
    if state.token_ok(header_token):
        return True
    if not signature or not state.access_token:
        return False
    exp: int | None = None
    if expiration:
        try:
            exp = int(expiration)
        except ValueError:
            return False
        if exp < time.time():
            return False
    expected = file_signature(path, operation, username or "", state.access_token, exp)
    return hmac.compare_digest(signature, expected)
