"""A node: one runtime, its warm pools and admission control — "give me a sandbox" in one call.

The API holds the store and the timers; the node only runs things. It owns its runtime, prepared on the
event loop the node runs on (`backends.select`), and closes it with itself. `create` returns once the sandbox's
envd has its identity (id, env vars, token, user, clock, CA bundle), so the caller can use it at once.
It takes a warm sandbox from the pool when one matches (a hand-over: one `/init` round trip), and
otherwise starts one (runtime start, the template's start command and ready check, `/init`). The node
picks the sandbox id; the caller reads it from the returned handle.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from . import egress, envd_client
from .admission import Admission, Budget, HostFull, Kind, Resources
from .backends import BackendMismatch, check_template
from .egress import EgressPolicy
from .egress_audit import EgressAudit, EgressEntry, EgressLog, SandboxOf
from .errors import BackendError
from .metrics_history import MetricsHistory
from .network import SUBNET, Slot, SlotAllocator
from .pool import PoolSettings, PoolStatus, WarmPools
from .request import CreateRequest, Identity, new_sandbox_id
from .runtime import (
    COLD_BOOTED,
    PauseMode,
    ResourceUsage,
    Runtime,
    SandboxHandle,
    SavedSandbox,
    ShellRuntime,
    TemplateImage,
    not_supported,
)
from .startup import ReadyPolicy, pre_init_body, prepare
from .telemetry import NodeTelemetry

log = logging.getLogger("sandhive.node")

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

RESTORE_ENTROPY_BYTES = 64  # seed each restored sandbox's kernel RNG afresh (envd/entropy.py)
LIVENESS_POLL_SECONDS = 1.0  # for backends that cannot signal a sandbox's end (no `wait_exit`)

OnExit = Callable[[SandboxHandle, str], Awaitable[None]]

# Warm shells (docs/persistence.md "template-agnostic warm shells"): one pool of sandboxes of no template, for
# the misses of every template. A shell holds this much of the host's budget until it serves a request.
SHELL_TEMPLATE = TemplateImage("sandhive-shell", Path("/nonexistent-shell-root"), default_user="root",
                               default_workdir="/")
SHELL_REQUEST = CreateRequest(SHELL_TEMPLATE, cpu_count=1, memory_mb=256, disk_mb=0)
# Warm shells when the operator does not say, on a backend that has them: one serves a pool miss at 0.88x a raw
# `runc run` (bench/RESULTS.md). The shell filled at boot cannot take a paused sandbox's slot: the node has the
# paused sandboxes hold theirs first (`Node.reconcile`, before `start()`; tests/persistence/test_reboot.py).
DEFAULT_SHELLS = 1

__all__ = ["CreateRequest", "HostFull", "Identity", "LogNote", "Node", "NodeStatus", "PoolSettings", "Resources"]


def host_ca_bundle(enabled: bool = True) -> str | None:
    """The host's CA bundle, handed to sandboxes so TLS through an intercepting proxy works inside."""
    if not enabled:
        return None
    try:
        return HOST_CA_BUNDLE.read_text()
    except OSError:
        return None


@dataclass(frozen=True)
class NodeStatus:
    backend: str
    budget: Budget
    reserved: Resources  # by every sandbox, pooled ones included
    pooled: Resources  # by pooled sandboxes alone (given back first when a create needs room)
    pools: list[PoolStatus]
    in_use_mb: int = 0  # what the sandboxes count for by real use (admission.py)
    sandboxes: int = 0  # reservations held, pooled ones included
    pressure: str | None = None  # why the host admits nothing now (host_memory.py)


@dataclass(frozen=True)
class LogNote:
    """An entry of a sandbox's log that is not its own output: something done for its create before it ran (a
    template pulled from the registry, cluster/node_api.py), shown first in `GET /sandboxes/{id}/logs`."""

    time: float  # unix seconds
    message: str
    fields: dict[str, str]


class Node:
    """Runs sandboxes on this host with one runtime.

    `start()` begins warm pooling (after `reconcile`, so that leftovers of a previous server's pools are
    already removed as orphans); without it the node starts every sandbox on demand.
    """

    def __init__(self, runtime: Runtime, *, pools: PoolSettings | None = None, budget: Budget | None = None,
                 ready: ReadyPolicy | None = None, http: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.monotonic, shells: int = 0) -> None:
        """`shells`: warm shells kept for pool misses (0: none; only a `ShellRuntime` has them). `http` (envd's
        client) and `clock` (the pools' monotonic time) are for tests: a fake envd behind `httpx.MockTransport`,
        and time that moves when the test says so."""
        self.runtime = runtime
        self._clock = clock
        self.admission = self._admission(budget or Budget.of_host())
        self.ready_policy = ready or ReadyPolicy()
        self.ca_bundle: str | None = None
        # Connections to pooled sandboxes stay open while they wait (envd keeps them for 75 s), so a
        # hand-over's /init needs no new connection.
        self._http = http or httpx.AsyncClient(
            timeout=10.0, trust_env=False, limits=httpx.Limits(max_keepalive_connections=256, keepalive_expiry=60.0))
        self.pools = WarmPools(pools or PoolSettings(), self.admission, runtime.name, self._fill, self.runtime.stop,
                               clock)
        self.shells = self._shell_pool(shells)
        self._watches: dict[str, asyncio.Task] = {}
        self._on_exit: dict[str, OnExit] = {}
        self.egress_log = EgressLog()
        self._egress_audit: EgressAudit | None = None
        self._sandbox_of: SandboxOf | None = None
        self.history = MetricsHistory(self.usage)  # watched sandboxes' recent use, sampled once `start`ed
        self.telemetry = NodeTelemetry()  # create latency and refusals, for the operator's /metrics

    @property
    def backend(self) -> str:
        return self.runtime.name

    def configure(self, *, pools: PoolSettings | None = None, budget: Budget | None = None,
                  shells: int | None = None) -> None:
        """Replace the pool settings, the host budget or the number of warm shells; only before `start()` (the
        CLI builds the node first and applies its options after)."""
        if budget is not None:
            self.admission = self._admission(budget)
        if pools is not None or budget is not None:
            self.pools = WarmPools(pools or self.pools.settings, self.admission, self.runtime.name, self._fill,
                                   self.runtime.stop, self._clock)
        if shells is not None or budget is not None:
            self.shells = self._shell_pool(self.shells.settings.size if shells is None else shells)

    def _admission(self, budget: Budget) -> Admission:
        """Admission counting real use where the runtime can read it (`memory_in_use`: the OCI backends'
        cgroups); elsewhere every sandbox counts its limit."""
        return Admission(budget, meter=getattr(self.runtime, "memory_in_use", None), clock=self._clock)

    def default_shells(self) -> int:
        """Warm shells when the operator does not say: DEFAULT_SHELLS where the backend has them, else none."""
        return DEFAULT_SHELLS if isinstance(self.runtime, ShellRuntime) else 0

    def _shell_pool(self, size: int) -> WarmPools:
        """The warm shells' pool: one key (`SHELL_REQUEST`), `size` shells, refilled in the background."""
        if size and not isinstance(self.runtime, ShellRuntime):
            log.warning("the %s backend has no warm shells: --miss-shells %d is ignored", self.backend, size)
            size = 0
        return WarmPools(PoolSettings(size=size, max_size=size), self.admission, self.runtime.name,
                         self._fill_shell, self.runtime.stop, self._clock)

    def use_tokens(self, token_for: Callable[[str], str]) -> None:
        """envd's access token of a sandbox id (the API's `tokens.access_token`, the same function `Identity`
        takes), for a runtime whose persistence talks to an envd that already holds one: the microvm backend
        syncs a guest before a filesystem pause, sets a resumed guest's clock, and gives a restored clone its
        own id, token and entropy. Call it once, before the first pause, resume, snapshot or restore."""
        if hasattr(self.runtime, "token_for"):
            self.runtime.token_for = token_for

    async def start(self, *, ca_bundle: str | None = None, prewarm: Iterable[CreateRequest] = ()) -> None:
        """Begin pooling. `ca_bundle` goes to every new sandbox; `prewarm` pools are kept warm from now on."""
        self.ca_bundle = ca_bundle
        for request in prewarm:
            try:
                check_template(request.template, self.backend)
            except BackendMismatch as exc:
                log.warning("not warming a pool for template %s: %s", request.template.template_id, exc)
                continue
            self.pools.pin(request)
        self.pools.start()
        if self.shells.settings.enabled:
            self.shells.pin(SHELL_REQUEST)
            self.shells.start()
        slots = getattr(self.runtime, "slots", None)
        if isinstance(slots, SlotAllocator):  # a runtime whose sandboxes sit behind the host's network slots
            self._sandbox_of = SandboxOf(SUBNET, slots.dir)
            self._egress_audit = EgressAudit(self.egress_log, self._sandbox_of)
            self._egress_audit.start()
        self.history.start()

    def record_egress(self, source: str, entry: EgressEntry) -> None:
        """An entry of the egress audit for the sandbox at `source` (from the egress filter, which judges by name
        the connections the kernel cannot); nothing for an address that names no sandbox of this host."""
        sandbox_id = self._sandbox_of(source) if self._sandbox_of is not None else None
        if sandbox_id is not None:
            self.egress_log.add(sandbox_id, entry)

    # ---- create ---------------------------------------------------------------------------
    async def create(self, request: CreateRequest, identity: Identity) -> SandboxHandle:
        """A running sandbox of `request` that has become `identity`. Raises `HostFull` when the host's budget
        is spent even after the pools gave theirs back, `BackendMismatch` for a template that asks for another
        backend (before anything is made for it). On failure nothing is left running.
        Each create is timed by pool outcome, and a refusal for lack of room counted (node/telemetry.py)."""
        began = time.monotonic()
        try:
            handle, pool = await self._create(request, identity)
        except HostFull:
            self.telemetry.rejections["host_full"] += 1
            raise
        self.telemetry.created(pool, time.monotonic() - began)
        return handle

    async def _create(self, request: CreateRequest, identity: Identity) -> tuple[SandboxHandle, str]:
        """`create`'s work, and whether a warm sandbox served it ("hit") or not ("miss")."""
        check_template(request.template, self.backend)
        # Volumes are mounted when a sandbox starts: a pooled sandbox started without them cannot serve.
        handle = self.pools.take(request) if not request.volumes else None
        while handle is not None:  # a hit: hand it over
            self.admission.hand_out(handle.sandbox_id)
            try:
                await self._init(handle, request, identity)
            except Exception as exc:  # e.g. it died while pooled: never hand out a broken one
                log.warning("pooled sandbox %s failed /init (%s); stopping it", handle.sandbox_id, exc)
                await self._discard(handle)
                handle = self.pools.take(request, count=False)
                continue
            except BaseException:  # cancelled: nobody will own it
                await self._discard(handle)
                raise
            return handle, "hit"
        handle = await self._from_shell(request, identity)
        if handle is not None:
            return handle, "miss"
        sandbox_id = new_sandbox_id()
        need = request.resources
        if not self.admission.try_reserve(sandbox_id, need, Kind.SANDBOX):
            self._evict(need)
            self.admission.reserve(sandbox_id, need, Kind.SANDBOX)  # raises HostFull
        try:
            with self.pools.user_start():
                handle = await self._boot(request, sandbox_id)
        except BaseException:
            self.admission.release(sandbox_id)
            raise
        try:
            await self._init(handle, request, identity)
        except BaseException:
            await self._discard(handle)
            raise
        return handle, "miss"

    def _evict(self, need: Resources) -> None:
        """Give back pooled sandboxes, then shells, until `need` fits (or nothing pooled is left)."""
        if not self.pools.evict(need):
            self.shells.evict(need)

    async def _from_shell(self, request: CreateRequest, identity: Identity) -> SandboxHandle | None:
        """A miss served by a warm shell (its id becomes the sandbox's), or None: no shell, or one cannot serve
        this request (then it is cold-started, as the log says)."""
        runtime = self.runtime
        if not self.shells.settings.enabled or not isinstance(runtime, ShellRuntime):
            return None
        why = runtime.shell_unfit(request.spec("unused"))
        if why is not None:
            log.info("pool miss of %s cold-started, not from a shell: %s", request.template.template_id, why)
            return None
        shell = self.shells.take(SHELL_REQUEST)
        if shell is None:
            return None
        sandbox_id = shell.sandbox_id
        need = request.resources
        self.admission.release(sandbox_id)  # the shell's own reservation, replaced by the request's
        if not self.admission.try_reserve(sandbox_id, need, Kind.SANDBOX):
            self._evict(need)
            try:
                self.admission.reserve(sandbox_id, need, Kind.SANDBOX)  # raises HostFull
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.runtime.stop(shell)
                raise
        try:
            handle = await runtime.fill_shell(shell, request.spec(sandbox_id))
            # One /init for both: the template's defaults and CA bundle (a cold start's first), then the owner's.
            body = {**pre_init_body(sandbox_id, request.template, self.ca_bundle),
                    **identity.init_body(sandbox_id, request.template.template_id)}
            token = identity.token_for(sandbox_id) if identity.token_for else None
            await envd_client.init(self._http, handle.envd_url, body, token=token)
        except Exception as exc:  # a shell is used once (ShellUnfit among others): stopped, the miss cold-started
            log.warning("pool miss of %s cold-started: shell %s could not serve it (%s)",
                        request.template.template_id, sandbox_id, exc)
            await self._discard(shell)
            return None
        except BaseException:
            await self._discard(shell)
            raise
        return handle

    # ---- snapshots (issue 14): the source runs on; each restore is a new sandbox ----------------
    async def snapshot(self, handle: SandboxHandle, dest: Path) -> SavedSandbox:
        """Save a running sandbox's memory and files into `dest`; it keeps running (runtime.snapshot)."""
        return await self.runtime.snapshot(handle, dest)

    async def restore(self, saved: SavedSandbox, request: CreateRequest, identity: Identity,
                      source_token: str | None) -> SandboxHandle:
        """A new sandbox from a snapshot, become `identity`: its own id, slot and disk (runtime.restore), then
        `/init` with a fresh token, env, clock and entropy seed. `source_token` is the token the snapshot's envd
        still holds (its source's). Admission as for `create`; on failure nothing is left running."""
        sandbox_id = new_sandbox_id()
        need = request.resources
        if not self.admission.try_reserve(sandbox_id, need, Kind.SANDBOX):
            self._evict(need)
            self.admission.reserve(sandbox_id, need, Kind.SANDBOX)  # raises HostFull
        try:
            handle = await self.runtime.restore(saved, request.spec(sandbox_id))
        except BaseException:
            self.admission.release(sandbox_id)
            raise
        try:
            body = identity.init_body(handle.sandbox_id, request.template.template_id)
            body["entropy"] = base64.b64encode(os.urandom(RESTORE_ENTROPY_BYTES)).decode()
            # A backend that re-identifies its clones itself (microvm: `use_tokens`) left the new id's token there.
            reidentified = getattr(self.runtime, "token_for", None) is not None and identity.token_for is not None
            token = identity.token_for(handle.sandbox_id) if reidentified and identity.token_for else source_token
            await envd_client.init(self._http, handle.envd_url, body, token=token)
        except BaseException:
            await self._discard(handle)
            raise
        return handle

    async def _boot(self, request: CreateRequest, sandbox_id: str, pooled: bool = False) -> SandboxHandle:
        """Start a sandbox up to where envd waits for its owner's `/init`, its start command running and ready."""
        handle = await self.runtime.start(request.spec(sandbox_id))
        try:
            await prepare(self._http, handle, request.template, self.ca_bundle, self.ready_policy, warm_up=pooled)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.runtime.stop(handle)
            raise
        return handle

    async def _fill(self, request: CreateRequest, sandbox_id: str) -> SandboxHandle:
        return await self._boot(request, sandbox_id, pooled=True)

    async def _fill_shell(self, request: CreateRequest, sandbox_id: str) -> SandboxHandle:
        """A warm shell: its envd gets one `/init` with the CA bundle and no user, token or command, so nothing
        it caches (users, the memory limit its process cap derives from, files) predates the template's root."""
        if not isinstance(self.runtime, ShellRuntime):
            raise RuntimeError(f"the {self.backend} backend has no warm shells")
        handle = await self.runtime.start_shell(request.spec(sandbox_id))
        try:
            # envd's first /init takes a code path (its thread pool, the CA bundle's file) worth warming; the
            # bundle lands in the shell's root, which goes, and is given again after the switch.
            body: dict = {"sandboxId": sandbox_id}
            if self.ca_bundle:
                body["caBundle"] = self.ca_bundle
            await envd_client.init(self._http, handle.envd_url, body)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.runtime.stop(handle)
            raise
        return handle

    async def _init(self, handle: SandboxHandle, request: CreateRequest, identity: Identity) -> None:
        body = identity.init_body(handle.sandbox_id, request.template.template_id)
        # A new sandbox's envd holds no token yet; a restored one already holds its own (the runtime gave it).
        token = identity.token_for(handle.sandbox_id) if identity.token_for else None
        await envd_client.init(self._http, handle.envd_url, body, token=token)

    async def _discard(self, handle: SandboxHandle) -> None:
        with contextlib.suppress(Exception):
            await self.runtime.stop(handle)
        self.admission.release(handle.sandbox_id)

    # ---- running sandboxes ----------------------------------------------------------------
    async def kill(self, handle: SandboxHandle) -> None:
        self.unwatch(handle.sandbox_id)  # its end is ours, not news
        self.history.forget(handle.sandbox_id)  # even if stopping fails: its figures end with its owner's interest
        await self.runtime.stop(handle)
        self.admission.release(handle.sandbox_id)
        self.egress_log.forget(handle.sandbox_id)

    async def set_egress(self, handle: SandboxHandle, policy: EgressPolicy) -> None:
        """Load `policy` as the sandbox's own egress rules (replacing any), cutting connections it now denies.
        Every backend's sandbox sits behind a veth of its network slot, where the rules are judged."""
        slot = handle.state.get("slot")
        if slot is None:
            raise BackendError(f"sandbox {handle.sandbox_id} has no network slot to set egress rules on")
        target = Slot(int(slot))
        await egress.RULES.apply(target.veth, policy, target.sandbox_ip)
        if self._egress_audit is not None:  # a denial under the new rules is a new entry, even to a place denied before
            await self._egress_audit.denied.settle(target.sandbox_ip, egress.forget_denied)

    # ---- pause and resume (issue 14) -------------------------------------------------------
    async def pause(self, handle: SandboxHandle, mode: PauseMode, dest: Path) -> SavedSandbox:
        """Save the sandbox into `dest` and stop its processes; its budget is given back while it is paused.
        On failure it runs on as before, still watched."""
        if mode not in self.runtime.persistence.pause_modes:
            raise not_supported(self.backend, f"pause ({mode})")
        on_exit = self._on_exit.get(handle.sandbox_id)
        self.unwatch(handle.sandbox_id)  # its end is a pause, not news
        try:
            saved = await self.runtime.pause(handle, mode, dest)
        except BaseException:
            if on_exit is not None:
                self.watch(handle, on_exit)
            raise
        self.admission.release(handle.sandbox_id)
        return saved

    async def resume(self, saved: SavedSandbox, request: CreateRequest, identity: Identity) -> SandboxHandle:
        """Bring a paused sandbox back under its id, its budget taken again (`HostFull` when it does not fit).
        A "filesystem" pause cold-boots: the template's start command and `/init` run again, as on create.
        On failure it stays paused (`saved` untouched) and resumable."""
        sandbox_id = saved.source_id
        need = request.resources
        if not self.admission.try_reserve(sandbox_id, need, Kind.SANDBOX):
            self._evict(need)
            self.admission.reserve(sandbox_id, need, Kind.SANDBOX)  # raises HostFull
        try:
            handle = await self.runtime.resume(saved, request.spec(sandbox_id))
        except BaseException:
            self.admission.release(sandbox_id)
            raise
        if saved.mode == "filesystem" or handle.state.pop(COLD_BOOTED, False):
            try:
                await prepare(self._http, handle, request.template, self.ca_bundle, self.ready_policy)
                await self._init(handle, request, identity)
            except BaseException:
                # Back to paused, on the same layer: the files are still all there is.
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(shutil.rmtree, saved.directory, True)
                    await self.runtime.pause(handle, "filesystem", saved.directory)
                self.admission.release(sandbox_id)
                raise
        return handle

    async def stop_saved(self, saved: SavedSandbox) -> None:
        """End a paused sandbox for good: what it holds (disk, slot) and its pause directory."""
        await self.runtime.stop_saved(saved)
        await self.discard_saved(saved)
        self.history.forget(saved.source_id)

    @staticmethod
    async def discard_saved(saved: SavedSandbox) -> None:
        """Delete a pause directory once nothing needs it (after a resume was recorded, or a kill)."""
        await asyncio.to_thread(shutil.rmtree, saved.directory, True)
        with contextlib.suppress(OSError):
            saved.directory.with_name(saved.directory.name + ".lock").unlink()

    # ---- liveness -------------------------------------------------------------------------
    def watch(self, handle: SandboxHandle, on_exit: OnExit) -> None:
        """Call `on_exit(handle, reason)` once if the sandbox ends by itself (its envd or init died, it was
        killed from outside): the owner frees it (`kill`) and stops reporting it as running. Ended by `kill`
        or `unwatch`, it is never called."""
        self.unwatch(handle.sandbox_id)
        self._on_exit[handle.sandbox_id] = on_exit
        self._watches[handle.sandbox_id] = asyncio.create_task(self._watch(handle, on_exit))
        self.history.track(handle)  # a watched sandbox is a user's running one: its use is sampled

    def unwatch(self, sandbox_id: str) -> None:
        self._on_exit.pop(sandbox_id, None)
        self.history.untrack(sandbox_id)
        task = self._watches.pop(sandbox_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _watch(self, handle: SandboxHandle, on_exit: OnExit) -> None:
        try:
            wait_exit = getattr(self.runtime, "wait_exit", None)
            if wait_exit is not None:
                reason = await wait_exit(handle)
            else:
                # The runtime's state, not an event of this process: polled.
                while await self.runtime.is_running(handle):  # noqa: ASYNC110
                    await asyncio.sleep(LIVENESS_POLL_SECONDS)
                reason = "it is no longer running"
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("watching sandbox %s failed; its end will be noticed at its timeout", handle.sandbox_id)
            return
        if self._watches.get(handle.sandbox_id) is not asyncio.current_task():
            return  # unwatched meanwhile
        del self._watches[handle.sandbox_id]
        log.warning("sandbox %s ended by itself: %s", handle.sandbox_id, reason)
        try:
            await on_exit(handle, reason)
        except Exception:
            log.exception("cleaning up after sandbox %s failed", handle.sandbox_id)

    async def is_running(self, handle: SandboxHandle) -> bool:
        return await self.runtime.is_running(handle)

    async def usage(self, handle: SandboxHandle) -> ResourceUsage:
        return await self.runtime.usage(handle)

    async def logs(self, handle: SandboxHandle) -> list[str]:
        return await self.runtime.logs(handle)

    @staticmethod
    def create_log(handle: SandboxHandle) -> list[LogNote]:
        """What was done for the sandbox's create before it ran: nothing worth a log entry on one host (its
        templates are its own); a control plane's nodes may have pulled one (`RemoteNodes.create_log`)."""
        return []

    async def egress_entries(self, handle: SandboxHandle) -> list[EgressEntry]:
        """The sandbox's egress audit on this node (a control plane asks its node for it: cluster/remote_node.py)."""
        return self.egress_log.entries(handle.sandbox_id)

    def status(self) -> NodeStatus:
        admission = self.admission
        admission.refresh()
        return NodeStatus(self.backend, admission.budget, admission.used(), admission.used(Kind.POOL),
                          self.pools.status() + self.shells.status(), admission.in_use_mb(), admission.count(),
                          admission.pressure())

    async def reconcile(self, known: Sequence[SandboxHandle],
                        resources: Mapping[str, Resources] | None = None,
                        paused: Iterable[str] = ()) -> set[str]:
        """After a restart: adopt what still runs (with its `resources` reserved), stop what the store does
        not know — among them any warm-pool sandbox a previous server left behind. `paused` sandboxes (their
        disks and slots) are left as they are, and take back what a host reboot released (their slots), before
        pools and shells start and could take it.

        Returns the ids of `known` sandboxes that are alive; the caller marks the others gone.
        """
        alive = {h.sandbox_id for h in known if await self.runtime.is_running(h)}
        for handle in known:
            if handle.sandbox_id not in alive:
                with contextlib.suppress(Exception):
                    await self.runtime.stop(handle)  # free what a half-dead sandbox still holds
            elif resources and handle.sandbox_id in resources:
                self.admission.adopt(handle.sandbox_id, resources[handle.sandbox_id])
        paused = set(paused)
        for sandbox_id in sorted(paused):  # before `start()` fills pools and shells (Runtime.hold_paused)
            try:
                await self.runtime.hold_paused(sandbox_id)
            except Exception as exc:  # its resume claims what it needs then, as it would without this step
                log.warning("could not hold what paused sandbox %s had: %s", sandbox_id, exc)
        orphans = await self.runtime.running_ids() - {h.sandbox_id for h in known} - paused
        for orphan in orphans:
            log.warning("removing orphan sandbox %s that the store does not know", orphan)
            with contextlib.suppress(Exception):
                await self.runtime.stop(SandboxHandle(orphan, self.runtime.name, address=""))
        return alive

    async def close(self) -> None:
        """Server shutdown: the pools' sandboxes are stopped, the runtime closed; handed-out sandboxes keep
        running (the next server adopts them)."""
        for sandbox_id in list(self._watches):
            self.unwatch(sandbox_id)
        if self._egress_audit is not None:
            await self._egress_audit.stop()
        await self.history.stop()
        try:
            await self.pools.close()
            await self.shells.close()
            await self._http.aclose()
        finally:
            await self.runtime.close()
