"""Where each running sandbox lives, in memory, for the edge proxy.

The proxy asks on every request it forwards, so the answer must not cost a database round trip: this
map is filled from the store at startup and kept current by the API, which is the only writer of
sandbox state in a server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

from ..cluster.models import NODE_PROXY_KEY, TOKEN_HEADER
from ..proxy.access import Route
from ..store import SandboxRecord
from .network import route_of

# On a control plane, how long a route is used before the store is read again: another replica may have paused
# or killed the sandbox meanwhile (a paused one must then be woken, not routed to its node, which does not run it).
ROUTE_TTL_SECONDS = 2.0


class SandboxDirectory:
    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._read_at: dict[str, float] = {}  # monotonic time each route was last confirmed (a control plane's)
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
        self._read_at[record.sandbox_id] = time.monotonic()

    def remove(self, sandbox_id: str) -> None:
        self._routes.pop(sandbox_id, None)
        self._read_at.pop(sandbox_id, None)

    async def resolve(self, sandbox_id: str) -> Route | None:
        """A running sandbox's route (address, port access), or None: the `resolve` callback of the edge proxy.
        On a control plane, a sandbox unknown here may be another replica's, and one known here may have been
        paused or killed through another: so the store is read on a miss and again once a route is older than
        ROUTE_TTL_SECONDS (one primary-key read per sandbox per 2 s of traffic). Within that time a sandbox
        killed elsewhere is answered "not found" by its node's proxy (the node is the authority), and one paused
        elsewhere fails one request before it is woken."""
        route = self._routes.get(sandbox_id)
        if self.load is not None and (route is None
                                      or time.monotonic() - self._read_at.get(sandbox_id, 0.0) > ROUTE_TTL_SECONDS):
            try:
                record = await asyncio.to_thread(self.load, sandbox_id)
            except Exception:
                if route is not None:  # the store is away (a restart): live traffic keeps the route it had
                    return route
                raise
            if record is not None and record.state == "running" and record.address:
                self.add(record)
                route = self._routes[sandbox_id]
            else:
                self.remove(sandbox_id)
                route = None
        return route

    def __len__(self) -> int:
        return len(self._routes)
