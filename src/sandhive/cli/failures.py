"""Errors from the server or the SDK → one line a user can act on and an exit code a script can test.

Classes are matched by what they mean rather than by one SDK's types, so the mapping holds for the released
`e2b` SDK (which lets httpx's ConnectError through) and Sandhive's (whose ServerUnreachableException is a
ConnectionError) alike.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

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


def _sdk_class(name: str) -> type[BaseException] | None:
    """An exception class of the SDK in use, if it is loaded (nothing SDK-made can be raised before that)."""
    from .client import SDK_MODULE

    module = sys.modules.get(SDK_MODULE)
    found = getattr(module, name, None) if module else None
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def _is(exc: BaseException, name: str) -> bool:
    cls = _sdk_class(name)
    return cls is not None and isinstance(exc, cls)


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
        return EXIT_AUTH, _explained(text, f"{url} refused the API key ({text}). {NEW_KEY}")
    if _is(exc, "SandboxNotFoundException"):
        return EXIT_NOT_FOUND, _explained(text, f"{text}. {SEE_LIST}")
    if _is(exc, "NotFoundException") or (_is(exc, "SandboxException") and text.startswith("404:")):
        return EXIT_NOT_FOUND, text.removeprefix("404:").strip()  # e2b reports an unknown template so
    if isinstance(exc, httpx.TimeoutException) or _is(exc, "TimeoutException"):
        return EXIT_FAILED, f"timed out: {text}"
    if isinstance(exc, httpx.HTTPError) or _is(exc, "SandboxException"):
        return EXIT_FAILED, text
    return None


def _explained(text: str, with_hint: str) -> str:
    """Sandhive's SDK says what to do in its messages; e2b's only says what happened, so the CLI adds the hint."""
    from .client import SDK_MODULE

    return with_hint if SDK_MODULE == "e2b" else text


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
