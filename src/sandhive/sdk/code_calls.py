"""The code interpreter's calls (wire doc §4), built once for both faces: `POST /execute` and its NDJSON reader,
and the context calls.

Everything goes to the server's sandbox URL like envd's requests, routed to port 49999 inside the sandbox by the
`E2b-Sandbox-Id`/`E2b-Sandbox-Port` headers and carrying the sandbox's `X-Access-Token` (the server checks it on
`/execute`, as E2B's client sends it). `/execute` answers one JSON object per line as the kernel produces them;
`ExecutionReader` takes the body chunk by chunk, as it arrives, so callbacks fire while the code still runs.

Timeouts: `timeout` bounds the whole execution (E2B's default 300 s, 0 for none) and `request_timeout` only
the connect. httpx bounds each wait for the next chunk by `timeout`; the reader also checks the overall
deadline after every chunk, so code that prints forever is cut off too (code that falls silent just before its
deadline is cut off at most `timeout` after its last output: a waiting read keeps its bound). Either way the
faces stop reading, which closes the connection, and the server interrupts the kernel (the context keeps its
state).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from . import errors
from .code_models import Context, Execution, ExecutionError, OutputMessage, Result
from .exceptions import InvalidArgumentException, SandboxException, TimeoutException
from .ref import SandboxRef
from .wire import HttpCall

TEMPLATE = "code-interpreter-v1"  # E2B's default template for its code interpreter (a Sandhive built-in)
PORT = 49999
DEFAULT_TIMEOUT = 300.0  # seconds an execution may run (E2B's)

Callback = Callable[[Any], Any]


@dataclass(frozen=True)
class Handlers:
    """The user's callbacks (plain functions, or coroutine functions on the async face)."""

    on_stdout: Callback | None = None
    on_stderr: Callback | None = None
    on_result: Callback | None = None
    on_error: Callback | None = None


def headers(ref: SandboxRef) -> dict[str, str]:
    """Routing to port 49999, the envd access token, a private sandbox's traffic token (as E2B's client), JSON."""
    found = {**ref.envd_headers(), "E2b-Sandbox-Port": str(PORT), "Content-Type": "application/json"}
    if ref.traffic_access_token:
        found["E2B-Traffic-Access-Token"] = ref.traffic_access_token
    return found


def _port_closed(ref: SandboxRef, ctx: errors.Context) -> Callable[[httpx.Response], Any]:
    """The proxy's 502s: nothing listening on 49999 means the sandbox is not a code interpreter's."""
    def handle(response: httpx.Response) -> Any:
        if b"port is not open" in response.content:
            raise SandboxException(
                f"{ctx.what}: no code interpreter answers on port {PORT} in sandbox {ref.sandbox_id}: start one "
                f"from the template {TEMPLATE!r} (CodeInterpreter.create()), or wait until its server is up")
        raise errors.from_response(response.status_code, response.content, ctx)
    return handle


def _call(ref: SandboxRef, method: str, path: str, what: str, parse: Callable[[httpx.Response], Any],
          timeout: float | httpx.Timeout | None, seconds: float | None, **fields: Any) -> HttpCall[Any]:
    ctx = ref.context(what, timeout=seconds)
    return HttpCall(method, f"{ref.envd_url}{path}", ctx, parse, headers=headers(ref), timeout=timeout,
                    special={502: _port_closed(ref, ctx)}, **fields)


def context_id(context: Context | str) -> str:
    return context.id if isinstance(context, Context) else str(context)


# ---- contexts -------------------------------------------------------------------------------------------------

def create_context(ref: SandboxRef, cwd: str | None, language: str | None, *,
                   timeout: float | None) -> HttpCall[Context]:
    body = {k: v for k, v in (("language", language), ("cwd", cwd)) if v}
    return _call(ref, "POST", "/contexts", f"create a {language or 'python'} context", lambda r: Context.from_json(
        r.json()), timeout, timeout, json=body)


def list_contexts(ref: SandboxRef, *, timeout: float | None) -> HttpCall[list[Context]]:
    return _call(ref, "GET", "/contexts", "list code contexts",
                 lambda r: [Context.from_json(item) for item in r.json()], timeout, timeout)


def restart_context(ref: SandboxRef, context: Context | str, *, timeout: float | None) -> HttpCall[None]:
    cid = context_id(context)
    return _call(ref, "POST", f"/contexts/{quote(cid, safe='')}/restart", f"restart code context {cid}",
                 lambda r: None, timeout, timeout)


def remove_context(ref: SandboxRef, context: Context | str, *, timeout: float | None) -> HttpCall[None]:
    cid = context_id(context)
    return _call(ref, "DELETE", f"/contexts/{quote(cid, safe='')}", f"remove code context {cid}", lambda r: None,
                 timeout, timeout)


# ---- execute --------------------------------------------------------------------------------------------------

def execution_timeout(timeout: float | None) -> float | None:
    """E2B's rule: None is the default (300 s), 0 is no limit."""
    if timeout is not None and timeout < 0:
        raise InvalidArgumentException(f"timeout must be >= 0 seconds (0 means no limit), not {timeout}")
    return DEFAULT_TIMEOUT if timeout is None else timeout or None


def execute(ref: SandboxRef, code: str, *, language: str | None, context: Context | str | None,
            envs: dict[str, str] | None, timeout: float | None, request_timeout: float | None,
            handlers: Handlers) -> tuple[HttpCall[None], ExecutionReader]:
    """The `/execute` request and the reader for its answer."""
    if language and context:
        raise InvalidArgumentException("run_code takes a language or a context, not both: a context has its "
                                       "language already")
    limit = execution_timeout(timeout)
    connect = ref.config.timeout(request_timeout)
    body = {"code": code, "context_id": context_id(context) if context else None, "language": language or None,
            "env_vars": envs or None}
    where = f"context {context_id(context)}" if context else f"the default {language or 'python'} context"
    call = _call(ref, "POST", "/execute", f"run code in {where} of sandbox {ref.sandbox_id}", lambda r: None,
                 httpx.Timeout(limit, connect=connect), limit, json=body)
    return call, ExecutionReader(handlers, limit)


class NdjsonLines:
    """Bytes in, as they arrive; complete lines out. A line split across chunks waits for its end."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        self._pending += chunk
        *lines, rest = self._pending.split(b"\n")
        self._pending = bytearray(rest)
        return [bytes(line) for line in lines if line.strip()]

    def rest(self) -> bytes:
        """What is left after the last newline (a last line without one)."""
        rest, self._pending = bytes(self._pending), bytearray()
        return rest if rest.strip() else b""


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, int | float):  # E2B's own server sends nanoseconds since the epoch
        return datetime.fromtimestamp(value / 1e9 if value > 1e12 else value).astimezone()
    return None


class ExecutionReader:
    """Builds one `Execution` from `/execute`'s NDJSON body and says which callback to call for each line.

    Pure (no I/O): `feed(chunk)` answers `(callback, argument)` pairs in the order the lines came, for the face
    to call (and, on the async face, await); `finish()` answers the execution once the body has ended.
    """

    def __init__(self, handlers: Handlers, timeout: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.handlers = handlers
        self.timeout = timeout
        self.execution = Execution()
        self.ended = False  # `end_of_execution` seen
        self._lines = NdjsonLines()
        self._clock = clock
        self._started = clock()

    def feed(self, chunk: bytes) -> list[tuple[Callback, Any]]:
        calls = []
        for line in self._lines.feed(chunk):
            call = self.line(line)
            if call is not None:
                calls.append(call)
        return calls

    def line(self, raw: bytes) -> tuple[Callback, Any] | None:
        """Apply one NDJSON line to the execution; the callback it asks for, if the user gave one."""
        try:
            data = json.loads(raw)
            kind = data["type"]
        except (ValueError, TypeError, KeyError):
            raise SandboxException(f"the code interpreter sent a line that is not an output message: "
                                   f"{raw[:200]!r}") from None
        execution, h = self.execution, self.handlers
        if kind == "stdout" or kind == "stderr":
            text = str(data.get("text", ""))
            (execution.logs.stdout if kind == "stdout" else execution.logs.stderr).append(text)
            handler = h.on_stdout if kind == "stdout" else h.on_stderr
            message = OutputMessage(text, _timestamp(data.get("timestamp")), kind == "stderr")
            return (handler, message) if handler else None
        if kind == "result":
            result = Result.from_line(data)
            execution.results.append(result)
            return (h.on_result, result) if h.on_result else None
        if kind == "error":
            execution.error = ExecutionError(str(data.get("name", "")), str(data.get("value", "")),
                                             str(data.get("traceback", "")))
            return (h.on_error, execution.error) if h.on_error else None
        if kind == "number_of_executions":
            execution.execution_count = data.get("execution_count")
        elif kind == "end_of_execution":
            self.ended = True
        return None  # other types (a newer server's) are skipped, as E2B's client does

    def check_deadline(self) -> None:
        """Raise the execution's timeout once it has run `timeout` seconds (even if output keeps coming)."""
        if self.timeout is not None and self._clock() - self._started >= self.timeout:
            raise self._timed_out()

    def timed_out(self, exc: TimeoutException) -> TimeoutException:
        """A timeout while reading: the execution's own (it ran its `timeout`) or the connect's, kept as is."""
        if self.timeout is not None and self._clock() - self._started >= self.timeout:
            return self._timed_out()
        return exc

    def _timed_out(self) -> TimeoutException:
        return TimeoutException(f"the code ran longer than its timeout ({self.timeout:g}s) and was interrupted "
                                "(the context keeps its state): pass a larger timeout= to run_code (0 means no "
                                "limit)")

    def finish(self) -> tuple[Execution, list[tuple[Callback, Any]]]:
        """The execution once the body ended, and the callbacks its last line (if unterminated) asks for."""
        rest = self._lines.rest()
        calls = [call for call in [self.line(rest)] if call is not None] if rest else []
        if not self.ended:
            raise SandboxException("the code interpreter's answer ended before the execution did (the sandbox's "
                                   "server stopped or the connection broke): check that the sandbox is running")
        return self.execution, calls
