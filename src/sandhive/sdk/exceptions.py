"""The SDK's exceptions: one base, one type per thing a caller may want to catch, messages that say what to do.

Names follow E2B's SDK so code written for it catches the same things. Several also derive from the builtin
they mean (`TimeoutError`, `FileNotFoundError`, `ConnectionError`), so generic code handles them too.
"""

from __future__ import annotations


class SandboxException(Exception):
    """Base of every error the SDK raises."""


class TimeoutException(SandboxException, TimeoutError):
    """A request, a command or a stream ran past its timeout."""


class InvalidArgumentException(SandboxException, ValueError):
    """An argument the server (or the SDK, before asking it) refused."""


class NotEnoughSpaceException(SandboxException):
    """The sandbox's disk is full."""


class NotFoundException(SandboxException):
    """The thing asked for (template, process, file, watcher) does not exist."""


class FileNotFoundException(NotFoundException, FileNotFoundError):
    """A path inside the sandbox does not exist."""


class SandboxNotFoundException(NotFoundException):
    """The sandbox does not exist (any more): it was killed, its timeout passed, or another team owns it."""


class AuthenticationException(SandboxException):
    """The API key (or the sandbox's access token) is missing or refused."""


class RateLimitException(SandboxException):
    """The server refused for now: too many requests or sandboxes."""


class ServerUnreachableException(SandboxException, ConnectionError):
    """No Sandhive server answered at the configured URL."""


class CommandExitException(SandboxException):
    """A command ended with a non-zero exit code; its output is attached."""

    def __init__(self, stdout: str, stderr: str, exit_code: int, error: str | None) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.exit_code = exit_code
        self.error = error
        last = stderr.strip().splitlines()[-1:] or stdout.strip().splitlines()[-1:]
        detail = f": {last[0][:200]}" if last else f" ({error})" if error else ""
        super().__init__(f"command exited with code {exit_code}{detail} "
                         "(the full output is on this exception's .stdout and .stderr)")
