"""What `run_code` hands back: `Execution` (its `Result`s, `Logs` and `ExecutionError`), `OutputMessage` and
`Context`, with the names and meanings of E2B's `e2b_code_interpreter`, shared by both faces.

A `Result` is one MIME bundle from the kernel (wire doc §4): the cell's value (`is_main_result`) or something
it displayed (a plot, a table). Images are base64 text as the server sends them; `png_bytes()` and friends
decode them. `chart` is the server's `e2b/chart` description as sent: a dict with `type`, `title`, labels
and `elements` (docs/code-interpreter.md, Charts).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# The keys of a `result` line that are MIME representations, in the order `formats()` lists them.
FORMATS = ("text", "html", "markdown", "svg", "png", "jpeg", "pdf", "latex", "json", "javascript", "data", "chart")
BINARY_FORMATS = {"png": "png", "jpeg": "jpg", "pdf": "pdf"}  # base64 on the wire → file suffix


@dataclass
class OutputMessage:
    """One chunk of stdout or stderr, as `on_stdout`/`on_stderr` get it; `str()` is the text."""

    line: str
    timestamp: datetime | None = None  # when the kernel printed it (None if the server sent no readable time)
    error: bool = False  # True for stderr

    def __str__(self) -> str:
        return self.line


@dataclass
class ExecutionError:
    """An exception the code raised: its class name, message, and the traceback as one string (it may carry
    the kernel's ANSI colours)."""

    name: str
    value: str
    traceback: str

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "value": self.value, "traceback": self.traceback})


@dataclass
class Result:
    """One MIME bundle: the cell's value (`is_main_result`) or something it displayed."""

    text: str | None = None
    html: str | None = None
    markdown: str | None = None
    svg: str | None = None
    png: str | None = None  # base64
    jpeg: str | None = None  # base64
    pdf: str | None = None  # base64
    latex: str | None = None
    json: dict[str, Any] | None = None
    javascript: str | None = None
    data: dict[str, Any] | None = None  # a pandas DataFrame: its columns as lists (`e2b/data`)
    chart: dict[str, Any] | None = None  # a matplotlib figure described (`e2b/chart`): type, title, elements
    is_main_result: bool = False
    extra: dict[str, Any] | None = None  # MIME types without a field of their own

    @classmethod
    def from_line(cls, data: dict[str, Any]) -> Result:
        """From a `result` line; unknown keys (a newer server's) are ignored, as E2B's client does."""
        known = {k: data[k] for k in FORMATS if data.get(k) is not None}
        return cls(**known, is_main_result=bool(data.get("is_main_result")), extra=data.get("extra") or None)

    def __getitem__(self, item: str) -> Any:
        return getattr(self, item)

    def formats(self) -> list[str]:
        """The representations this result has (`extra`'s MIME types last)."""
        return [f for f in FORMATS if getattr(self, f)] + list(self.extra or {})

    def binary(self, fmt: str) -> bytes | None:
        """A base64 representation (`png`, `jpeg`, `pdf`) decoded, or None if this result has none."""
        if fmt not in BINARY_FORMATS:
            raise ValueError(f"{fmt!r} is not a binary format ({', '.join(BINARY_FORMATS)})")
        value = getattr(self, fmt)
        return base64.b64decode(value) if value else None

    def png_bytes(self) -> bytes | None:
        return self.binary("png")

    def __repr__(self) -> str:
        if self.text:
            return f"Result({self.text})"
        return f"Result(Formats: {', '.join(self.formats())})"

    # IPython shows a Result in a notebook by these (as E2B's does).
    def _repr_html_(self) -> str | None:
        return self.html

    def _repr_markdown_(self) -> str | None:
        return self.markdown

    def _repr_svg_(self) -> str | None:
        return self.svg

    def _repr_png_(self) -> str | None:
        return self.png

    def _repr_jpeg_(self) -> str | None:
        return self.jpeg

    def _repr_latex_(self) -> str | None:
        return self.latex


@dataclass
class Logs:
    """What the code printed: stdout and stderr chunks, in the order they arrived."""

    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"stdout": self.stdout, "stderr": self.stderr})


@dataclass
class Execution:
    """One `run_code`: its results, logs, error (None if it ran through) and the kernel's execution count."""

    results: list[Result] = field(default_factory=list)
    logs: Logs = field(default_factory=Logs)
    error: ExecutionError | None = None
    execution_count: int | None = None

    @property
    def text(self) -> str | None:
        """The text of the cell's value (its main result), as a notebook shows `Out[n]`."""
        for result in self.results:
            if result.is_main_result:
                return result.text
        return None

    def to_json(self) -> str:
        results = [{**{k: r[k] for k in r.formats() if k not in (r.extra or {})}, "text": r.text,
                    **({"extra": r.extra} if r.extra else {})} for r in self.results]
        return json.dumps({"results": results, "logs": json.loads(self.logs.to_json()),
                           "error": json.loads(self.error.to_json()) if self.error else None})


@dataclass(frozen=True)
class Context:
    """A kernel of its own to run code in: its state (variables, imports, cwd) is apart from other contexts'."""

    id: str
    language: str
    cwd: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Context:
        return cls(id=str(data["id"]), language=str(data.get("language") or "python"), cwd=str(data.get("cwd") or ""))
