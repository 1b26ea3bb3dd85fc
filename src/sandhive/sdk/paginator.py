"""`Sandbox.list`'s answer: a paginator over the team's sandboxes — `SandboxPaginator` and the async one.

E2B's shape: `has_next`, `next_token` and `next_items()` for one page at a time. Both are also iterable
(`for info in Sandbox.list()` / `async for ...`) over every page, which is what most callers want.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from . import api_calls
from .api_calls import Page
from .config import ConnectionConfig
from .exceptions import SandboxException
from .models import SandboxInfo, SandboxQuery
from .transport import AsyncTransport, SyncTransport
from .wire import HttpCall


class _Pages:
    """Where a listing stands: its query and the next page's cursor."""

    def __init__(self, config: ConnectionConfig, query: SandboxQuery | None, limit: int | None,
                 next_token: str | None, request_timeout: float | None) -> None:
        self._config = config
        self._query = query
        self._limit = limit
        self._request_timeout = request_timeout
        self.next_token = next_token
        self.has_next = True

    def _call(self) -> HttpCall[Page]:
        if not self.has_next:
            raise SandboxException("no more sandboxes to list: check has_next before calling next_items()")
        return api_calls.list_page(self._config, self._query, limit=self._limit, next_token=self.next_token,
                                   request_timeout=self._request_timeout)

    def _take(self, page: Page) -> list[SandboxInfo]:
        self.next_token = page.next_token
        self.has_next = page.next_token is not None
        return page.items


class SandboxPaginator(_Pages):
    def next_items(self) -> list[SandboxInfo]:
        """The next page (at most `limit` sandboxes, newest first)."""
        transport = SyncTransport(self._config)
        try:
            return self._take(transport.call(self._call()))
        finally:
            transport.close()

    def __iter__(self) -> Iterator[SandboxInfo]:
        while self.has_next:
            yield from self.next_items()


class AsyncSandboxPaginator(_Pages):
    async def next_items(self) -> list[SandboxInfo]:
        transport = AsyncTransport(self._config)
        try:
            return self._take(await transport.call(self._call()))
        finally:
            await transport.close()

    async def __aiter__(self) -> AsyncIterator[SandboxInfo]:
        while self.has_next:
            for item in await self.next_items():
                yield item
