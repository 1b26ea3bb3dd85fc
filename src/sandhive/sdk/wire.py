"""Descriptions of calls, built by the shared layer and executed by either face's I/O.

A call says everything about one request except how to wait for it: where it goes, what it carries, how to
parse the answer and which answers mean something other than an error. `SyncIO` and `AsyncIO` only send it.
This is how `Sandbox` and `AsyncSandbox` stay one implementation with two faces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from . import errors
from .errors import Context

T = TypeVar("T")


@dataclass
class HttpCall(Generic[T]):
    """A REST or envd-HTTP request and how to read its answer."""

    method: str
    url: str
    context: Context
    parse: Callable[[httpx.Response], T]
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: Any = None  # bytes, or an (async) iterator of bytes for streamed uploads
    files: Any = None  # multipart parts, as httpx takes them
    timeout: float | httpx.Timeout | None = None  # httpx.Timeout: phases bounded apart (run_code's connect)
    # Statuses with a meaning of their own, e.g. kill's 404 ("already gone") is False, not an error.
    special: Mapping[int, Callable[[httpx.Response], T]] = field(default_factory=dict)

    def finish(self, response: httpx.Response) -> T:
        """The parsed answer, or the typed exception for it (the body must have been read)."""
        handler = self.special.get(response.status_code)
        if handler is not None:
            return handler(response)
        if response.is_success:
            return self.parse(response)
        raise errors.from_response(response.status_code, response.content, self.context)

    def check(self, response: httpx.Response) -> None:
        """For streamed bodies: raise for an error answer (its body read first), before anything is parsed. A
        streamed call's special handler can only explain its status by raising: there is no value to answer."""
        if response.is_success:
            return
        handler = self.special.get(response.status_code)
        if handler is not None:
            handler(response)
        raise errors.from_response(response.status_code, response.content, self.context)


@dataclass
class RpcCall(Generic[T]):
    """A Connect RPC to envd: unary (`parse` reads the response) or server-stream (`parse` reads each
    message and answers None for messages to skip, such as keepalives)."""

    service: str  # "process" or "filesystem"
    method: str  # the generated client's method name, e.g. "list_dir"
    request: Any
    headers: Mapping[str, str]
    context: Context
    parse: Callable[[Any], T]
    timeout: float | None = None  # seconds; None: no limit
    special: Mapping[Code, Callable[[ConnectError], T]] = field(default_factory=dict)

    @property
    def timeout_ms(self) -> int | None:
        return None if self.timeout is None else max(1, int(self.timeout * 1000))

    def fail(self, exc: BaseException) -> T:
        """What a failed call means: a special answer (e.g. exists → False) or the typed exception."""
        if isinstance(exc, ConnectError):
            handler = self.special.get(exc.code)
            if handler is not None:
                return handler(exc)
        raise errors.from_rpc(exc, self.context) from None
