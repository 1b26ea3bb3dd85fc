"""Errors from the server or the SDK → one line a user can act on and an exit code a script can test.

The SDK's exceptions already say what to do; the CLI keeps their words and picks the exit code by their type.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from types import ModuleType

import httpx

from .common import EXIT_AUTH, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_UNREACHABLE, fail

START_SERVER = ("Is `sandhive serve` running? Start it with `make up` (as root), "
                "or point --url (or SANDHIVE_API_URL) at it.")
NEW_KEY = "Create one with `sandhive keys create` and save it with `sandhive auth login --api-key KEY`."
SEE_LIST = "It was killed, its timeout passed, or it belongs to another team: see `sandhive sandbox list`."


class ApiAnswer(Exception):
    """An error answer to a plain REST call: the status and the API's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _sdk_exceptions() -> ModuleType | None:
    """The SDK's exceptions module if the SDK is loaded: nothing SDK-made can be raised before that, and
    classifying a REST error must not pay for importing the SDK."""
    return sys.modules.get("sandhive.sdk.exceptions")


def _is(exc: BaseException, name: str) -> bool:
    module = _sdk_exceptions()
    return module is not None and isinstance(exc, getattr(module, name))


def classify(exc: BaseException, url: str) -> tuple[int, str] | None:
    """(exit code, message) for an error a user can cause or fix; None for a bug, which keeps its traceback."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, ConnectionError)):
        return EXIT_UNREACHABLE, f"cannot reach the Sandhive server at {url}. {START_SERVER}"
    if isinstance(exc, ApiAnswer):
        if exc.status == 401:
            return EXIT_AUTH, f"{url} refused the API key ({exc.message}). {NEW_KEY}"
        if exc.status == 404:
            return EXIT_NOT_FOUND, exc.message
        return EXIT_FAILED, f"the server answered {exc.status}: {exc.message}"
    if _is(exc, "AuthenticationException"):
        return EXIT_AUTH, text
    if _is(exc, "NotFoundException"):  # SandboxNotFoundException's too
        return EXIT_NOT_FOUND, text
    if isinstance(exc, httpx.TimeoutException) or _is(exc, "TimeoutException"):
        return EXIT_FAILED, f"timed out: {text}"
    if isinstance(exc, httpx.HTTPError) or _is(exc, "SandboxException"):
        return EXIT_FAILED, text
    return None


@contextlib.contextmanager
def reporting(url: str, what: str) -> Iterator[None]:
    """Run a remote call; a user-facing failure ends the command with "error: {what}: ..." and its exit code."""
    try:
        yield
    except Exception as exc:
        found = classify(exc, url)
        if found is None:
            raise
        code, message = found
        fail(f"{what}: {message}", code)
