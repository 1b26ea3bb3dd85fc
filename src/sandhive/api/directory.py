"""Where each running sandbox lives, in memory, for the edge proxy.

The proxy asks on every request it forwards, so the answer must not cost a database round trip: this
map is filled from the store at startup and kept current by the API, which is the only writer of
sandbox state in a server.
"""

from __future__ import annotations


class SandboxDirectory:
    def __init__(self) -> None:
        self._addresses: dict[str, str] = {}

    def add(self, sandbox_id: str, address: str) -> None:
        self._addresses[sandbox_id] = address

    def remove(self, sandbox_id: str) -> None:
        self._addresses.pop(sandbox_id, None)

    async def resolve(self, sandbox_id: str) -> str | None:
        """The host address of a running sandbox, or None: the `resolve` callback of the edge proxy."""
        return self._addresses.get(sandbox_id)

    def __len__(self) -> int:
        return len(self._addresses)
