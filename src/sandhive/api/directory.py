"""Where each running sandbox lives, in memory, for the edge proxy.

The proxy asks on every request it forwards, so the answer must not cost a database round trip: this
map is filled from the store at startup and kept current by the API, which is the only writer of
sandbox state in a server.
"""

from __future__ import annotations

from ..proxy.access import Route
from ..store import SandboxRecord
from .network import route_of


class SandboxDirectory:
    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    def add(self, record: SandboxRecord, address: str | None = None) -> None:
        """Route the sandbox of `record` (at `address` when it came back elsewhere, e.g. after a resume)."""
        self._routes[record.sandbox_id] = route_of(record, address)

    def remove(self, sandbox_id: str) -> None:
        self._routes.pop(sandbox_id, None)

    async def resolve(self, sandbox_id: str) -> Route | None:
        """A running sandbox's route (address, port access), or None: the `resolve` callback of the edge proxy."""
        return self._routes.get(sandbox_id)

    def __len__(self) -> int:
        return len(self._routes)
