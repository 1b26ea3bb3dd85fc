"""What a client does inside a sandbox through envd, as the edge proxy sees it (issue 18's audit log).

The proxy runs on the host, outside every sandbox, and every envd call a client makes passes through it. So it
records what was asked, and what envd answered, where nothing inside the sandbox can forge or erase it.
Only a few kinds of request are looked at, each by its (method, path) on envd's port; for every other request
the proxy's hot path pays one dictionary lookup:

- `process.Process/Start`: the request (one enveloped Connect message: cmd, args, cwd, pty) and the user (its
  Basic auth), then the streamed events: the start (pid) and the end (exit code, duration, measured here).
  A Start with `pty` is a PTY session (`pty.start`/`pty.end`). A stream that closes after the start and
  before the end (a background command whose client went away) records `process.detach`, and the process is
  remembered (`Detached`), so the end is recorded when a client reconnects to it (`process.Process/Connect`)
  and sees it end: a command never has a start without either its end or the moment nobody watched any more.
- `POST /files`: a write; the bytes are counted as they stream past (never buffered), the paths come from the
  query's `path` or, for a multipart upload of several files, from envd's answer (a short JSON list).
- `filesystem.Filesystem/Remove` and `/Move`: unary requests (a path; a source and a destination).

Parsing is defensive: a body that does not parse still yields an event (with what could be read), never an
error on the client's request. Each observer hands its events to a `Sink`; the API's `AuditLog` stores them.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from .routing import ENVD_PORT

# (sandbox_id, team_id or None, action, target, detail)
Sink = Callable[[str, "str | None", str, "str | None", dict[str, Any]], None]

MAX_REQUEST = 256 * 1024  # a Start/Remove/Move request body kept for parsing (args and envs of a command)
MAX_ANSWER = 64 * 1024  # envd's answer to a file write (a JSON list of the files written)
MAX_FRAME = 64 * 1024  # a streamed event larger than this is output (data), skipped without being kept
END_STREAM = 0x02  # Connect's envelope flag of the end-of-stream message (trailers, error)


def basic_user(raw_headers: list[tuple[bytes, bytes]]) -> str | None:
    """The user of `Authorization: Basic base64("<user>:")` (envd's RPC user), or None (envd's default)."""
    for key, value in raw_headers:
        if key.lower() == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() != b"basic":
                return None
            try:
                return base64.b64decode(token.strip(), validate=True).decode("utf-8", "replace").partition(":")[0]
            except (binascii.Error, ValueError):
                return None
    return None


def content_type(raw_headers: list[tuple[bytes, bytes]]) -> str:
    for key, value in raw_headers:
        if key.lower() == b"content-type":
            return value.decode("latin-1").partition(";")[0].strip().lower()
    return ""


def unenvelope(body: bytes) -> bytes:
    """The first message of a Connect streaming body (5-byte envelope: flags, big-endian length)."""
    if len(body) < 5:
        return b""
    return body[5:5 + int.from_bytes(body[1:5], "big")]


def decode_message(payload: bytes, binary: bool, message_class: Any) -> dict[str, Any]:
    """A Connect message as a JSON-like dict (protobuf JSON names), whether it came as JSON or binary."""
    if binary:
        payload = message_class.from_binary(payload).to_json().encode()
    value = json.loads(payload) if payload else {}
    return value if isinstance(value, dict) else {}


def parse_start(body: bytes, ctype: str) -> dict[str, Any]:
    """cmd, args, cwd, tag and whether a PTY was asked, from a `Start` request body (empty dict: unreadable)."""
    from ..rpc.process import process_pb as pb  # the generated module: loaded on the first Start, not at import

    binary = "proto" in ctype
    payload = unenvelope(body) if "connect+" in ctype else body
    try:
        request = decode_message(payload, binary, pb.StartRequest)
    except Exception:
        return {}
    process = request.get("process")
    if not isinstance(process, dict):
        process = {}
    args = process.get("args")
    if not isinstance(args, list):
        args = []
    out: dict[str, Any] = {"cmd": str(process.get("cmd", "")), "args": [str(a) for a in args],
                           "cwd": process.get("cwd"), "pty": "pty" in request}
    if request.get("tag"):
        out["tag"] = str(request["tag"])
    return out


def parse_unary(body: bytes, ctype: str, message_class_name: str) -> dict[str, Any]:
    """A unary filesystem request (`application/json` or `application/proto`) as a dict; {} when unreadable."""
    from ..rpc.filesystem import filesystem_pb as fpb

    try:
        return decode_message(body, "proto" in ctype, getattr(fpb, message_class_name))
    except Exception:
        return {}


def event_of(payload: bytes, binary: bool) -> tuple[str, dict[str, Any]] | None:
    """("start", {pid}) or ("end", {exitCode, ...}) from one streamed `StartResponse`; None for the rest."""
    if not binary and b'"start"' not in payload and b'"end"' not in payload:
        return None  # output and keepalives, told apart without parsing (base64 never holds a quote)
    from ..rpc.process import process_pb as pb

    try:
        message = decode_message(payload, binary, pb.StartResponse)
    except Exception:
        return None
    event = message.get("event")
    if not isinstance(event, dict):
        return None
    for kind in ("start", "end"):
        if isinstance(event.get(kind), dict):
            return kind, event[kind]
    return None


class Frames:
    """Splits a Connect stream into its enveloped messages as chunks arrive; a message larger than MAX_FRAME is
    skipped (counted down, never kept), so a command's output costs no copies here."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skip = 0

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        view = memoryview(chunk)
        if self._skip:
            taken = min(self._skip, len(view))
            self._skip -= taken
            view = view[taken:]
        self._buffer += view
        while len(self._buffer) >= 5:
            flags, size = self._buffer[0], int.from_bytes(self._buffer[1:5], "big")
            if size > MAX_FRAME:
                available = len(self._buffer) - 5
                self._skip = max(0, size - available)
                del self._buffer[:5 + min(size, available)]
                continue
            if len(self._buffer) < 5 + size:
                break
            out.append((flags, bytes(self._buffer[5:5 + size])))
            del self._buffer[:5 + size]
        return out


@dataclass(frozen=True)
class Watched:
    """A process whose client stopped watching it before it ended: what its later end is recorded with."""

    kind: str  # "process" or "pty"
    cmd: str | None
    started: float  # time.monotonic() at its start


class Detached:
    """Processes started through this proxy whose Start stream closed before their end, by (sandbox, pid).

    Bounded (oldest forgotten first), because a process that is never reconnected to is never taken out; in
    memory, because it only joins two streams that pass through this one proxy process."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._watched: OrderedDict[tuple[str, int], Watched] = OrderedDict()

    def add(self, sandbox_id: str, pid: int, watched: Watched) -> None:
        self._watched[(sandbox_id, pid)] = watched
        self._watched.move_to_end((sandbox_id, pid))
        while len(self._watched) > self.limit:
            self._watched.popitem(last=False)

    def take(self, sandbox_id: str, pid: int) -> Watched | None:
        return self._watched.pop((sandbox_id, pid), None)


DETACHED = Detached()  # one per proxy process: Start and Connect observers of the same sandbox meet here


class Observer:
    """One audited exchange: fed the request body, the response status and body, then finished once."""

    def __init__(self, sink: Sink, sandbox_id: str, team_id: str | None) -> None:
        self.sink = sink
        self.sandbox_id = sandbox_id
        self.team_id = team_id
        self.status = 0
        self._finished = False

    def emit(self, action: str, target: str | None, detail: dict[str, Any]) -> None:
        self.sink(self.sandbox_id, self.team_id, action, target, detail)

    def request_chunk(self, chunk: bytes) -> None:
        pass

    def response_start(self, status: int) -> None:
        self.status = status

    def response_chunk(self, chunk: bytes) -> None:
        pass

    def finish(self) -> None:
        """Record what is left to record; called before the client gets the end of the answer (so a client that
        reads the audit log next finds it), and again, harmlessly, when the exchange is over however it ended."""
        if not self._finished:
            self._finished = True
            self._finish()

    def _finish(self) -> None:
        pass


class _Kept(Observer):
    """Keeps the request body up to MAX_REQUEST (these bodies are small)."""

    def __init__(self, sink: Sink, sandbox_id: str, team_id: str | None, ctype: str) -> None:
        super().__init__(sink, sandbox_id, team_id)
        self.ctype = ctype
        self.body = bytearray()
        self.truncated = False

    def request_chunk(self, chunk: bytes) -> None:
        if len(self.body) + len(chunk) <= MAX_REQUEST:
            self.body += chunk
        else:
            self.truncated = True


class StartObserver(_Kept):
    """`process.Process/Start`: `process.start`/`process.end` (or `pty.*`), with the pid, exit code and duration."""

    def __init__(self, sink: Sink, sandbox_id: str, team_id: str | None, ctype: str, user: str | None) -> None:
        super().__init__(sink, sandbox_id, team_id, ctype)
        self.user = user
        self.frames = Frames()
        self.request: dict[str, Any] | None = None
        self.pid: int | None = None
        self.started = 0.0
        self.ended = False

    def _request(self) -> dict[str, Any]:
        if self.request is None:
            self.request = parse_start(bytes(self.body), self.ctype) if not self.truncated else {}
            self.body = bytearray()
        return self.request

    def _kind(self) -> str:
        return "pty" if self._request().get("pty") else "process"

    def response_chunk(self, chunk: bytes) -> None:
        if self.ended:
            return
        binary = "proto" in self.ctype
        for flags, payload in self.frames.feed(chunk):
            if flags & END_STREAM:
                if self.pid is None:  # refused before it started (a bad user, cwd, or command)
                    self._emit_start(error=_trailer_error(payload))
                else:  # the stream's deadline passed, or envd ended it: the process runs on unwatched
                    self._detach()
                self.ended = True
                return
            event = event_of(payload, binary)
            if event is None:
                continue
            kind, fields = event
            if kind == "start" and self.pid is None:
                self.pid = int(fields.get("pid", 0) or 0)
                self.started = time.monotonic()
                self._emit_start()
            elif kind == "end":
                self.emit(f"{self._kind()}.end", self._request().get("cmd"),
                          end_detail(self.pid, fields, self.started))
                self.ended = True
                return

    def _emit_start(self, error: str | None = None) -> None:
        request = self._request()
        detail: dict[str, Any] = {"cmd": request.get("cmd"), "args": request.get("args", []),
                                  "user": self.user, "cwd": request.get("cwd"), "pid": self.pid}
        if request.get("tag"):
            detail["tag"] = request["tag"]
        if self.truncated:
            detail["truncated"] = True
        if error is not None or self.status != 200:
            detail["error"] = error or f"HTTP {self.status}"
        self.emit(f"{self._kind()}.start", request.get("cmd"), detail)

    def _finish(self) -> None:
        if self.ended:
            return
        if self.pid is None:
            self._emit_start(error=f"HTTP {self.status}" if self.status != 200 else "stream closed before start")
            return
        self._detach()

    def _detach(self) -> None:
        cmd = self._request().get("cmd")
        self.emit(f"{self._kind()}.detach", cmd, {
            "pid": self.pid, "durationMs": round((time.monotonic() - self.started) * 1000, 1),
            "reason": "the client stopped watching before the end; the end is recorded when a client reconnects"})
        if self.pid is not None:
            DETACHED.add(self.sandbox_id, self.pid, Watched(self._kind(), cmd, self.started))


class ConnectObserver(Observer):
    """`process.Process/Connect`: the end of a process whose Start stream had closed (see `Detached`); a
    Connect to a process that someone still watches records nothing, so no end is recorded twice."""

    def __init__(self, sink: Sink, sandbox_id: str, team_id: str | None, ctype: str, user: str | None) -> None:
        super().__init__(sink, sandbox_id, team_id)
        self.binary = "proto" in ctype
        self.user = user
        self.frames = Frames()
        self.pid: int | None = None
        self.done = False

    def response_chunk(self, chunk: bytes) -> None:
        if self.done:
            return
        for flags, payload in self.frames.feed(chunk):
            event = None if flags & END_STREAM else event_of(payload, self.binary)
            if event is None:
                if flags & END_STREAM:
                    self.done = True
                    return
                continue
            kind, fields = event
            if kind == "start" and self.pid is None:
                self.pid = int(fields.get("pid", 0) or 0)
            elif kind == "end" and self.pid is not None:
                self.done = True
                watched = DETACHED.take(self.sandbox_id, self.pid)
                if watched is not None:
                    detail = end_detail(self.pid, fields, watched.started)
                    detail.update(reconnected=True, user=self.user)
                    self.emit(f"{watched.kind}.end", watched.cmd, detail)
                return


def end_detail(pid: int | None, fields: dict[str, Any], started: float) -> dict[str, Any]:
    """What a process end records: its exit, and its duration measured here since its start."""
    detail: dict[str, Any] = {
        "pid": pid, "exitCode": int(fields.get("exitCode", 0) or 0),
        "exited": bool(fields.get("exited", False)), "status": fields.get("status", ""),
        "durationMs": round((time.monotonic() - started) * 1000, 1) if started else None}
    if fields.get("error"):
        detail["error"] = str(fields["error"])[:1000]
    return detail


def _trailer_error(payload: bytes) -> str:
    try:
        value = json.loads(payload)
    except ValueError:
        return "error"
    error = value.get("error") if isinstance(value, dict) else None
    if isinstance(error, dict):
        return f"{error.get('code', 'error')}: {error.get('message', '')}"[:1000]
    return "stream ended before start"


class FileWriteObserver(Observer):
    """`POST /files`: `file.write` with the path(s) and the bytes sent (counted, not kept)."""

    def __init__(self, sink: Sink, sandbox_id: str, team_id: str | None, query: dict[str, list[str]],
                 user: str | None) -> None:
        super().__init__(sink, sandbox_id, team_id)
        self.path = next(iter(query.get("path", [])), None)
        self.user = next(iter(query.get("username", [])), None) or user
        self.bytes = 0
        self.answer = bytearray()

    def request_chunk(self, chunk: bytes) -> None:
        self.bytes += len(chunk)

    def response_chunk(self, chunk: bytes) -> None:
        if self.status == 200 and len(self.answer) + len(chunk) <= MAX_ANSWER:
            self.answer += chunk

    def _finish(self) -> None:
        paths = [self.path] if self.path else _written_paths(bytes(self.answer))
        detail: dict[str, Any] = {"path": paths[0] if paths else None, "bytes": self.bytes, "user": self.user}
        if len(paths) > 1:
            detail["paths"] = paths
        if self.status != 200:
            detail["error"] = f"HTTP {self.status}"
        self.emit("file.write", paths[0] if paths else None, detail)


def _written_paths(answer: bytes) -> list[str]:
    try:
        entries = json.loads(answer)
    except ValueError:
        return []
    if not isinstance(entries, list):
        return []
    return [str(e["path"]) for e in entries if isinstance(e, dict) and "path" in e][:1000]


class UnaryObserver(_Kept):
    """`Filesystem/Remove` (`file.remove`, a path) and `Filesystem/Move` (`file.rename`, source → destination)."""

    def __init__(self, sink: Sink, sandbox_id: str, team_id: str | None, ctype: str, user: str | None,
                 move: bool) -> None:
        super().__init__(sink, sandbox_id, team_id, ctype)
        self.user = user
        self.move = move

    def _finish(self) -> None:
        request = {} if self.truncated else parse_unary(bytes(self.body), self.ctype,
                                                        "MoveRequest" if self.move else "RemoveRequest")
        detail: dict[str, Any] = {"user": self.user}
        if self.move:
            detail.update(source=request.get("source"), destination=request.get("destination"))
            target = request.get("source")
        else:
            detail["path"] = target = request.get("path")
        if self.status != 200:
            detail["error"] = f"HTTP {self.status}"
        self.emit("file.rename" if self.move else "file.remove", target, detail)


_AUDITED = {("POST", "/process.Process/Start"): "start", ("POST", "/process.Process/Connect"): "connect",
            ("POST", "/files"): "write",
            ("POST", "/filesystem.Filesystem/Remove"): "remove", ("POST", "/filesystem.Filesystem/Move"): "move"}


def observer_for(sink: Sink | None, port: int, method: str, path: str, query: bytes,
                 raw_headers: list[tuple[bytes, bytes]], sandbox_id: str, team_id: str | None) -> Observer | None:
    """The observer of an envd request the audit log records, or None (for nearly every request)."""
    if sink is None or port != ENVD_PORT:
        return None
    kind = _AUDITED.get((method, path))
    if kind is None and ("//" in path or path.endswith("/") or "/." in path):  # no spelling slips past
        kind = _AUDITED.get((method, "/" + posixpath.normpath(path).lstrip("/")))
    if kind is None:
        return None
    user = basic_user(raw_headers)
    if kind == "write":
        return FileWriteObserver(sink, sandbox_id, team_id, parse_qs(query.decode("latin-1")), user)
    ctype = content_type(raw_headers)
    if kind == "start":
        return StartObserver(sink, sandbox_id, team_id, ctype, user)
    if kind == "connect":
        return ConnectObserver(sink, sandbox_id, team_id, ctype, user)
    return UnaryObserver(sink, sandbox_id, team_id, ctype, user, move=kind == "move")
