"""Jupyter messages → the NDJSON lines of E2B's `POST /execute` (wire doc §4). Pure: no I/O, stdlib only.

One `ExecutionMapper` per execution takes the kernel's IOPub messages (as `jupyter_client` returns them:
dicts with `header`, `parent_header`, `msg_type`, `content`) and answers the lines to send, in order:

| Jupyter message | line |
|---|---|
| `execute_input` | `{"type": "number_of_executions", "execution_count": n}` |
| `stream` (stdout/stderr) | `{"type": "stdout"/"stderr", "text", "timestamp"}` (ISO 8601, the message's date) |
| `execute_result` | `{"type": "result", ..., "is_main_result": true}` (the MIME bundle, `result_bundle`) |
| `display_data` | `{"type": "result", ..., "is_main_result": false}` |
| `error` | `{"type": "error", "name", "value", "traceback"}` (one string, ANSI colours kept as ipykernel sends) |
| `status: idle` after the input was accepted | the execution is over: `{"type": "end_of_execution"}` |

Messages of other executions (another `parent_header.msg_id`) are ignored.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

# MIME type → the key of E2B's `Result` (the client's `Result(**kwargs)`); anything else goes to `extra`.
MIME_KEYS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "e2b/data": "data",
    "e2b/chart": "chart",
}

Line = dict[str, Any]


def result_bundle(data: dict[str, Any], is_main_result: bool, quotes: str = "'") -> Line:
    """A `result` line from a Jupyter MIME bundle. `text/plain` loses the quotes around a repr'd str (as
    E2B's server does: `'abc'` → `abc`; `quotes`: the kernel's string quotes, `"` too for Deno's `"abc"`);
    binary images are base64 already (Jupyter's JSON encoding)."""
    line: Line = {"type": "result"}
    extra: dict[str, Any] = {}
    for mime, value in data.items():
        key = MIME_KEYS.get(mime)
        if key is None:
            extra[mime] = value
            continue
        if key == "text" and isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] in quotes:
            value = value[1:-1]
        line[key] = value
    if extra:
        line["extra"] = extra
    line["is_main_result"] = is_main_result
    return line


def error_line(name: str, value: str, traceback: str | list[str]) -> Line:
    text = traceback if isinstance(traceback, str) else "\n".join(traceback)
    return {"type": "error", "name": name, "value": value, "traceback": text}


def timestamp(message: dict[str, Any]) -> str:
    """The message's date as ISO 8601 (jupyter_client gives a datetime; raw JSON a string); now if none."""
    date = message.get("header", {}).get("date")
    if isinstance(date, datetime):
        return (date if date.tzinfo else date.replace(tzinfo=UTC)).isoformat()
    if isinstance(date, str) and date:
        return date
    return datetime.now(UTC).isoformat()


def encode(line: Line) -> bytes:
    """One NDJSON line: compact JSON and a newline (the client reads with `iter_lines`)."""
    return json.dumps(line, separators=(",", ":"), default=str).encode() + b"\n"


class ExecutionMapper:
    """Follows one execution (`msg_id`, the `execute_request`'s id) through the kernel's IOPub messages."""

    def __init__(self, msg_id: str, *, hold_end: bool = False, quotes: str = "'") -> None:
        self.msg_id = msg_id
        self.quotes = quotes
        # hold_end: `idle` ends the execution without END, and output that trails it is still mapped; the caller
        # sends END (for a kernel that publishes a cell's last output after its `idle`, as Deno's can)
        self.hold_end = hold_end
        self.input_accepted = False
        self.done = False
        self.errored = False

    def feed(self, message: dict[str, Any]) -> list[Line]:
        """The lines `message` gives (none for another execution's or an uninteresting one)."""
        if message.get("parent_header", {}).get("msg_id") != self.msg_id or (self.done and not self.hold_end):
            return []
        kind = message.get("msg_type") or message.get("header", {}).get("msg_type")
        content = message.get("content", {})
        if kind == "execute_input":
            if self.input_accepted:
                return []
            self.input_accepted = True
            return [{"type": "number_of_executions", "execution_count": content.get("execution_count")}]
        if kind == "stream":
            name = content.get("name")
            if name not in ("stdout", "stderr"):
                return []
            return [{"type": name, "text": content.get("text", ""), "timestamp": timestamp(message)}]
        if kind == "execute_result":
            return [result_bundle(dict(content.get("data", {})), True, self.quotes)]
        if kind == "display_data":
            return [result_bundle(dict(content.get("data", {})), False, self.quotes)]
        if kind == "error":
            self.errored = True
            return [error_line(content.get("ename", ""), content.get("evalue", ""), content.get("traceback", []))]
        if kind == "status" and content.get("execution_state") == "idle" and self.input_accepted and not self.done:
            self.done = True
            return [] if self.hold_end else [END]
        return []

    def reply(self, content: dict[str, Any]) -> list[Line]:
        """The shell channel's `execute_reply`: an error there that IOPub did not carry (e.g. an aborted
        request) still reaches the client."""
        if content.get("status") == "error" and not self.errored:
            self.errored = True
            return [error_line(content.get("ename", ""), content.get("evalue", ""), content.get("traceback", []))]
        if content.get("status") == "aborted" and not self.errored:
            self.errored = True
            return [error_line("ExecutionAborted", "the kernel aborted this execution", "")]
        return []


END: Line = {"type": "end_of_execution"}
