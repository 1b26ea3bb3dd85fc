"""A uvicorn HTTP protocol that bounds how long, and how much, a client may send before its headers end.

uvicorn times out idle keep-alive connections (`timeout_keep_alive`) but has no timeout on a request's
headers, and with httptools no bound on their size: a slow-loris client that sends a header byte a second
holds a connection (and its growing header list) for ever, and enough of them hold every file descriptor.
`GuardedHttpTools` closes a connection whose headers are not complete `header_timeout` seconds after its
first byte (or after the previous response, for keep-alive), and answers 431 once headers pass
`MAX_HEADER_BYTES`. Bodies are bounded by the request guard (request_guard.py), which sees the route.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024  # request line + headers; uvicorn's h11 default is 16 KiB, nginx's 8–32 KiB


class GuardedHttpTools(HttpToolsProtocol):
    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_headers = True  # until a request's headers end; again from its response on (keep-alive)
        self._header_bytes = 0

    # uvicorn's own override narrows asyncio's BaseTransport the same way (and ignores it the same way).
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            # Earlier reads already carried more than the limit and the headers have not ended: a single header
            # growing for ever (on_header only sees complete ones). One read may mix headers and body, so only
            # what came before this read counts.
            if self._header_bytes > MAX_HEADER_BYTES:
                self._refuse_headers()
                return
            self._header_bytes += len(data)
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0
        if self._header_timer is None:
            self._arm()

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        if sum(len(k) + len(v) + 4 for k, v in self.headers) + len(self.url) > MAX_HEADER_BYTES:
            self._refuse_headers()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request's headers get their own deadline from their first byte (on_message_begin);
        # until then uvicorn's keep-alive timeout governs the idle connection.
        self._in_headers = True
        self._header_bytes = 0

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._in_headers and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    def _refuse_headers(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
                                 b"connection: close\r\n\r\n")
            self.transport.close()


def guarded_protocol(header_timeout: float) -> type[GuardedHttpTools]:
    """The protocol class for `uvicorn.run(http=...)` with this server's header timeout."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpTools,), {"header_timeout": header_timeout})
