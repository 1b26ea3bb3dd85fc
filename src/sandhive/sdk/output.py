"""One command's output, collected from its event stream the same way by the sync and the async handle.

stdout and stderr are decoded incrementally as UTF-8 with `errors="replace"`, so a character split across
two data events comes out whole and invalid bytes never raise. PTY output stays bytes (a terminal's).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import Any

from ..rpc.process import process_pb as pb
from .exceptions import CommandExitException, SandboxException, TimeoutException
from .models import CommandResult

# One piece of output as handles hand it out: (stdout, stderr, pty) with exactly one of them set.
Chunk = tuple[str | None, str | None, bytes | None]
OutputCallback = Callable[[Any], Any]  # sync faces call it; async faces also await what it returns


def first_pid(event: pb.ProcessEvent | None, what: str) -> int:
    """A stream's first event must say which process it is about."""
    if event is None or event.event is None or event.event.field != "start":
        raise SandboxException(f"{what}: envd did not confirm the start (its first event was {event!r})")
    return event.event.value.pid


class CommandOutput:
    """Accumulates a process's events into its output and, once it ends, its result."""

    def __init__(self, pid: int, label: str) -> None:
        self.pid = pid
        self.label = label  # what runs, for messages: "command 'ls -l'", "the terminal", "process 42"
        self._decoders = {"stdout": codecs.getincrementaldecoder("utf-8")(errors="replace"),
                          "stderr": codecs.getincrementaldecoder("utf-8")(errors="replace")}
        self._parts: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._end: pb.ProcessEvent.EndEvent | None = None

    def feed(self, event: pb.ProcessEvent) -> list[Chunk]:
        """Take one event; answer the output it carries (decoded), in order."""
        kind = event.event
        if kind is None:
            return []
        if kind.field == "data" and kind.value.output is not None:
            stream, data = kind.value.output.field, kind.value.output.value
            if stream == "pty":
                return [(None, None, bytes(data))]
            return self._text(stream, self._decoders[stream].decode(data))
        if kind.field == "end":
            chunks = self.flush()
            self._end = kind.value
            return chunks
        return []

    def flush(self) -> list[Chunk]:
        """Whatever the decoders still hold (an incomplete character becomes U+FFFD)."""
        chunks: list[Chunk] = []
        for stream, decoder in self._decoders.items():
            chunks += self._text(stream, decoder.decode(b"", final=True))
        return chunks

    def _text(self, stream: str, text: str) -> list[Chunk]:
        if not text:
            return []
        self._parts[stream].append(text)
        return [(text, None, None)] if stream == "stdout" else [(None, text, None)]

    @property
    def stdout(self) -> str:
        return "".join(self._parts["stdout"])

    @property
    def stderr(self) -> str:
        return "".join(self._parts["stderr"])

    @property
    def finished(self) -> bool:
        return self._end is not None

    @property
    def exit_code(self) -> int | None:
        return None if self._end is None else self._end.exit_code

    @property
    def error(self) -> str | None:
        if self._end is None or not self._end.has_field("error"):
            return None
        return self._end.error or None

    def result(self) -> CommandResult:
        """The finished command's result, or the exception for a non-zero exit code."""
        if self._end is None:
            raise SandboxException(f"{self.label}: the output stream ended before the process did; reconnect "
                                   f"with commands.connect({self.pid})")
        if self._end.exit_code != 0:
            raise CommandExitException(self.stdout, self.stderr, self._end.exit_code, self.error)
        return CommandResult(self.stdout, self.stderr, 0, self.error)

    def timed_out(self, timeout: float | None) -> TimeoutException:
        return TimeoutException(f"{self.label} did not finish within {timeout:g}s and was killed: pass a larger "
                                "timeout= in seconds (0 means no limit), or run it with background=True")


def callback_for(chunk: Chunk, on_stdout: OutputCallback | None, on_stderr: OutputCallback | None,
                 on_pty: OutputCallback | None) -> tuple[OutputCallback, Any] | None:
    """Which callback (if any) gets this chunk, and with what."""
    stdout, stderr, pty = chunk
    if stdout is not None and on_stdout is not None:
        return on_stdout, stdout
    if stderr is not None and on_stderr is not None:
        return on_stderr, stderr
    if pty is not None and on_pty is not None:
        return on_pty, pty
    return None
