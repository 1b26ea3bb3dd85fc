"""envd access tokens (sandbox ids are the node's: `sandhive.node.request.new_sandbox_id`).

A token is HMAC-SHA256(secret, sandbox_id): nothing per sandbox needs keeping secret in the database,
and the secret, random, in `<data_dir>/secret` (mode 0600), is created once per data dir.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path


def access_token(secret: bytes, sandbox_id: str) -> str:
    return hmac.new(secret, sandbox_id.encode(), hashlib.sha256).hexdigest()


def load_secret(data_dir: Path) -> bytes:
    """The data dir's secret, created on first use: written to a private temp file, then linked into
    place, so that two processes starting at once agree on one secret and nobody reads a half-written file."""
    path = Path(data_dir) / "secret"
    if not path.exists():
        tmp = path.with_name(f".secret.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won; use its secret
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise RuntimeError(f"{path} is empty or truncated; remove it to mint a new secret "
                           "(running sandboxes then lose their access tokens)")
    return secret.encode()
