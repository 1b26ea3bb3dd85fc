"""`RemoteNodes`: the control plane's stand-in for an embedded `Node`, spreading sandboxes over `sandhive node`s.

The API calls it exactly as it calls a `Node` (create, kill, watch, reconcile, status, logs, set_egress, usage
through the metrics history); each call about a sandbox goes to the node its handle names (the node puts its
id and proxy address into the handle's state, which the store keeps with the sandbox).

Membership is polled, not pushed: the control plane asks every node it was given for `GET /node/v1/status`
every `POLL_SECONDS` (2 s), each node on its own timer (a slow node never delays the polls of the others). One
answer carries what placement needs (budget, reservations, pool levels, the templates it has) and the ids of the
sandboxes the node runs, so deaths are noticed without a watch per sandbox. A node is lost when it has not
answered for `LOST_SECONDS` (6 s) and no poll that may still succeed is on its way (`NodeClient.lost`): creates go
elsewhere and its sandboxes' calls fail at once with a 502 naming the node. Lost is judged whenever it is asked,
not at poll times, so a node that stops answering is lost within 10 s of its last answer: 6 s when its process
is gone (connections are refused or reset at once), at most `POLL_SECONDS` + `POLL_DEADLINE` (2 + 7 s) when the
host or the process is silent; and a busy node whose status comes late (up to `POLL_DEADLINE`) is slow, not lost.
Polling needs no table, works with SQLite as with PostgreSQL, and a node needs no route back to the control
plane; the price is one small request per node per replica every 2 s. The nodes are the `--node-url`s given,
and every address a `dns+http://NAME:PORT` URL's name resolves to, looked up again every `POLL_SECONDS`: on
Kubernetes, a headless Service of the node DaemonSet (deploy/kubernetes/).

Placement (`RemoteNodes.placement`): among the nodes heard from, a node with a ready warm sandbox of the template
first; then the one with the fewest creates in flight from this replica (at most `MAX_STARTS_PER_NODE`: E2B caps
concurrent starts per node too); then the one with the most memory left (its budget × overcommit minus what it
reserved, in steps of `FREE_STEP_MB`), where a node that lacks the template (it would pull or build it first,
seconds) counts `PULL_COST_MB` less. So among nodes about equally free, one that has the template wins and the
create pays no pull; a node two steps (4 GB of limits) emptier still gets it, so a new template spreads over the
nodes instead of piling every sandbox of it on the node that built it. A node that answers "host full" or cannot be
reached is skipped for the next.
Pause, resume, snapshots and forks go to the node that runs the sandbox, and its saved files stay there:
paused sandboxes and snapshots resume on the node that holds their files (remote_saved.py). Volumes live on one
node each, and a sandbox mounting them is placed there (remote_volumes.py).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import NodeError
from ..node.admission import Budget, Resources
from ..node.egress import EgressPolicy
from ..node.egress_audit import EgressEntry, EgressLog
from ..node.metrics_history import MetricsHistory
from ..node.node import LogNote, NodeStatus, OnExit
from ..node.pool import PoolSettings, PoolStatus
from ..node.request import CreateRequest, Identity
from ..node.runtime import (
    PauseMode,
    Persistence,
    ResourceUsage,
    SandboxHandle,
    SavedSandbox,
    TemplateImage,
)
from ..node.telemetry import NodeTelemetry
from . import models as m
from . import remote_saved, remote_volumes

if TYPE_CHECKING:
    from .remote_builds import RegistryTemplates

log = logging.getLogger("sandhive.cluster")

POLL_SECONDS = 2.0
# A node is lost within 10 s of its last answer (issue 17): 6 s of silence, or the poll after its last answer
# failing (sent at most POLL_SECONDS after it, given up after POLL_DEADLINE), whichever comes later.
LOST_SECONDS = 6.0
POLL_DEADLINE = 7.0
DISCOVER = "dns+"  # `--node-url dns+http://NAME:PORT`: every address NAME resolves to is a node, looked up each poll
MAX_STARTS_PER_NODE = 4
FREE_STEP_MB = 2048
PULL_COST_MB = FREE_STEP_MB  # what lacking the template costs a node in placement: one step of room
TEMPLATE_TTL_SECONDS = 10.0
HOT_TEMPLATE_SECONDS = 600.0  # a template a create used within this long is kept fresh (RemoteTemplates.refresh)
CREATE_TIMEOUT = httpx.Timeout(180.0, connect=3.0)  # a miss of a template with a slow ready check
CALL_TIMEOUT = httpx.Timeout(30.0, connect=3.0)
POLL_TIMEOUT = httpx.Timeout(POLL_DEADLINE, connect=POLL_SECONDS)  # and POLL_DEADLINE in all (NodeClient.poll)
# Idle connections to a node are kept a minute (httpx's default is 5 s), under the node's own 75 s keep-alive
# (cli/node_cmd.py) so the node never closes one first: the polls keep one connection warm, and a create that
# overlaps a poll keeps its own for the next, instead of connecting anew on every create's path.
LIMITS = httpx.Limits(max_keepalive_connections=20, keepalive_expiry=60.0)


def node_error(response: httpx.Response, node_id: str) -> NodeError:
    """The node's E2B-shaped refusal, as the API re-raises it to the client (status, message, Retry-After)."""
    try:
        body = response.json()
        message, code = str(body.get("message")), body.get("error_code")
    except ValueError:
        message, code = f"node {node_id} answered {response.status_code}", None
    headers = {"Retry-After": response.headers["retry-after"]} if "retry-after" in response.headers else None
    return NodeError(response.status_code, message, code, headers)


def unreachable(node_id: str, why: object) -> NodeError:
    return NodeError(502, f"Node {node_id}, which runs this sandbox, cannot be reached ({why}); its sandboxes "
                          "are unavailable until it is back", "node_lost")


@dataclass
class NodeClient:
    """One `sandhive node`, by URL, and what the last poll said of it."""

    url: str
    token: str
    node_id: str = ""
    status: m.Status | None = None
    last_seen: float = 0.0  # monotonic time of the last answer (0: never)
    asked: float = 0.0  # when the request behind `status` was sent
    polling: float | None = None  # when the poll on its way was sent (None: none is)
    failed: bool = False  # a poll sent since the last answer failed
    starting: int = 0  # creates in flight
    placed_mb: int = 0  # memory placed here since the last poll (which then counts it)
    suspects: set[str] = field(default_factory=set)  # the store's, not in the last status (maybe dead)
    checked: float = 0.0  # `asked` of the status the suspects were last judged by
    http: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.AsyncClient(base_url=self.url.rstrip("/") + m.API_PREFIX, trust_env=False,
                                      headers={m.TOKEN_HEADER: self.token}, timeout=CALL_TIMEOUT, limits=LIMITS)
        self.node_id = self.node_id or self.url

    def lost(self, now: float) -> bool:
        """Silent for `LOST_SECONDS`, with no poll on its way that may still succeed. A poll that is on its way
        and has not failed (it fails after `POLL_DEADLINE` at most) keeps a busy node, whose status comes late,
        from flapping to lost; one that failed, or none at all (the poller stopped), does not."""
        if now - self.last_seen <= LOST_SECONDS:
            return False
        return self.failed or self.polling is None

    def trouble(self, now: float) -> str | None:
        """Why this node cannot serve its sandboxes now, or None: it is lost, or it restarted and no control
        plane has reconciled it yet (until then it does not know the sandboxes that survived: a command to one
        would get "not found")."""
        if self.lost(now):
            return f"its node {self.node_id} has not answered for over {LOST_SECONDS:.0f} s (lost)"
        if self.status is not None and not self.status.reconciled:
            return f"its node {self.node_id} has restarted and is re-adopting its sandboxes"
        return None

    async def call(self, method: str, path: str, body: Any = None, *, timeout: httpx.Timeout = CALL_TIMEOUT,
                   ) -> httpx.Response:
        try:
            response = await self.http.request(method, path, json=body, timeout=timeout)
        except httpx.HTTPError as exc:
            raise unreachable(self.node_id, type(exc).__name__) from exc
        if response.status_code >= 400:
            raise node_error(response, self.node_id)
        return response

    async def poll(self) -> None:
        """Ask for the node's status (`POLL_DEADLINE` at most). Raises `NodeError` (502) when it does not answer
        and `ValueError` when the answer is not a status."""
        asked = self.polling = time.monotonic()
        try:
            try:
                async with asyncio.timeout(POLL_DEADLINE):
                    response = await self.call("GET", "/status", timeout=POLL_TIMEOUT)
            except TimeoutError as exc:
                raise unreachable(self.node_id, f"no status within {POLL_DEADLINE:.0f} s") from exc
            status = m.Status.model_validate(response.json())
        except BaseException:
            self.failed = True
            raise
        finally:
            self.polling = None
        self.status, self.failed = status, False
        self.node_id, self.last_seen, self.asked = status.node_id, time.monotonic(), asked
        self.placed_mb = 0

    def free_mb(self) -> float:
        s = self.status
        if s is None:
            return 0.0
        return s.memory_mb * s.memory_overcommit - s.reserved_memory_mb + s.pooled_memory_mb - self.placed_mb

    def warm(self, template_id: str) -> bool:
        return self.status is not None and any(p.template_id == template_id and p.ready > 0
                                               for p in self.status.pools)

    def has(self, template_id: str) -> bool:
        """Does the node have the template in its data dir (a create there pulls or builds nothing)?"""
        return self.status is not None and template_id in self.status.templates


class _Runtime:
    """What the API reads of a node's runtime: its name and what it persists (what every node said it can)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.persistence = Persistence()


class _Pools:
    """The API's view of the nodes' warm pools: their levels as the last polls said, and which templates to
    keep warm (`start` tells the nodes; their sizes are each node's `--pool-size`)."""

    def __init__(self, nodes: RemoteNodes) -> None:
        self.settings = PoolSettings()
        self._nodes = nodes

    def status(self) -> list[PoolStatus]:
        return [p for n in self._nodes.live() if n.status for p in n.status.pools]


class _NoShells:
    @staticmethod
    def status() -> list[PoolStatus]:
        return []


class RemoteNodes:
    """The nodes at `urls`, used by the API as its `Node`."""

    def __init__(self, urls: Sequence[str], token: str) -> None:
        if not urls:
            raise ValueError("a control plane without a local node needs at least one --node-url")
        self.token = token
        self.nodes = [NodeClient(url, token) for url in urls if not url.startswith(DISCOVER)]
        # names whose addresses are nodes (a Kubernetes headless Service of the node DaemonSet: nodes come and go
        # with the cluster, and no replica's command line has to list them)
        self.names = [httpx.URL(url[len(DISCOVER):]) for url in urls if url.startswith(DISCOVER)]
        self.runtime = _Runtime("none")
        self.pools = _Pools(self)
        self.shells = _NoShells()
        # The egress audit stays on each node (`egress_entries` asks it); only the nodes' denied counts are added up
        # here after each poll, for the control plane's metrics.
        self.egress_log = EgressLog()
        self.telemetry = NodeTelemetry()
        self.history = MetricsHistory(self.usage)
        # What the store says runs on a node (handles and reservations), for re-adopting after a node restart;
        # set by the server once the API exists (cli/serve.py).
        self.known: Callable[[str], Awaitable[list[tuple[SandboxHandle, Resources]]]] | None = None
        # The ids of the sandboxes paused on a node (their files and disks there), so that a restarted node's
        # first reconcile leaves them alone; set by the server (cli/serve.py) with `known`.
        self.paused_on: Callable[[str], Awaitable[list[str]]] | None = None
        self._watches: dict[str, tuple[SandboxHandle, OnExit, float]] = {}
        # The API's end-of-sandbox callback (the same for every watch), for deaths of sandboxes nobody here
        # watches; set by the server (cli/serve.py), or by the first watch.
        self.on_exit: OnExit | None = None
        self._poller: asyncio.Task | None = None
        self._heartbeats: dict[str, asyncio.Task] = {}  # node URL → its poll loop (`_heartbeat`)
        self._ended: set[asyncio.Task] = set()
        # Work to do after each poll, off a create's path (RemoteTemplates.refresh); run in a task of its own so a
        # slow node never delays the polls that tell whether nodes are alive.
        self.after_poll: list[Callable[[], Awaitable[None]]] = []
        self._after: asyncio.Task | None = None

    @property
    def backend(self) -> str:
        return self.runtime.name

    # ---- membership --------------------------------------------------------------------------
    async def connect(self, timeout: float = 60.0) -> None:
        """Wait until every node answered once (they must agree on the backend), then keep polling. Raises
        `NodeError` naming the nodes still silent after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        static = {n.url for n in self.nodes}
        while True:
            await self.discover()
            await asyncio.gather(*(self._poll(n) for n in self.nodes))
            silent = [n.url for n in self.nodes if n.status is None and n.url in static]
            answered = any(n.status is not None for n in self.nodes)
            if not silent and answered:
                break
            if time.monotonic() > deadline:
                names = ", ".join(str(n) for n in self.names)
                raise NodeError(503, f"nodes not answering: {', '.join(silent) or 'none found at ' + names}")
            await asyncio.sleep(0.5)
        backends = {n.status.backend for n in self.nodes if n.status is not None}
        if len(backends) != 1:
            raise NodeError(500, f"the nodes run different backends ({', '.join(sorted(backends))}); one control "
                                 "plane serves one backend")
        self.runtime.name = backends.pop()
        self.runtime.persistence = remote_saved.persistence_of([n.status for n in self.nodes if n.status])

    async def discover(self) -> None:
        """Add a node for every address the `dns+` names resolve to now. An address that is no longer listed
        stays: it goes lost if it stops answering, and its sandboxes say so."""
        loop = asyncio.get_running_loop()
        known = {n.url for n in self.nodes}
        for name in self.names:
            try:
                found = await loop.getaddrinfo(name.host, name.port or 80, type=socket.SOCK_STREAM)
            except OSError as exc:
                log.warning("node discovery: %s does not resolve (%s)", name.host, exc)
                continue
            for *_, sockaddr in found:
                host = str(sockaddr[0])
                url = f"{name.scheme}://{f'[{host}]' if ':' in host else host}:{name.port or 80}"
                if url not in known:
                    known.add(url)
                    self.nodes.append(NodeClient(url, self.token))
                    log.info("node discovery: %s found at %s", url, name.host)

    async def _poll(self, node: NodeClient) -> None:
        with contextlib.suppress(NodeError, ValueError):
            await node.poll()
            if node.status is not None and not node.status.reconciled and self.known is not None:
                await self._readopt(node)

    async def _readopt(self, node: NodeClient) -> None:
        """A node process that no control plane reconciled yet (it restarted): send it what the store says runs
        there, so it adopts what survived; the next status then lists them, and only the dead are reported."""
        assert self.known is not None
        known = await self.known(node.node_id)
        paused = await self.paused_on(node.node_id) if self.paused_on is not None else []
        body = m.Reconcile(known=[m.Handle.of(h) for h, _ in known],
                           resources={h.sandbox_id: (r.memory_mb, r.cpu_count) for h, r in known}, paused=paused)
        response = await node.call("POST", "/reconcile", body.model_dump(), timeout=CREATE_TIMEOUT)
        alive = m.Alive.model_validate(response.json()).alive
        log.warning("node %s restarted: re-adopted %d of its %d sandboxes", node.node_id, len(alive), len(known))
        await node.poll()  # a status that lists them, before any death is judged

    async def _heartbeat(self, node: NodeClient) -> None:
        """Poll one node every `POLL_SECONDS` (from send to send; at once after a poll slower than that)."""
        while True:
            sent = time.monotonic()
            try:
                await self._poll(node)
            except Exception:  # the store, while re-adopting (a database restart): the next poll tries again
                log.exception("polling node %s failed", node.url)
            await asyncio.sleep(max(0.0, sent + POLL_SECONDS - time.monotonic()))

    async def _poll_forever(self) -> None:
        """Every `POLL_SECONDS`: look for new nodes, give each its heartbeat, and act on what the polls said."""
        was_lost: set[str] = set()
        while True:
            await self.discover()
            for node in self.nodes:
                if node.url not in self._heartbeats:
                    self._heartbeats[node.url] = asyncio.create_task(self._heartbeat(node))
            now = time.monotonic()
            for node in self.nodes:
                if node.lost(now) and node.url not in was_lost:
                    was_lost.add(node.url)
                    log.warning("node %s (%s) lost: no answer for %.0f s", node.node_id, node.url, LOST_SECONDS)
                elif not node.lost(now) and node.url in was_lost:
                    was_lost.discard(node.url)
                    log.warning("node %s (%s) is back", node.node_id, node.url)
            self.egress_log.denied_total = sum(n.status.egress_denied_total for n in self.nodes if n.status)
            self._notice_deaths()
            await self._notice_unwatched_deaths()
            if self.after_poll and (self._after is None or self._after.done()):
                self._after = asyncio.create_task(self._run_after_poll())
            await asyncio.sleep(POLL_SECONDS)

    async def _run_after_poll(self) -> None:
        for hook in self.after_poll:
            try:
                await hook()
            except Exception:
                log.exception("work after a poll of the nodes failed")

    def _notice_deaths(self) -> None:
        """Watched sandboxes that their node's latest status no longer lists, asked after the watch began."""
        for sandbox_id, (handle, on_exit, since) in list(self._watches.items()):
            node = self._node_of(handle, strict=False)
            if node is None or node.status is None or not node.status.reconciled or node.asked <= since \
                    or sandbox_id in node.status.running:
                continue
            del self._watches[sandbox_id]
            self.history.untrack(sandbox_id)
            task = asyncio.create_task(self._report_end(on_exit, handle, node.node_id))
            self._ended.add(task)
            task.add_done_callback(self._ended.discard)

    async def _notice_unwatched_deaths(self) -> None:
        """Sandboxes this replica does not watch (another replica created them, and may be gone) that the store
        says run on a node whose last two statuses did not list them: reported ended as a watch would. Two distinct
        statuses, so a create whose row was written just after a status was taken is never taken for a death."""
        if self.known is None or self.on_exit is None:
            return
        for node in self.live():
            # Only a status asked since the last check counts: a node that stopped answering keeps its last one,
            # which may predate a create (its sandbox would be "missing" from it however often it is read).
            if node.status is None or not node.status.reconciled or node.asked == node.checked:
                continue
            node.checked = node.asked
            try:
                known = await self.known(node.node_id)
            except Exception:
                log.exception("reading the sandboxes of node %s failed", node.node_id)
                continue
            running = set(node.status.running)
            missing = {h.sandbox_id: h for h, _ in known
                       if h.sandbox_id not in running and h.sandbox_id not in self._watches}
            suspects, node.suspects = node.suspects, set(missing)
            for sandbox_id in suspects & set(missing):
                node.suspects.discard(sandbox_id)
                task = asyncio.create_task(self._report_end(self.on_exit, missing[sandbox_id], node.node_id))
                self._ended.add(task)
                task.add_done_callback(self._ended.discard)

    @staticmethod
    async def _report_end(on_exit: OnExit, handle: SandboxHandle, node_id: str) -> None:
        try:
            await on_exit(handle, f"it is no longer running on node {node_id}")
        except Exception:
            log.exception("cleaning up after sandbox %s failed", handle.sandbox_id)

    def live(self) -> list[NodeClient]:
        now = time.monotonic()
        return [n for n in self.nodes if n.status is not None and not n.lost(now)]

    def node_trouble(self, handle: SandboxHandle) -> str | None:
        """Why the node that runs (or holds) `handle` cannot serve it now (`NodeClient.trouble`), else None."""
        node = self._node_of(handle, strict=False)
        return node.trouble(time.monotonic()) if node is not None else None

    def _node_of(self, handle: SandboxHandle, strict: bool = True) -> NodeClient | None:
        node_id = handle.state.get(m.NODE_ID_KEY)
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        if strict:
            raise NodeError(502, f"Sandbox {handle.sandbox_id} runs on node {node_id}, which this control plane "
                                 "does not know", "node_lost")
        return None

    def _client(self, handle: SandboxHandle) -> NodeClient:
        node = self._node_of(handle)
        assert node is not None
        trouble = node.trouble(time.monotonic())
        if trouble is not None:
            raise unreachable(node.node_id, trouble)
        return node

    # ---- the Node interface ------------------------------------------------------------------
    def use_tokens(self, token_for: Any) -> None:
        """Nodes derive access tokens from the cluster secret themselves (models.cluster_secret)."""

    async def start(self, *, ca_bundle: str | None = None, prewarm: Iterable[CreateRequest] = ()) -> None:
        body = m.Start(prewarm=[r.template.template_id for r in prewarm]).model_dump()
        for node in self.live():
            try:
                await node.call("POST", "/start", body)
            except NodeError as exc:
                log.warning("node %s did not start its pools: %s", node.node_id, exc.message)
        self.history.start()
        if self._poller is None:  # after the API's reconcile: from now on, restarted nodes are re-adopted
            self._poller = asyncio.create_task(self._poll_forever())

    def placement(self, template_id: str) -> list[NodeClient]:
        """The nodes to try for a create of `template_id`, best first (see the module's docstring)."""
        # Only reconciled nodes: a restarted node refuses creates until a control plane has reconciled it.
        nodes = [n for n in self.live() if n.starting < MAX_STARTS_PER_NODE and n.status and n.status.reconciled]

        def room(n: NodeClient) -> float:
            """Free memory in steps of FREE_STEP_MB, a step less without the template (it would pull it)."""
            return (n.free_mb() - (0 if n.has(template_id) else PULL_COST_MB)) // FREE_STEP_MB

        # Then chance: replicas that place at once (each with its own view of the last poll) spread their creates
        # rather than all picking the same emptiest node.
        return sorted(nodes, key=lambda n: (not n.warm(template_id), n.starting, -room(n), random.random()))

    async def create(self, request: CreateRequest, identity: Identity) -> SandboxHandle:
        # A sandbox mounting volumes runs on the node that keeps them (remote_volumes), whatever its load.
        held = remote_volumes.node_for(self, request.volumes)
        body = m.CreateBody(template_id=request.template.template_id, cpu_count=request.cpu_count,
                            memory_mb=request.memory_mb, disk_mb=request.disk_mb,
                            allow_internet_access=request.allow_internet_access, env_vars=identity.env_vars,
                            default_user=identity.default_user, default_workdir=identity.default_workdir,
                            volumes=remote_volumes.mounts(request.volumes)).model_dump()
        refusal: NodeError | None = None
        for node in [held] if held is not None else self.placement(request.template.template_id):
            node.starting += 1
            try:
                response = await node.call("POST", "/sandboxes", body, timeout=CREATE_TIMEOUT)
            except NodeError as exc:
                if exc.status not in (502, 503):  # the request's fault (a bad template...): no other node helps
                    raise
                log.warning("node %s refused a create (%s); trying the next", node.node_id, exc.message)
                refusal = exc
                continue
            finally:
                node.starting -= 1
            node.placed_mb += request.memory_mb
            return m.Handle.model_validate(response.json()).to_remote()
        raise refusal or NodeError(503, "No node can take a sandbox now: all are lost, full or busy starting "
                                        "others", "host_full", {"Retry-After": "5"})

    async def kill(self, handle: SandboxHandle) -> None:
        self.unwatch(handle.sandbox_id)
        self.history.forget(handle.sandbox_id)
        await self._client(handle).call("POST", "/sandboxes/kill", m.Handle.of(handle).model_dump())

    async def set_egress(self, handle: SandboxHandle, policy: EgressPolicy) -> None:
        body = m.SetEgress(handle=m.Handle.of(handle), policy=m.Egress.of(policy)).model_dump()
        await self._client(handle).call("POST", "/sandboxes/egress", body)

    async def is_running(self, handle: SandboxHandle) -> bool:
        response = await self._client(handle).call("POST", "/sandboxes/running", m.Handle.of(handle).model_dump())
        return m.Running.model_validate(response.json()).running

    async def usage(self, handle: SandboxHandle) -> ResourceUsage:
        response = await self._client(handle).call("POST", "/sandboxes/usage", m.Handle.of(handle).model_dump())
        return m.USAGE.validate_python(response.json())

    async def logs(self, handle: SandboxHandle) -> list[str]:
        response = await self._client(handle).call("POST", "/sandboxes/logs", m.Handle.of(handle).model_dump())
        return m.Logs.model_validate(response.json()).lines

    @staticmethod
    def create_log(handle: SandboxHandle) -> list[LogNote]:
        """What the node did for the create before the sandbox ran (a template pulled), as it said in the handle."""
        return m.CREATE_LOG.validate_python(handle.state.get(m.CREATE_LOG_KEY) or [])

    async def egress_entries(self, handle: SandboxHandle) -> list[EgressEntry]:
        response = await self._client(handle).call("POST", "/sandboxes/egress-log", m.Handle.of(handle).model_dump())
        return m.EgressEntries.model_validate(response.json()).entries

    def watch(self, handle: SandboxHandle, on_exit: OnExit) -> None:
        self.on_exit = on_exit
        self._watches[handle.sandbox_id] = (handle, on_exit, time.monotonic())
        self.history.track(handle)

    def unwatch(self, sandbox_id: str) -> None:
        self._watches.pop(sandbox_id, None)
        self.history.untrack(sandbox_id)

    async def reconcile(self, known: Sequence[SandboxHandle], resources: Mapping[str, Resources] | None = None,
                        paused: Iterable[str] = ()) -> set[str]:
        """Each node adopts its own; a lost node's sandboxes count as alive (they show as lost, not killed:
        the node may come back)."""
        alive: set[str] = set()
        by_node: dict[str, list[SandboxHandle]] = {}
        for handle in known:
            by_node.setdefault(str(handle.state.get(m.NODE_ID_KEY)), []).append(handle)
        for node in self.nodes:
            mine = by_node.pop(node.node_id, [])
            if node.status is None or node.lost(time.monotonic()):
                alive |= {h.sandbox_id for h in mine}
                continue
            body = m.Reconcile(known=[m.Handle.of(h) for h in mine],
                               resources={h.sandbox_id: (r.memory_mb, r.cpu_count) for h in mine
                                          if resources and (r := resources.get(h.sandbox_id))},
                               paused=list(paused))
            response = await node.call("POST", "/reconcile", body.model_dump(), timeout=CREATE_TIMEOUT)
            alive |= set(m.Alive.model_validate(response.json()).alive)
            node.status.reconciled = True  # placeable now, not only after the next poll says so
        for handles in by_node.values():  # nodes this control plane was not given: not ours to judge
            alive |= {h.sandbox_id for h in handles}
        return alive

    def status(self) -> NodeStatus:
        """Every live node's figures added up, as one host's."""
        live = [n.status for n in self.live() if n.status is not None]
        budget = Budget(memory_mb=sum(s.memory_mb for s in live), cpus=sum(s.cpus for s in live),
                        memory_overcommit=max((s.memory_overcommit for s in live), default=1.0))
        return NodeStatus(self.backend, budget,
                          Resources(sum(s.reserved_memory_mb for s in live), sum(s.reserved_cpus for s in live)),
                          Resources(sum(s.pooled_memory_mb for s in live), sum(s.pooled_cpus for s in live)),
                          self.pools.status(), sum(s.in_use_mb for s in live), sum(s.sandboxes for s in live),
                          next((s.pressure for s in live if s.pressure), None))

    # ---- persistence: on the node that holds the files (remote_saved) ----------------------------
    async def snapshot(self, handle: SandboxHandle, dest: Path) -> SavedSandbox:
        return await remote_saved.snapshot(self, handle, dest)

    async def restore(self, saved: SavedSandbox, request: CreateRequest, identity: Identity,
                      source_token: str | None = None) -> SandboxHandle:
        return await remote_saved.resume(self, saved, request, identity, restore=True)

    async def pause(self, handle: SandboxHandle, mode: PauseMode, dest: Path) -> SavedSandbox:
        return await remote_saved.pause(self, handle, mode, dest)

    async def resume(self, saved: SavedSandbox, request: CreateRequest, identity: Identity) -> SandboxHandle:
        return await remote_saved.resume(self, saved, request, identity, restore=False)

    async def stop_saved(self, saved: SavedSandbox) -> None:
        await remote_saved.stop(self, saved)

    async def discard_saved(self, saved: SavedSandbox) -> None:
        await remote_saved.discard(self, saved)

    async def close(self) -> None:
        for task in (self._poller, self._after, *self._heartbeats.values()):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.history.stop()
        for node in self.nodes:
            await node.http.aclose()


class RemoteTemplates:
    """Templates as a control plane without a local registry sees them. Built ones (a team's) are read from the
    template registry (`registry`, with `--template-registry`: `remote_builds.RegistryTemplates`), so every
    replica sees what any built; others (`base`, `code-interpreter-v1`) are resolved by a live node, which builds
    them on first use in its own data dir. Without a template registry, builds answer 409."""

    cache_dir: Path | None = None

    def __init__(self, nodes: RemoteNodes, ttl: float = TEMPLATE_TTL_SECONDS,
                 registry: RegistryTemplates | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._nodes = nodes
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, TemplateImage]] = {}
        self.registry = registry
        self._used: dict[str, float] = {}  # name → when a create last resolved it
        nodes.after_poll.append(self.refresh)
        self.names: Any = None  # the API's store: aliases and tags changed after a build (template_names.py)

    async def resolve(self, name: str) -> TemplateImage:
        """The template's defaults as the registry or a node has them; kept `ttl` seconds, so a create costs no
        extra round trip (a rebuilt template is seen within that time), and kept fresh by `refresh` while creates
        use it. The node a create lands on pulls the template itself if it lacks it."""
        cached = self._cache.get(name)
        image = cached[1] if cached is not None and cached[0] > self._clock() else await self._fetch(name)
        self._used[name] = self._clock()
        return image

    async def refresh(self) -> None:
        """After each poll (every 2 s): fetch again the templates creates used in the last `HOT_TEMPLATE_SECONDS`
        whose copy is past half its `ttl`. So a create of a template in use never waits for a round trip to a
        node (it would after every pause of more than `ttl` between creates), and a copy is still never older
        than `ttl`. A template no node has any more is dropped: the next create asks, and gets the 404."""
        now = self._clock()
        for name, used in list(self._used.items()):
            cached = self._cache.get(name)
            if now - used > HOT_TEMPLATE_SECONDS:
                del self._used[name]
            elif cached is None or cached[0] - now < self._ttl / 2:
                try:
                    await self._fetch(name)
                except LookupError:
                    self._used.pop(name, None)
                    self._cache.pop(name, None)
                except NodeError:
                    pass  # no node answered: the copy expires as usual, and a create asks again

    async def _fetch(self, name: str) -> TemplateImage:
        """A team's build as the registry describes it, or else the template as a live node has it."""
        built = await asyncio.to_thread(self.get, name) if self.registry is not None else None
        if built is not None:
            image = built.image(Path("/nonexistent-remote-template"))
            self._cache[name] = (self._clock() + self._ttl, image)
            return image
        for node in self._nodes.live():
            try:
                response = await node.call("GET", f"/templates/{name}", timeout=CREATE_TIMEOUT)
            except NodeError as exc:
                if exc.status == 404:
                    raise LookupError(f"template '{name}' not found") from None
                continue
            image = m.Template.model_validate(response.json()).to_image()
            self._cache[name] = (self._clock() + self._ttl, image)
            return image
        raise NodeError(503, "No node is reachable to resolve templates", "node_lost", {"Retry-After": "5"})

    def forget(self, template_id: str) -> None:
        """A build of the template ended: read it again at the next use."""
        self._cache.pop(template_id, None)
        if self.registry is not None:
            self.registry.forget(template_id)

    def list(self) -> list[Any]:
        from .template_names import overlay

        return [overlay(info, self.names) for info in self.registry.list()] if self.registry is not None else []

    def get(self, name: str) -> Any:
        from .template_names import overlay

        info = self.registry.get(name) if self.registry is not None else None
        return overlay(info, self.names) if info is not None else None

    def matching(self, name: str) -> builtins.list[Any]:
        bare, sep, tag = name.partition(":")
        info = self.get(bare)
        return [info] if info is not None and (not sep or tag in (info.build.get("tags") or ["default"])) else []

    def delete(self, template_id: str) -> Any:
        if self.registry is None:
            self._no_builds()
        self._cache.pop(template_id, None)
        assert self.registry is not None
        return self.registry.delete(template_id)

    def set_tags(self, template_id: str, tags: Any) -> Any:
        """Tags changed after the build are kept in the store (`template_names`); without it, only the build's
        own are (409 for a change)."""
        if self.names is not None and self.registry is not None:
            from .template_names import set_tags

            return set_tags(self.names, self.get, template_id, tags)
        info = self.get(template_id)
        if info is None:
            if self.registry is None:
                self._no_builds()
            raise LookupError(f"template '{template_id}' not found")
        if list(tags) != list(info.build.get("tags") or ["default"]):
            raise NodeError(409, "changing a template's tags is not supported on a control plane with remote nodes "
                                 "yet: build it again with the tags")
        return info

    def set_aliases(self, template_id: str, aliases: Any, among: Any = None) -> Any:
        if self.names is not None and self.registry is not None:
            from .template_names import set_aliases

            return set_aliases(self.names, self.get, template_id, aliases, among)
        info = self.get(template_id)
        if info is None or tuple(aliases) != tuple(info.aliases):
            raise NodeError(409, "changing a template's aliases is not supported on a control plane with remote "
                                 "nodes yet: its team name (the name it was built under) resolves on every replica")
        return info

    def _no_builds(self, *_: Any, **__: Any) -> Any:
        raise NodeError(409, "template builds are not supported on a control plane with remote nodes without a "
                             "template registry (--template-registry)")
