"""envd's filesystem calls: `filesystem.Filesystem` RPCs (docs/wire.md §3.4) and the `/files` HTTP endpoint.

Reads and writes go over HTTP (`GET`/`POST /files`, streamed both ways); everything else is RPC.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import IO, Any

import httpx
from connectrpc.code import Code

from ..rpc.filesystem import filesystem_pb as pb
from .exceptions import InvalidArgumentException, SandboxException
from .models import EntryInfo, FilesystemEvent, FilesystemEventType, FileType, WriteEntry, WriteInfo
from .ref import SandboxRef
from .wire import HttpCall, RpcCall

CHUNK = 1024 * 1024  # upload chunk: big enough to keep the link busy, small enough to stream
READ_FORMATS = ("text", "bytes", "stream")
_FILE_TYPES = {pb.FileType.FILE: FileType.FILE, pb.FileType.DIRECTORY: FileType.DIR,
               pb.FileType.SYMLINK: FileType.SYMLINK}
_EVENT_TYPES = {pb.EventType.CREATE: FilesystemEventType.CREATE, pb.EventType.WRITE: FilesystemEventType.WRITE,
                pb.EventType.REMOVE: FilesystemEventType.REMOVE, pb.EventType.RENAME: FilesystemEventType.RENAME,
                pb.EventType.CHMOD: FilesystemEventType.CHMOD}

# ---- /files ---------------------------------------------------------------------------------------------------


def _files_call(ref: SandboxRef, method: str, path: str | None, user: str | None, what: str, parse: Any,
                timeout: float | None, content_type: str | None = None, **fields: Any) -> HttpCall[Any]:
    params = {k: v for k, v in (("path", path), ("username", user)) if v}
    headers = ref.envd_headers()
    if content_type:
        headers["Content-Type"] = content_type
    return HttpCall(method, f"{ref.envd_url}/files", ref.context(what, path=path, timeout=timeout), parse,
                    headers=headers, params=params, timeout=timeout, **fields)


def check_read_format(format: str) -> str:
    if format not in READ_FORMATS:
        raise InvalidArgumentException(f"format must be one of {', '.join(READ_FORMATS)}, not {format!r}")
    return format


def read(ref: SandboxRef, path: str, format: str, *, user: str | None, timeout: float | None) -> HttpCall[Any]:
    """`GET /files`: the file's bytes, decoded as UTF-8 text when `format="text"`."""
    check_read_format(format)
    parse = (lambda r: r.content.decode("utf-8", errors="replace")) if format == "text" else (lambda r: r.content)
    return _files_call(ref, "GET", path, user, f"read {path}", parse, timeout)


def write(ref: SandboxRef, path: str, body: bytes | Iterator[bytes] | AsyncIterator[bytes], *, user: str | None,
          timeout: float | None) -> HttpCall[WriteInfo]:
    """`POST /files` as an octet stream: the body streams to a temporary file that replaces `path` when
    complete (parent directories are created)."""
    return _files_call(ref, "POST", path, user, f"write {path}", lambda r: _written(r)[0], timeout, content=body,
                       content_type="application/octet-stream")


def write_files(ref: SandboxRef, files: list[WriteEntry], *, user: str | None,
                timeout: float | None) -> HttpCall[list[WriteInfo]]:
    """`POST /files` multipart: one part per file, each part's filename its target path."""
    parts = [("file", (entry["path"], _multipart_data(entry["data"]), "application/octet-stream"))
             for entry in files]
    return _files_call(ref, "POST", None, user, f"write {len(files)} files", _written, timeout, files=parts)


def _multipart_data(data: str | bytes | IO) -> bytes | IO:
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, io.TextIOBase):
        return data.read().encode()
    return data


def _written(response: httpx.Response) -> list[WriteInfo]:
    items = response.json()
    if not items:
        raise SandboxException("envd answered an upload with no file: upgrade the sandbox's template")
    return [WriteInfo(name=i["name"], type=FileType(i["type"]) if i.get("type") in ("file", "dir") else None,
                      path=i["path"]) for i in items]


def sync_body(data: str | bytes | IO) -> bytes | Iterator[bytes]:
    """What to send for `data`: text as UTF-8, bytes as they are, a file object read chunk by chunk."""
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    return _chunks(data)


def _chunks(f: IO) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        yield chunk.encode() if isinstance(chunk, str) else chunk


def async_body(data: str | bytes | IO) -> bytes | AsyncIterator[bytes]:
    """As `sync_body`, but a file object is read in a thread so the event loop never waits on the disk."""
    body = sync_body(data)
    return body if isinstance(body, bytes) else _in_thread(body)


async def _in_thread(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        yield chunk


# ---- RPC ------------------------------------------------------------------------------------------------------


def _rpc(ref: SandboxRef, method: str, request: Any, what: str, path: str | None, parse: Any, timeout: float | None,
         user: str | None = None, **fields: Any) -> RpcCall[Any]:
    return RpcCall("filesystem", method, request, ref.envd_headers(user), ref.context(what, path=path,
                                                                                       timeout=timeout),
                   parse, timeout, **fields)


def entry_info(entry: pb.EntryInfo) -> EntryInfo:
    modified = entry.modified_time.to_datetime() if entry.modified_time is not None else None
    return EntryInfo(name=entry.name, type=_FILE_TYPES.get(entry.type), path=entry.path, size=int(entry.size),
                     mode=entry.mode, permissions=entry.permissions, owner=entry.owner, group=entry.group,
                     modified_time=modified if isinstance(modified, datetime) else None,
                     symlink_target=entry.symlink_target if entry.has_field("symlink_target") else None,
                     metadata=dict(entry.metadata))


def list_dir(ref: SandboxRef, path: str, depth: int, *, user: str | None,
             timeout: float | None) -> RpcCall[list[EntryInfo]]:
    if depth < 1:
        raise InvalidArgumentException(f"depth must be at least 1, not {depth}")
    return _rpc(ref, "list_dir", pb.ListDirRequest(path=path, depth=depth), f"list {path}", path,
                lambda r: [entry_info(e) for e in r.entries if e.type != pb.FileType.UNSPECIFIED], timeout, user)


def stat(ref: SandboxRef, path: str, *, user: str | None, timeout: float | None) -> RpcCall[EntryInfo]:
    return _rpc(ref, "stat", pb.StatRequest(path=path), f"get the info of {path}", path,
                lambda r: entry_info(r.entry), timeout, user)


def exists(ref: SandboxRef, path: str, *, user: str | None, timeout: float | None) -> RpcCall[bool]:
    return _rpc(ref, "stat", pb.StatRequest(path=path), f"check whether {path} exists", path, lambda r: True,
                timeout, user, special={Code.NOT_FOUND: lambda e: False})


def make_dir(ref: SandboxRef, path: str, *, user: str | None, timeout: float | None) -> RpcCall[bool]:
    """True if created, False if it already existed (E2B's meaning); parents are created too."""
    return _rpc(ref, "make_dir", pb.MakeDirRequest(path=path), f"make directory {path}", path, lambda r: True,
                timeout, user, special={Code.ALREADY_EXISTS: lambda e: False})


def rename(ref: SandboxRef, old_path: str, new_path: str, *, user: str | None,
           timeout: float | None) -> RpcCall[EntryInfo]:
    return _rpc(ref, "move", pb.MoveRequest(source=old_path, destination=new_path),
                f"rename {old_path} to {new_path}", old_path, lambda r: entry_info(r.entry), timeout, user)


def remove(ref: SandboxRef, path: str, *, user: str | None, timeout: float | None) -> RpcCall[None]:
    return _rpc(ref, "remove", pb.RemoveRequest(path=path), f"remove {path}", path, lambda r: None, timeout, user)


def event(message: pb.FilesystemEvent) -> FilesystemEvent | None:
    kind = _EVENT_TYPES.get(message.type)
    return FilesystemEvent(name=message.name, type=kind) if kind is not None else None


def create_watcher(ref: SandboxRef, path: str, recursive: bool, *, user: str | None,
                   timeout: float | None) -> RpcCall[str]:
    """`CreateWatcher`: a watcher envd keeps events for until polled (the sync face's way to watch)."""
    request = pb.CreateWatcherRequest(path=path, recursive=recursive)
    return _rpc(ref, "create_watcher", request, f"watch {path}", path, lambda r: r.watcher_id, timeout, user)


def watcher_events(ref: SandboxRef, watcher_id: str, path: str, *,
                   timeout: float | None) -> RpcCall[list[FilesystemEvent]]:
    return _rpc(ref, "get_watcher_events", pb.GetWatcherEventsRequest(watcher_id=watcher_id),
                f"get the events of the watcher on {path}", None,
                lambda r: [e for e in map(event, r.events) if e is not None], timeout)


def remove_watcher(ref: SandboxRef, watcher_id: str, path: str, *, timeout: float | None) -> RpcCall[None]:
    return _rpc(ref, "remove_watcher", pb.RemoveWatcherRequest(watcher_id=watcher_id),
                f"stop watching {path}", None, lambda r: None, timeout,
                special={Code.NOT_FOUND: lambda e: None})


def watch_stream(ref: SandboxRef, path: str, recursive: bool, *, user: str | None,
                 timeout: float | None) -> RpcCall[Any]:
    """`WatchDir`: a stream whose first message is `start`, then events (the async face's way to watch).
    Parsed messages are the `start` marker (the string "start") or FilesystemEvents."""
    headers = ref.envd_headers(user, stream=True)
    return RpcCall("filesystem", "watch_dir", pb.WatchDirRequest(path=path, recursive=recursive), headers,
                   ref.context(f"watch {path}", path=path, timeout=timeout), _watch_message, timeout)


def _watch_message(message: pb.WatchDirResponse) -> FilesystemEvent | str | None:
    kind = message.event
    if kind is None or kind.field == "keepalive":
        return None
    if kind.field == "start":
        return "start"
    return event(kind.value)
