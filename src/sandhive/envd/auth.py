"""Access-token and signed-URL checks for envd's HTTP surface (E2B wire doc §3.1, §3.6)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from .state import SandboxState

ACCESS_TOKEN_HEADER = "x-access-token"
EXPIRED_SIGNATURE_MESSAGE = "signature is already expired"
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


def files_access_refusal(
    state: SandboxState,
    header_token: str | None,
    *,
    path: str,
    operation: str,
    username: str | None,
    signature: str | None,
    expiration: str | None,
) -> str | None:
    """Why a `/files` request is refused (the 401's message), or None when the token or signature allows it.

    As in E2B's envd, the signature is checked before its expiration, so only the holder of a once-valid URL
    learns that it expired (`signature is already expired`, the text E2B's SDK tests expect); every other
    failure gets the generic message.
    """
    if state.token_ok(header_token):
        return None
    if not signature or not state.access_token:
        return UNAUTHORIZED_MESSAGE
    exp: int | None = None
    if expiration:
        try:
            exp = int(expiration)
        except ValueError:
            return UNAUTHORIZED_MESSAGE
    expected = file_signature(path, operation, username or "", state.access_token, exp)
    if not hmac.compare_digest(signature, expected):
        return UNAUTHORIZED_MESSAGE
    if exp is not None and exp < time.time():
        return EXPIRED_SIGNATURE_MESSAGE
    return None
