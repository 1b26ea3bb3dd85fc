"""Files uploaded for template builds: COPY sources of SDK-defined templates and Dockerfile build contexts.

The flow is E2B's (docs/wire.md §2.6): the client asks `GET /templates/{id}/files/{hash}` whether the server has
the files of a COPY step; if not, it gets a URL on this server, signed with the data dir's secret, and PUTs a
tar (gzipped or not) there. The URL carries no API key, so the signature is what authorises the upload: it
names the template, the hash and an expiry.

An upload is unpacked into `<data_dir>/template-files/<team_id>/<hash>/` (one directory per hash, per team:
a team cannot plant files under a hash another team's build will use). Unpacking runs in a child process
that is not host root: a user namespace mapped to the BUILD range, chrooted into the new directory
(templates/unpack.py), so nothing lands outside it whatever the paths and links say. Absolute paths, `..`
and device files refuse the whole upload with 400, naming the member; symlinks are kept as links. The
directory appears complete or not at all (unpacked beside it, then renamed into place).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlencode

from ..errors import UserError
from .unpack import UnpackError, unpack

FILES_DIR = "template-files"
HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
URL_TTL_SECONDS = 3600  # the e2b SDK allows an upload an hour
MAX_UPLOAD_BYTES = 4 * 2**30  # what a PUT may carry (compressed)
MAX_UNPACKED_BYTES = 16 * 2**30  # what its files may add up to (a gzip bomb stops here)
SPOOL_BATCH_BYTES = 2**20  # an upload is written to disk this much at a time, in a worker thread


def check_hash(files_hash: str) -> str:
    if not HASH_PATTERN.fullmatch(files_hash or ""):
        raise UserError(400, f"invalid files hash {files_hash!r}: expected 64 lowercase hex digits (sha256)")
    return files_hash


class UploadedFiles:
    """The unpacked uploads of a data dir, and the signed URLs that let clients add to them."""

    def __init__(self, data_dir: Path, secret: bytes) -> None:
        self.root = Path(data_dir) / FILES_DIR
        self._secret = secret

    def team_root(self, team_id: str) -> Path:
        return self.root / team_id

    def path(self, team_id: str, files_hash: str) -> Path:
        return self.root / team_id / check_hash(files_hash)

    def present(self, team_id: str, files_hash: str) -> bool:
        return self.path(team_id, files_hash).is_dir()

    # ---- signed URLs --------------------------------------------------------------------------------

    def _signature(self, template_id: str, files_hash: str, expires: int) -> str:
        message = f"upload\n{template_id}\n{files_hash}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def upload_url(self, base_url: str, template_id: str, files_hash: str) -> str:
        """An absolute URL on this server the files' tar may be PUT to within the next hour."""
        expires = int(time.time()) + URL_TTL_SECONDS
        query = urlencode({"expires": expires, "signature": self._signature(template_id, files_hash, expires)})
        return f"{base_url.rstrip('/')}/templates/{template_id}/files/{files_hash}/upload?{query}"

    def check_signature(self, template_id: str, files_hash: str, expires: int, signature: str) -> None:
        """403 unless the URL was signed here for this template and hash, and has not expired."""
        expected = self._signature(template_id, files_hash, expires)
        if not hmac.compare_digest(expected, signature or ""):
            raise UserError(403, "invalid upload signature: ask GET /templates/{templateID}/files/{hash} for a URL")
        if expires < time.time():
            raise UserError(403, "the upload URL has expired: ask GET /templates/{templateID}/files/{hash} again")

    # ---- receiving ----------------------------------------------------------------------------------

    async def receive(self, body: AsyncIterator[bytes], allowance: int | None = None,
                      over_quota: Callable[[int], Exception] | None = None) -> Path:
        """Write a request body to a private temp file (413 past MAX_UPLOAD_BYTES); the caller unpacks it.
        Past `allowance` bytes (what the team's upload quota has left) it stops reading: `over_quota(size)`.
        The disk writes run in a worker thread, a batch of chunks at a time: the event loop never waits on disk."""
        await asyncio.to_thread(self.root.mkdir, mode=0o700, parents=True, exist_ok=True)
        spool = self.root / f".upload-{secrets.token_hex(8)}"
        size = pending = 0
        batch: list[bytes] = []
        try:
            out = await asyncio.to_thread(open, spool, "xb")
            try:
                async for chunk in body:
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        raise UserError(413, f"the upload is larger than {MAX_UPLOAD_BYTES // 2**30} GiB")
                    if allowance is not None and size > allowance and over_quota is not None:
                        raise over_quota(size)
                    batch.append(chunk)
                    pending += len(chunk)
                    if pending >= SPOOL_BATCH_BYTES:
                        await asyncio.to_thread(out.writelines, batch)
                        batch, pending = [], 0
                await asyncio.to_thread(out.writelines, batch)
            finally:
                await asyncio.to_thread(out.close)
        except BaseException:
            spool.unlink(missing_ok=True)
            raise
        return spool

    def unpack(self, spool: Path, team_id: str, files_hash: str, keep_spool: bool = False) -> Path:
        """Unpack the tar in `spool` as the files of `files_hash` (blocking; `spool` is removed unless
        `keep_spool`: a control plane with remote nodes then stores it for the other replicas).

        A second upload of the same hash replaces nothing: the files of a hash are the same files.
        """
        final = self.path(team_id, files_hash)
        tmp = final.parent / f".tmp-{files_hash}-{secrets.token_hex(4)}"
        try:
            final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp.mkdir(mode=0o700)
            _extract(spool, tmp)
            if final.exists():
                return final
            os.rename(tmp, final)
            return final
        finally:
            if not keep_spool:
                spool.unlink(missing_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def remove_stale(self, max_age_seconds: float) -> int:
        """Delete unpacked uploads unused (by mtime) for `max_age_seconds`, and leftovers of interrupted
        uploads. A build touches the files it uses, so what builds keep using stays."""
        if not self.root.is_dir():
            return 0
        removed = 0
        cutoff = time.time() - max_age_seconds
        for path in self.root.glob(".upload-*"):
            path.unlink(missing_ok=True)
        for team in self.root.iterdir():
            if not team.is_dir():
                continue
            for entry in team.iterdir():
                if entry.name.startswith(".tmp-") or entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
        return removed


def _extract(spool: Path, into: Path) -> None:
    """Unpack a tar (gzipped or not) into `into`, as the BUILD range's root inside a chroot of `into`
    (templates/unpack.py): never as host root, and no path or link chain can land outside."""
    try:
        unpack(spool, into, max_bytes=MAX_UNPACKED_BYTES)
    except UnpackError as exc:
        raise UserError(exc.status, exc.message) from None
