"""Signed `/files` URLs (E2B's `v1_` signature): a file download or upload link that needs no headers.

signature = "v1_" + base64 (standard alphabet, no padding) of
sha256("<path>:<read|write>:<user or ''>:<access token>[:<expiration unix seconds>]").
envd accepts it instead of the `X-Access-Token` header; the link reaches the sandbox through the server's
proxy by its `49983-<id>.<domain>` host name (see `SandboxRef.get_host`).
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Literal
from urllib.parse import quote, urlencode

from .exceptions import InvalidArgumentException
from .ref import SandboxRef

Operation = Literal["read", "write"]


def signature(path: str, operation: Operation, user: str | None, token: str, expiration: int | None) -> str:
    raw = f"{path}:{operation}:{user or ''}:{token}" + (f":{expiration}" if expiration is not None else "")
    return "v1_" + base64.b64encode(hashlib.sha256(raw.encode()).digest()).rstrip(b"=").decode()


def file_url(ref: SandboxRef, path: str, operation: Operation, user: str | None = None,
             expires_in: int | None = None) -> str:
    """A `/files` URL for `path`, signed when the sandbox has an access token; `expires_in` seconds limit it."""
    query: dict[str, str] = {"path": path}
    if user:
        query["username"] = user
    if ref.access_token:
        expiration = int(time.time()) + expires_in if expires_in is not None else None
        query["signature"] = signature(path, operation, user, ref.access_token, expiration)
        if expiration is not None:
            query["signature_expiration"] = str(expiration)
    elif expires_in is not None:
        raise InvalidArgumentException("this sandbox has no access token, so its file URLs cannot expire")
    return f"{ref.direct_url()}/files?{urlencode(query, quote_via=quote)}"
