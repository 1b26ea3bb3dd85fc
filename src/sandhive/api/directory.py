"""Where each running sandbox lives, in memory, for the edge proxy.

The proxy asks on every request it forwards, so the answer must not cost a database round trip: this
map is filled from the store at startup and kept current by the API, which is the only writer of
sandbox state in a server.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from ..cluster.models import NODE_PROXY_KEY, TOKEN_HEADER
from ..proxy.access import Route
from ..store import SandboxRecord
from .network import route_of


class SandboxDirectory:
    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self.cluster_token: str | None = None  # set on a control plane: sandboxes on node hosts are routed there
        # Set on a control plane: a sandbox another replica created is looked up in the store on first use.
        self.load: Callable[[str], SandboxRecord | None] | None = None

    def add(self, record: SandboxRecord, address: str | None = None) -> None:
        """Route the sandbox of `record` (at `address` when it came back elsewhere, e.g. after a resume). A
        sandbox of a remote node (its state names the node's proxy) is routed through that proxy."""
        route = route_of(record, address)
        via = (record.runtime_state or {}).get(NODE_PROXY_KEY)
        if via and self.cluster_token:
            route = dataclasses.replace(route, via=str(via), via_headers=(
                (b"e2b-sandbox-id", record.sandbox_id.encode()),
                (TOKEN_HEADER.lower().encode(), self.cluster_token.encode())))
        self._routes[record.sandbox_id] = route

    def remove(self, sandbox_id: str) -> None:
        self._routes.pop(sandbox_id, None)

    async def resolve(self, sandbox_id: str) -> Route | None:
        """A running sandbox's route (address, port access), or None: the `resolve` callback of the edge proxy.
        On a control plane, a sandbox unknown here may be another replica's: the store says, and its route is
        kept (if it was killed meanwhile, its node's proxy answers "not found": the node is the authority)."""
        route = self._routes.get(sandbox_id)
        if route is None and self.load is not None:
            record = await asyncio.to_thread(self.load, sandbox_id)
            if record is not None and record.state == "running" and record.address:
                self.add(record)
                route = self._routes[sandbox_id]
        return route

    def __len__(self) -> int:
        return len(self._routes)
