"""`sandhive sandbox run-code ID [--language L] [--context CTX] [--out-dir DIR] FILE|-`: run code in a
code-interpreter sandbox's kernel (docs/code-interpreter.md).

The code's stdout and stderr stream to ours as they arrive. Each result prints its text on stdout as it comes
(a DataFrame's, a value's); what a terminal cannot show (PNG, JPEG, PDF, SVG) is saved to --out-dir, and a note
on stderr says where, and what else the result held (HTML, a chart). An exception in the code prints its
traceback and exits 1; a --timeout interrupts the kernel and exits 124, as `exec` does.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from . import client
from .common import EXIT_FAILED, EXIT_USAGE, err, fail
from .config import ApiKey, ApiUrl, resolve
from .exec_cmd import EXIT_INTERRUPTED, EXIT_TIMEOUT
from .failures import reporting

# Result fields saved to files: field → (file suffix, what it is, base64 on the wire?)
SAVED = {"png": ("png", "PNG", True), "jpeg": ("jpg", "JPEG", True), "pdf": ("pdf", "PDF", True),
         "svg": ("svg", "SVG", False)}
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def read_code(source: str) -> tuple[str, str]:
    """The code and a stem for saved files: FILE's name, or `stdin` for `-`."""
    if source == "-":
        return sys.stdin.read(), "stdin"
    path = Path(source)
    try:
        return path.read_text(), path.stem or "code"
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {source}: {getattr(exc, 'strerror', None) or exc}", EXIT_USAGE)


def free_path(out_dir: Path, stem: str, suffix: str) -> Path:
    """`<stem>-<n>.<suffix>` with the first n not taken, so a run never overwrites an earlier run's file."""
    n = 1
    while (path := out_dir / f"{stem}-{n}.{suffix}").exists():
        n += 1
    return path


def chart_note(chart: dict[str, Any]) -> str:
    title = f" {chart['title']!r}" if chart.get("title") else ""
    count = len(chart.get("elements") or [])
    return f"a {chart.get('type', 'unknown')} chart{title} with {count} element{'' if count == 1 else 's'}"


class ResultPrinter:
    """`on_result`: text to stdout, files to `out_dir`, notes to stderr."""

    def __init__(self, out_dir: Path, stem: str) -> None:
        self.out_dir = out_dir
        self.stem = stem
        self.saved: list[Path] = []
        self.failed: list[str] = []  # results that could not be saved

    def __call__(self, result: Any) -> None:
        notes = []
        for field, (suffix, kind, b64) in SAVED.items():
            value = getattr(result, field)
            if not value:
                continue
            data = base64.b64decode(value) if b64 else value.encode()
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                path = free_path(self.out_dir, self.stem, suffix)
                path.write_bytes(data)
            except OSError as exc:  # the run goes on (its output is still worth seeing); the exit code says it
                self.failed.append(f"cannot save the {kind} result in {self.out_dir}: {exc.strerror or exc}")
                notes.append(f"{kind} not saved ({exc.strerror or exc})")
                continue
            self.saved.append(path)
            notes.append(f"{kind} saved to {_shown(path)} ({len(data)} bytes)")
        if result.chart:
            notes.append(chart_note(result.chart))
        if result.html:
            notes.append(f"an HTML representation ({len(result.html)} characters)" +
                         (", shown as text" if result.text else ""))
        others = [f for f in ("markdown", "latex", "json", "javascript") if getattr(result, f) not in (None, "")]
        if others:
            notes.append(f"also {', '.join(others)}")
        text = result.text
        # A figure's text is only its repr (`<Figure size 640x480 with 1 Axes>`): the file is the result.
        if text and not (result.png or result.jpeg or result.svg or result.pdf):
            _write(sys.stdout, text if text.endswith("\n") else text + "\n")
        elif not text and (result.markdown or result.json is not None):
            _write(sys.stdout, (result.markdown or json.dumps(result.json)) + "\n")
        if notes:
            sys.stdout.flush()
            err.print(f"[dim]result: {escape('; '.join(notes))}[/]", highlight=False)


def _shown(path: Path) -> str:
    """The path as the user would type it: relative to the current directory when under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _write(stream: Any, text: str) -> None:
    stream.write(text)
    stream.flush()


def error_text(name: str, value: str, traceback: str, colour: bool) -> str:
    """The traceback as the kernel sent it (ANSI colours kept on a terminal), ending with `Name: value`."""
    text = traceback if colour else ANSI.sub("", traceback)
    last = f"{name}: {value}"
    if ANSI.sub("", text).rstrip().endswith(last):
        return text.rstrip("\n") + "\n"
    return (text.rstrip("\n") + "\n" if text.strip() else "") + last + "\n"


def run_code_command(
    sandbox_id: Annotated[str, typer.Argument(metavar="ID", help="A sandbox of the code-interpreter-v1 template.")],
    source: Annotated[str, typer.Argument(metavar="FILE|-", help="The code to run; `-` reads it from stdin.")],
    language: Annotated[str | None, typer.Option("--language", "-l", help="python (default), or another "
                                                 "language the template has a kernel for.")] = None,
    context: Annotated[str | None, typer.Option("--context", "-c", help="A code context's id (its own kernel, "
                                                "state and cwd) instead of the language's default.")] = None,
    out_dir: Annotated[Path, typer.Option("--out-dir", "-o", help="Where PNG, JPEG, PDF and SVG results are "
                                          "saved.")] = Path("."),
    timeout: Annotated[float, typer.Option(min=0, help="Interrupt the code after this many seconds "
                                           "(0: never).")] = 300,
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Run code in a code-interpreter sandbox: output streams here, results print, images are saved.

    Exits 1 if the code raised (its traceback is printed), 124 if it ran past --timeout."""
    if language and context:
        fail("--language and --context exclude each other: a context has its language", EXIT_USAGE)
    code, stem = read_code(source)
    target = resolve(url, api_key)
    printer = ResultPrinter(out_dir.expanduser(), stem)
    sdk = client.sdk()
    with reporting(target.url, f"cannot run code in sandbox {sandbox_id}"):
        sandbox = client.connect_code_interpreter(target, sandbox_id)
        try:
            execution = sandbox.run_code(code, language=language, context=context, timeout=timeout,
                                         on_stdout=lambda m: _write(sys.stdout, m.line),
                                         on_stderr=lambda m: _write(sys.stderr, m.line), on_result=printer)
        except sdk.TimeoutException as exc:
            if "longer than its timeout" not in str(exc):
                raise
            err.print(f"[bold red]error:[/] the code ran longer than --timeout {timeout:g}s and was interrupted "
                      "(the context keeps its state)")
            raise typer.Exit(EXIT_TIMEOUT) from None
        except KeyboardInterrupt:  # leaving the request interrupts the kernel
            raise typer.Exit(EXIT_INTERRUPTED) from None
    if printer.failed:
        fail(printer.failed[0], EXIT_FAILED)
    if execution.error is not None:
        e = execution.error
        sys.stdout.flush()
        sys.stderr.write(error_text(e.name, e.value, e.traceback, colour=err.is_terminal and not os.environ.get(
            "NO_COLOR")))
        sys.stderr.flush()
        raise typer.Exit(EXIT_FAILED)
