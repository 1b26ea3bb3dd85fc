"""`GET /files` and `POST /files`: file download and upload (wire doc §3.1).

Uploads come as multipart (each part's filename is the target path) or, since envd 0.5.7, as
`application/octet-stream` with `?path=` and optional `Content-Encoding: gzip`. Both are streamed
to disk; downloads are streamed from disk, gzip-compressed when the client accepts it.
"""

from __future__ import annotations

import asyncio
import os
import stat
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, BinaryIO

import anyio
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse

from .acting_user import run_as
from .auth import ACCESS_TOKEN_HEADER, files_access_refusal
from .paths import resolve_path
from .state import SandboxState
from .uploads import DiskFull, GunzipStream, UploadTarget, free_bytes
from .users import UnknownUserError, User, resolve

READ_CHUNK = 1024 * 1024  # large reads: each one is a thread hop
SAMPLE = 256 * 1024  # bytes test-compressed to decide whether gzip pays
GZIP_LEVEL = 1  # fast: the link is usually a loopback or a LAN, CPU is the scarcer resource


class LargeChunkFileResponse(FileResponse):
    """Starlette's FileResponse reads 64 KiB per thread hop; 1 MiB makes big downloads several times faster."""

    chunk_size = READ_CHUNK
METADATA_HEADER_PREFIX = "x-metadata-"
METADATA_MAX_KEY = 246
METADATA_MAX_TOTAL = 4096


class FilesError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


def _authorize(request: Request, state: SandboxState, operation: str) -> tuple[str, User]:
    """Check token or signature, then resolve the user and the path. Returns (path, user)."""
    params = request.query_params
    raw_path = params.get("path", "")
    username = params.get("username")
    refusal = files_access_refusal(state, request.headers.get(ACCESS_TOKEN_HEADER), path=raw_path,
                                   operation=operation, username=username, signature=params.get("signature"),
                                   expiration=params.get("signature_expiration"))
    if refusal is not None:
        raise FilesError(401, refusal)
    try:
        user = resolve(username, state)
    except UnknownUserError:
        raise FilesError(401, f"invalid user: '{username}'") from None
    return raw_path, user


def _resolve(raw: str, user: User) -> str:
    try:
        return resolve_path(raw, user)
    except ValueError as exc:
        raise FilesError(400, str(exc)) from None


def _wants_gzip(accept_encoding: str) -> bool | None:
    """True for gzip, False for identity, None when the client accepts neither (406)."""
    accepted: dict[str, float] = {}
    for token in accept_encoding.split(","):
        name, _, params = token.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if name:
            accepted[name.strip().lower()] = q
    if accepted.get("gzip", accepted.get("*", 0)) > 0:
        return True
    if accepted.get("identity", accepted.get("*", 1 if "identity" not in accepted else 0)) > 0:
        return False
    return None


async def download(request: Request, state: SandboxState) -> Response:
    try:
        raw_path, user = _authorize(request, state, "read")
        path = _resolve(raw_path, user)
        gzip = _wants_gzip(request.headers.get("accept-encoding", ""))
        file, st = await run_as(user, _open_for_download, path)
    except FilesError as exc:
        return error_response(exc.status, exc.message)
    if gzip is None:
        await asyncio.to_thread(file.close)
        return error_response(406, "unsupported Accept-Encoding: only gzip and identity are offered")
    filename = os.path.basename(path)
    try:
        compress = gzip and await asyncio.to_thread(_worth_compressing, file)
    except BaseException:
        await asyncio.to_thread(file.close)
        raise
    if not compress:
        return OpenFileResponse(file, st, path, media_type="application/octet-stream", filename=filename,
                                content_disposition_type="inline")
    return StreamingResponse(_gzip_file(file), media_type="application/octet-stream",
                             headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})


def _open_for_download(path: str) -> tuple[BinaryIO, os.stat_result]:
    """Open `path` for reading (in a thread acting as the requesting user: the kernel decides).

    Only regular files are served: a directory is a 400, anything else (a FIFO, a device) is reported
    missing as before, and the open never blocks on a FIFO or takes a terminal as controlling one.
    """
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise FilesError(400, f"path '{path}' is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise FilesError(404, f"path '{path}' does not exist")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except PermissionError:
        raise FilesError(403, f"permission denied: cannot read '{path}'") from None
    except OSError:
        raise FilesError(404, f"path '{path}' does not exist") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # swapped between the stat and the open
        os.close(fd)
        raise FilesError(404, f"path '{path}' does not exist")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), st


class OpenFileResponse(LargeChunkFileResponse):
    """A FileResponse (ranges, ETag, Last-Modified) served from a file already opened as the user.

    Opening by path again here would do so as envd's root; the permission check happened at the open.
    """

    def __init__(self, file: BinaryIO, st: os.stat_result, path: str, **kwargs: Any) -> None:
        super().__init__(path, stat_result=st, **kwargs)
        self._file = file

    @asynccontextmanager
    async def _open_file(self) -> AsyncIterator[anyio.AsyncFile[bytes]]:
        wrapped = anyio.AsyncFile(self._file)
        try:
            yield wrapped
        finally:
            with anyio.CancelScope(shield=True):
                await wrapped.aclose()


def _worth_compressing(file: BinaryIO) -> bool:
    """Whether gzip pays for this file. httpx asks for gzip on every request, so random or already
    compressed data would otherwise cost CPU for nothing; sending identity is always allowed."""
    sample = os.pread(file.fileno(), SAMPLE, 0)
    return len(sample) < 512 or len(zlib.compress(sample, GZIP_LEVEL)) < 0.9 * len(sample)


async def _gzip_file(file: BinaryIO) -> AsyncIterator[bytes]:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)

    def next_piece() -> tuple[bytes, bool]:
        chunk = file.read(READ_CHUNK)
        return (compressor.compress(chunk), False) if chunk else (compressor.flush(), True)

    try:
        done = False
        while not done:
            piece, done = await asyncio.to_thread(next_piece)
            if piece:
                yield piece
    finally:
        await asyncio.to_thread(file.close)


def _metadata(request: Request) -> dict[str, str] | None:
    """`X-Metadata-*` headers as a dict (None when there are none); 400 when they break E2B's limits."""
    found = {k[len(METADATA_HEADER_PREFIX):]: v for k, v in request.headers.items()
             if k.lower().startswith(METADATA_HEADER_PREFIX)}
    if not found:
        return None
    total = 0
    for key, value in found.items():
        if not (key.isascii() and key.isprintable() and value.isascii() and value.isprintable()):
            raise FilesError(400, "metadata keys and values must be printable ASCII")
        if len(key) > METADATA_MAX_KEY:
            raise FilesError(400, f"metadata key '{key[:32]}…' is longer than {METADATA_MAX_KEY} bytes")
        total += len(key) + len(value)
    if total > METADATA_MAX_TOTAL:
        raise FilesError(400, f"metadata is larger than {METADATA_MAX_TOTAL} bytes in total")
    return found


async def upload(request: Request, state: SandboxState) -> Response:
    targets: list[UploadTarget] = []
    try:
        raw_path, user = _authorize(request, state, "write")
        metadata = _metadata(request)
        length = request.headers.get("content-length")
        probe = _resolve(raw_path, user) if raw_path else user.home
        if length and length.isdigit() and int(length) > await asyncio.to_thread(free_bytes, probe):
            raise FilesError(507, "not enough disk space for the upload")
        content_type, options = parse_options_header(request.headers.get("content-type", ""))
        if content_type == b"multipart/form-data":
            if b"boundary" not in options:
                raise FilesError(400, "multipart body without a boundary")
            await _receive_multipart(request, options[b"boundary"], raw_path, user, metadata, targets)
        elif content_type == b"application/octet-stream":
            if not raw_path:
                raise FilesError(400, "the path query parameter is required for octet-stream uploads")
            await _receive_octet_stream(request, _resolve(raw_path, user), user, metadata, targets)
        else:
            raise FilesError(400, "Content-Type must be multipart/form-data or application/octet-stream")
        if not targets:
            raise FilesError(400, "the request carried no file")
        for target in targets:
            await target.commit()
    except FilesError as exc:
        await _abort(targets)
        return error_response(exc.status, exc.message)
    except DiskFull:
        await _abort(targets)
        return error_response(507, "not enough disk space for the upload")
    except IsADirectoryError as exc:
        await _abort(targets)
        return error_response(400, f"path '{exc.filename}' is a directory")
    except PermissionError as exc:
        await _abort(targets)
        return error_response(403, f"permission denied: cannot write '{exc.filename or ''}'")
    except OSError as exc:
        await _abort(targets)
        return error_response(500, f"cannot write '{exc.filename or ''}': {exc.strerror or exc}")
    except BaseException:
        await _abort(targets)
        raise
    return JSONResponse([target.entry() for target in targets])


async def _abort(targets: list[UploadTarget]) -> None:
    for target in targets:
        await target.abort()


async def _receive_octet_stream(request: Request, path: str, user: User, metadata: dict[str, str] | None,
                                targets: list[UploadTarget]) -> None:
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding not in ("identity", "gzip", ""):
        raise FilesError(400, f"unsupported Content-Encoding '{encoding}': use gzip or none")
    gunzip = GunzipStream() if encoding == "gzip" else None
    target = UploadTarget(path, user, metadata)
    targets.append(target)
    await target.open()
    try:
        async for chunk in request.stream():
            if gunzip is None:
                await target.write(chunk)
            else:
                for piece in gunzip.feed(chunk):
                    await target.write(piece)
        if gunzip is not None:
            gunzip.finish()
    except (zlib.error, ValueError) as exc:
        raise FilesError(400, f"invalid gzip body: {exc}") from None


async def _receive_multipart(request: Request, boundary: bytes, raw_path: str, user: User,
                             metadata: dict[str, str] | None, targets: list[UploadTarget]) -> None:
    """Stream each `file` part to its target; a part's filename is its path (E2B's convention)."""
    actions: list[tuple[str, str | bytes]] = []  # ("open", filename) or ("data", bytes)
    header: dict[str, bytearray] = {"field": bytearray(), "value": bytearray()}
    headers: dict[bytes, bytes] = {}
    finished = [False]

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        headers[bytes(header["field"]).lower()] = bytes(header["value"])
        header["field"], header["value"] = bytearray(), bytearray()

    def on_headers_finished() -> None:
        _, params = parse_options_header(headers.get(b"content-disposition", b""))
        actions.append(("open", params.get(b"filename", b"").decode("utf-8", "replace")))
        headers.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        actions.append(("data", data[start:end]))

    def on_end() -> None:
        finished[0] = True

    parser = MultipartParser(boundary, {
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_end": on_end,
    })
    current: UploadTarget | None = None
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            for kind, value in actions:
                if kind == "open":
                    name = str(value)
                    use_param = raw_path and not targets
                    if not name and not use_param:
                        raise FilesError(400, "a multipart part has no filename (the target path)")
                    current = UploadTarget(_resolve(raw_path if use_param else name, user), user, metadata)
                    targets.append(current)
                    await current.open()
                elif current is not None and isinstance(value, bytes):
                    await current.write(value)
            actions.clear()
        parser.finalize()
    except MultipartParseError as exc:
        raise FilesError(400, f"broken multipart body: {exc}") from None
    if not finished[0]:
        raise FilesError(400, "broken multipart body: it ends before its closing boundary")
