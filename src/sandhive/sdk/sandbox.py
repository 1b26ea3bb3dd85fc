"""`Sandbox` and `AsyncSandbox`: the two faces of one sandbox client.

Every request is built by the shared layer (`api_calls`, `process_calls`, `fs_calls`) and sent by the face's
transport, so the two classes differ only in `def` versus `async def`. Lifecycle methods work on the class
with an id (`Sandbox.kill(id)`) and on an instance (`sbx.kill()`), as in E2B's SDK. Leaving a `with` block
kills the sandbox.

The seed's API is here too: `Sandbox()` creates a sandbox, `sandbox.process` and `sandbox.filesystem` are
aliases over `commands` and `files`, and `close()` ends the sandbox.
"""

from __future__ import annotations

import builtins
import contextlib
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeVar

from . import api_calls, network_calls, snapshot_calls
from .commands import AsyncCommands, Commands
from .config import ConnectionConfig
from .dual import dualmethod
from .exceptions import SandboxException
from .files import AsyncFiles, Files
from .legacy import AsyncFilesystem, AsyncProcessManager, Filesystem, ProcessManager
from .models import SandboxInfo, SandboxMetrics, SandboxQuery, SandboxState
from .network_calls import SandboxNetworkOpts, SandboxNetworkUpdate
from .paginator import AsyncSandboxPaginator, SandboxPaginator
from .pty import AsyncPty, Pty
from .ref import SandboxRef
from .snapshot_calls import SnapshotInfo
from .transport import AsyncTransport, SyncTransport
from .wire import HttpCall

if TYPE_CHECKING:
    from typing import Unpack

    from .config import ConnectionOptions

DEFAULT_TEMPLATE = "base"
T = TypeVar("T")


def _query(query: SandboxQuery | None, metadata: dict[str, str] | None,
           state: list[SandboxState] | None) -> SandboxQuery | None:
    """`list(query=...)` as E2B has it, or the shortcut `list(metadata=..., state=...)`."""
    if metadata is None and state is None:
        return query
    return SandboxQuery(metadata=metadata if metadata is not None else (query.metadata if query else None),
                        state=state if state is not None else (query.state if query else None))


PauseMode = Literal["memory", "filesystem"]


def _memory(mode: PauseMode) -> bool:
    if mode not in ("memory", "filesystem"):
        raise ValueError(f"mode must be 'memory' or 'filesystem', not {mode!r}")
    return mode == "memory"


class _SandboxBase:
    """What both faces share without I/O: identity, addresses and signed URLs."""

    _ref: SandboxRef
    files: Files | AsyncFiles
    default_template: ClassVar[str] = DEFAULT_TEMPLATE  # what `create()` starts when no template is named

    @property
    def sandbox_id(self) -> str:
        return self._ref.sandbox_id

    @property
    def id(self) -> str:
        """The seed API's name for `sandbox_id`."""
        return self._ref.sandbox_id

    @property
    def template_id(self) -> str:
        return self._ref.template_id

    @property
    def envd_version(self) -> str:
        return self._ref.envd_version

    @property
    def connection_config(self) -> ConnectionConfig:
        return self._ref.config

    @property
    def traffic_access_token(self) -> str | None:
        """The token the server's proxy asks for (as `E2B-Traffic-Access-Token`) on this sandbox's ports when it
        was created with `network={"allow_public_traffic": False}`; None when its ports are public."""
        return self._ref.traffic_access_token

    def get_host(self, port: int) -> str:
        """`<port>-<id>.<domain>`: send HTTP to the server with this Host (or resolve it) to reach `port`."""
        return self._ref.get_host(port)

    def download_url(self, path: str, user: str | None = None, use_signature_expiration: int | None = None) -> str:
        return self.files.download_url(path, user, use_signature_expiration)

    def upload_url(self, path: str, user: str | None = None, use_signature_expiration: int | None = None) -> str:
        return self.files.upload_url(path, user, use_signature_expiration)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sandbox_id={self.sandbox_id!r}, template_id={self.template_id!r})"


class Sandbox(_SandboxBase):
    """A sandbox (blocking). `Sandbox.create()` (or the seed's `Sandbox()`) starts one; `Sandbox.connect(id)`
    attaches to a running one."""

    files: Files

    def __init__(self, template: str | None = None, timeout: int | None = None,
                 metadata: dict[str, str] | None = None, envs: dict[str, str] | None = None, *,
                 env_vars: dict[str, str] | None = None, allow_internet_access: bool | None = None,
                 volume_mounts: dict[str, Any] | None = None, network: SandboxNetworkOpts | None = None,
                 **opts: Unpack[ConnectionOptions]) -> None:
        """Create a sandbox from `template` (default: the class's `default_template`, `base`) that lives `timeout`
        seconds (server default 300).

        `envs` (the seed's `env_vars`) are set for every command; `metadata` is yours to filter `list` by.
        `network` is E2B's dict: `allow_out`/`deny_out` (IPs and CIDR ranges; `allow_out` also domains such as
        `"*.example.com"`, matched on HTTP Host and TLS SNI), `allow_public_traffic=False` (ports
        answer only with `traffic_access_token`), `mask_request_host`. A setting the server refuses raises
        `InvalidArgumentException` with its reason.
        """
        config = ConnectionConfig.resolve(**opts)
        transport = SyncTransport(config)
        call = api_calls.create(config, template or self.default_template, timeout=timeout, metadata=metadata,
                                envs=envs if envs is not None else env_vars,
                                allow_internet_access=allow_internet_access, request_timeout=None,
                                volume_mounts=volume_mounts, network=network)
        self._attach(_send(transport, call), transport)

    def _attach(self, ref: SandboxRef, transport: SyncTransport) -> None:
        self._ref = ref
        self._io = transport
        self.commands = Commands(ref, transport)
        self.files = Files(ref, transport)
        self.pty = Pty(ref, transport, self.commands)
        self.process = ProcessManager(self.commands)
        self.filesystem = Filesystem(self.files)

    @classmethod
    def _from_ref(cls, ref: SandboxRef, transport: SyncTransport) -> Self:
        sandbox = cls.__new__(cls)
        sandbox._attach(ref, transport)
        return sandbox

    @classmethod
    def create(cls, template: str | None = None, timeout: int | None = None, metadata: dict[str, str] | None = None,
               envs: dict[str, str] | None = None, *, allow_internet_access: bool | None = None,
               volume_mounts: dict[str, Any] | None = None, network: SandboxNetworkOpts | None = None,
               **opts: Unpack[ConnectionOptions]) -> Self:
        """Create a sandbox (see `Sandbox.__init__`); `volume_mounts` maps paths to `Volume`s or volume names."""
        return cls(template, timeout, metadata, envs, allow_internet_access=allow_internet_access,
                   volume_mounts=volume_mounts, network=network, **opts)

    @dualmethod
    def connect(cls, sandbox_id: str, timeout: int | None = None, **opts: Unpack[ConnectionOptions]) -> Self:
        """Attach to a running sandbox by id; with `timeout`, it lives at least that many more seconds."""
        config = ConnectionConfig.resolve(**opts)
        transport = SyncTransport(config)
        return cls._from_ref(_send(transport, api_calls.connect(config, sandbox_id, timeout=timeout,
                                                                request_timeout=None)), transport)

    @connect.instance
    def _connect_on_instance(self, timeout: int | None = None, request_timeout: float | None = None) -> Self:
        self._io.call(api_calls.connect(self._ref.config, self.sandbox_id, timeout=timeout,
                                        request_timeout=request_timeout))
        return self

    @classmethod
    def list(cls, query: SandboxQuery | None = None, limit: int | None = None, next_token: str | None = None, *,
             metadata: dict[str, str] | None = None, state: list[SandboxState] | None = None,
             **opts: Unpack[ConnectionOptions]) -> SandboxPaginator:
        """The team's sandboxes, newest first: a paginator (`next_items()`), also iterable over all pages."""
        config = ConnectionConfig.resolve(**opts)
        return SandboxPaginator(config, _query(query, metadata, state), limit, next_token, None)

    @dualmethod
    def kill(cls, sandbox_id: str, **opts: Unpack[ConnectionOptions]) -> bool:
        """Kill a sandbox by id: True if killed, False if it was already gone."""
        config = ConnectionConfig.resolve(**opts)
        return _once(config, api_calls.kill(config, sandbox_id, request_timeout=None))

    @kill.instance
    def _kill_on_instance(self, request_timeout: float | None = None) -> bool:
        try:
            return self._io.call(api_calls.kill(self._ref.config, self.sandbox_id, request_timeout=request_timeout))
        finally:
            self._io.close()

    @dualmethod
    def pause(cls, sandbox_id: str, *, mode: PauseMode = "memory", **opts: Unpack[ConnectionOptions]) -> bool:
        """Pause a sandbox by id: "memory" keeps its processes where they are, "filesystem" only its files.
        True if paused now, False if it was paused already; `connect` (or `resume`) brings it back."""
        config = ConnectionConfig.resolve(**opts)
        return _once(config, api_calls.pause(config, sandbox_id, memory=_memory(mode), request_timeout=None))

    @pause.instance
    def _pause_on_instance(self, *, mode: PauseMode = "memory", request_timeout: float | None = None) -> bool:
        return self._io.call(api_calls.pause(self._ref.config, self.sandbox_id, memory=_memory(mode),
                                             request_timeout=request_timeout))

    @dualmethod
    def resume(cls, sandbox_id: str, timeout: int | None = None, **opts: Unpack[ConnectionOptions]) -> Self:
        """Resume a paused sandbox (the same as `connect`, which also attaches to a running one)."""
        return cls.connect(sandbox_id, timeout, **opts)

    @resume.instance
    def _resume_on_instance(self, timeout: int | None = None, request_timeout: float | None = None) -> Self:
        return self._connect_on_instance(timeout, request_timeout)

    @dualmethod
    def set_timeout(cls, sandbox_id: str, timeout: int, **opts: Unpack[ConnectionOptions]) -> None:
        """End the sandbox `timeout` seconds from now (this may shorten its life)."""
        config = ConnectionConfig.resolve(**opts)
        _once(config, api_calls.set_timeout(config, sandbox_id, timeout, request_timeout=None))

    @set_timeout.instance
    def _set_timeout_on_instance(self, timeout: int, request_timeout: float | None = None) -> None:
        self._io.call(api_calls.set_timeout(self._ref.config, self.sandbox_id, timeout,
                                            request_timeout=request_timeout))

    @dualmethod
    def get_info(cls, sandbox_id: str, **opts: Unpack[ConnectionOptions]) -> SandboxInfo:
        config = ConnectionConfig.resolve(**opts)
        return _once(config, api_calls.get_info(config, sandbox_id, request_timeout=None))

    @get_info.instance
    def _get_info_on_instance(self, request_timeout: float | None = None) -> SandboxInfo:
        return self._io.call(api_calls.get_info(self._ref.config, self.sandbox_id, request_timeout=request_timeout))

    @dualmethod
    def update_network(cls, sandbox_id: str, network: SandboxNetworkUpdate,
                       **opts: Unpack[ConnectionOptions]) -> None:
        """Replace the sandbox's egress rules (`allow_out`, `deny_out`, `allow_internet_access`) at once: every
        key left out is cleared, so `{}` opens it again. Established connections the new rules deny are cut."""
        config = ConnectionConfig.resolve(**opts)
        _once(config, network_calls.update_network(config, sandbox_id, network, request_timeout=None))

    @update_network.instance
    def _update_network_on_instance(self, network: SandboxNetworkUpdate,
                                    request_timeout: float | None = None) -> None:
        self._io.call(network_calls.update_network(self._ref.config, self.sandbox_id, network,
                                                   request_timeout=request_timeout))

    @dualmethod
    def get_metrics(cls, sandbox_id: str, start: datetime | None = None, end: datetime | None = None,
                    **opts: Unpack[ConnectionOptions]) -> builtins.list[SandboxMetrics]:
        """The sandbox's resource use (CPU, memory, disk)."""
        config = ConnectionConfig.resolve(**opts)
        return _once(config, api_calls.get_metrics(config, sandbox_id, start=start, end=end, request_timeout=None))

    @get_metrics.instance
    def _get_metrics_on_instance(self, start: datetime | None = None, end: datetime | None = None,
                    request_timeout: float | None = None) -> builtins.list[SandboxMetrics]:
        return self._io.call(api_calls.get_metrics(self._ref.config, self.sandbox_id, start=start, end=end,
                                                   request_timeout=request_timeout))

    # ---- snapshots and forks (issue 14; the requests are built in snapshot_calls.py) ------------------------
    @dualmethod
    def create_snapshot(cls, sandbox_id: str, name: str | None = None,
                        **opts: Unpack[ConnectionOptions]) -> SnapshotInfo:
        """Snapshot a running sandbox's memory and files (it keeps running); `Sandbox.create(snapshot_id)` starts
        new sandboxes from it. A `name` makes its id `<team-slug>/<name>:default`."""
        config = ConnectionConfig.resolve(**opts)
        return _once(config, snapshot_calls.create_snapshot(config, sandbox_id, name, request_timeout=None))

    @create_snapshot.instance
    def _create_snapshot_on_instance(self, name: str | None = None,
                                     request_timeout: float | None = None) -> SnapshotInfo:
        return self._io.call(snapshot_calls.create_snapshot(self._ref.config, self.sandbox_id, name,
                                                            request_timeout=request_timeout))

    @dualmethod
    def fork(cls, sandbox_id: str, count: int = 1, timeout: int | None = None,
             **opts: Unpack[ConnectionOptions]) -> builtins.list[Self | SandboxException]:
        """`count` (1–100) new sandboxes from one snapshot of a running one, which keeps its id and end time. One
        entry per fork: the sandbox, or the exception that kept it from starting."""
        config = ConnectionConfig.resolve(**opts)
        refs = _once(config, snapshot_calls.fork(config, sandbox_id, count=count, timeout=timeout,
                                                 request_timeout=None))
        return [cls._from_ref(r, SyncTransport(config)) if isinstance(r, SandboxRef) else r for r in refs]

    @fork.instance
    def _fork_on_instance(self, count: int = 1, timeout: int | None = None,
                          request_timeout: float | None = None) -> builtins.list[Self | SandboxException]:
        config = self._ref.config
        refs = self._io.call(snapshot_calls.fork(config, self.sandbox_id, count=count, timeout=timeout,
                                                 request_timeout=request_timeout))
        return [type(self)._from_ref(r, SyncTransport(config)) if isinstance(r, SandboxRef) else r for r in refs]

    @classmethod
    def list_snapshots(cls, sandbox_id: str | None = None, limit: int | None = None,
                       **opts: Unpack[ConnectionOptions]) -> builtins.list[SnapshotInfo]:
        """The team's snapshots (of `sandbox_id` only, if given), newest first, every page."""
        config = ConnectionConfig.resolve(**opts)
        found: builtins.list[SnapshotInfo] = []
        token: str | None = None
        while True:
            page = _once(config, snapshot_calls.list_snapshots(config, sandbox_id, limit=limit, next_token=token,
                                                               request_timeout=None))
            found += page.items
            if not page.next_token:
                return found
            token = page.next_token

    @classmethod
    def delete_snapshot(cls, snapshot_id: str, **opts: Unpack[ConnectionOptions]) -> bool:
        """Delete one of the team's snapshots: True if deleted, False if there was none of that id."""
        config = ConnectionConfig.resolve(**opts)
        return _once(config, snapshot_calls.delete_snapshot(config, snapshot_id, request_timeout=None))

    def is_running(self, request_timeout: float | None = None) -> bool:
        """Whether envd answers: False once the sandbox is gone."""
        try:
            self.commands.list(request_timeout=request_timeout)
        except SandboxException:
            return False
        return True

    def close(self) -> None:
        """The seed's way to end a sandbox: kill it (if still running) and release the connections."""
        self.kill()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.kill()
            return
        with contextlib.suppress(SandboxException):  # do not hide the error that ended the block
            self.kill()


class AsyncSandbox(_SandboxBase):
    """A sandbox (asyncio). `await AsyncSandbox.create()` starts one; `await AsyncSandbox.connect(id)`
    attaches to a running one."""

    files: AsyncFiles

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("an AsyncSandbox is made with `await AsyncSandbox.create(...)` or "
                        "`await AsyncSandbox.connect(sandbox_id)`")

    def _attach(self, ref: SandboxRef, transport: AsyncTransport) -> None:
        self._ref = ref
        self._io = transport
        self.commands = AsyncCommands(ref, transport)
        self.files = AsyncFiles(ref, transport)
        self.pty = AsyncPty(ref, transport, self.commands)
        self.process = AsyncProcessManager(self.commands)
        self.filesystem = AsyncFilesystem(self.files)

    @classmethod
    def _from_ref(cls, ref: SandboxRef, transport: AsyncTransport) -> Self:
        sandbox = cls.__new__(cls)
        sandbox._attach(ref, transport)
        return sandbox

    @classmethod
    async def create(cls, template: str | None = None, timeout: int | None = None,
                     metadata: dict[str, str] | None = None, envs: dict[str, str] | None = None, *,
                     allow_internet_access: bool | None = None, volume_mounts: dict[str, Any] | None = None,
                     network: SandboxNetworkOpts | None = None, **opts: Unpack[ConnectionOptions]) -> Self:
        """As `Sandbox.create`."""
        config = ConnectionConfig.resolve(**opts)
        transport = AsyncTransport(config)
        call = api_calls.create(config, template or cls.default_template, timeout=timeout, metadata=metadata, envs=envs,
                                allow_internet_access=allow_internet_access, request_timeout=None,
                                volume_mounts=volume_mounts, network=network)
        return cls._from_ref(await _send_async(transport, call), transport)

    @dualmethod
    async def connect(cls, sandbox_id: str, timeout: int | None = None, **opts: Unpack[ConnectionOptions]) -> Self:
        config = ConnectionConfig.resolve(**opts)
        transport = AsyncTransport(config)
        return cls._from_ref(await _send_async(transport, api_calls.connect(config, sandbox_id, timeout=timeout,
                                                                            request_timeout=None)), transport)

    @connect.instance
    async def _connect_on_instance(self, timeout: int | None = None, request_timeout: float | None = None) -> Self:
        await self._io.call(api_calls.connect(self._ref.config, self.sandbox_id, timeout=timeout,
                                              request_timeout=request_timeout))
        return self

    @classmethod
    def list(cls, query: SandboxQuery | None = None, limit: int | None = None, next_token: str | None = None, *,
             metadata: dict[str, str] | None = None, state: list[SandboxState] | None = None,
             **opts: Unpack[ConnectionOptions]) -> AsyncSandboxPaginator:
        """As `Sandbox.list`: `await paginator.next_items()`, or `async for info in AsyncSandbox.list()`."""
        config = ConnectionConfig.resolve(**opts)
        return AsyncSandboxPaginator(config, _query(query, metadata, state), limit, next_token, None)

    @dualmethod
    async def kill(cls, sandbox_id: str, **opts: Unpack[ConnectionOptions]) -> bool:
        config = ConnectionConfig.resolve(**opts)
        return await _once_async(config, api_calls.kill(config, sandbox_id, request_timeout=None))

    @kill.instance
    async def _kill_on_instance(self, request_timeout: float | None = None) -> bool:
        try:
            return await self._io.call(api_calls.kill(self._ref.config, self.sandbox_id,
                                                      request_timeout=request_timeout))
        finally:
            await self._io.close()

    @dualmethod
    async def pause(cls, sandbox_id: str, *, mode: PauseMode = "memory", **opts: Unpack[ConnectionOptions]) -> bool:
        """Pause a sandbox by id (see `Sandbox.pause`)."""
        config = ConnectionConfig.resolve(**opts)
        return await _once_async(config, api_calls.pause(config, sandbox_id, memory=_memory(mode),
                                                         request_timeout=None))

    @pause.instance
    async def _pause_on_instance(self, *, mode: PauseMode = "memory", request_timeout: float | None = None) -> bool:
        return await self._io.call(api_calls.pause(self._ref.config, self.sandbox_id, memory=_memory(mode),
                                                   request_timeout=request_timeout))

    @dualmethod
    async def resume(cls, sandbox_id: str, timeout: int | None = None, **opts: Unpack[ConnectionOptions]) -> Self:
        """Resume a paused sandbox (the same as `connect`)."""
        return await cls.connect(sandbox_id, timeout, **opts)

    @resume.instance
    async def _resume_on_instance(self, timeout: int | None = None, request_timeout: float | None = None) -> Self:
        return await self._connect_on_instance(timeout, request_timeout)

    @dualmethod
    async def set_timeout(cls, sandbox_id: str, timeout: int, **opts: Unpack[ConnectionOptions]) -> None:
        config = ConnectionConfig.resolve(**opts)
        await _once_async(config, api_calls.set_timeout(config, sandbox_id, timeout, request_timeout=None))

    @set_timeout.instance
    async def _set_timeout_on_instance(self, timeout: int, request_timeout: float | None = None) -> None:
        await self._io.call(api_calls.set_timeout(self._ref.config, self.sandbox_id, timeout,
                                                  request_timeout=request_timeout))

    @dualmethod
    async def get_info(cls, sandbox_id: str, **opts: Unpack[ConnectionOptions]) -> SandboxInfo:
        config = ConnectionConfig.resolve(**opts)
        return await _once_async(config, api_calls.get_info(config, sandbox_id, request_timeout=None))

    @get_info.instance
    async def _get_info_on_instance(self, request_timeout: float | None = None) -> SandboxInfo:
        return await self._io.call(api_calls.get_info(self._ref.config, self.sandbox_id,
                                                      request_timeout=request_timeout))

    @dualmethod
    async def update_network(cls, sandbox_id: str, network: SandboxNetworkUpdate,
                             **opts: Unpack[ConnectionOptions]) -> None:
        """As `Sandbox.update_network`: omitted keys are cleared."""
        config = ConnectionConfig.resolve(**opts)
        await _once_async(config, network_calls.update_network(config, sandbox_id, network, request_timeout=None))

    @update_network.instance
    async def _update_network_on_instance(self, network: SandboxNetworkUpdate,
                                          request_timeout: float | None = None) -> None:
        await self._io.call(network_calls.update_network(self._ref.config, self.sandbox_id, network,
                                                         request_timeout=request_timeout))

    @dualmethod
    async def get_metrics(cls, sandbox_id: str, start: datetime | None = None, end: datetime | None = None,
                          **opts: Unpack[ConnectionOptions]) -> builtins.list[SandboxMetrics]:
        config = ConnectionConfig.resolve(**opts)
        return await _once_async(config, api_calls.get_metrics(config, sandbox_id, start=start, end=end,
                                                               request_timeout=None))

    @get_metrics.instance
    async def _get_metrics_on_instance(self, start: datetime | None = None, end: datetime | None = None,
                          request_timeout: float | None = None) -> builtins.list[SandboxMetrics]:
        return await self._io.call(api_calls.get_metrics(self._ref.config, self.sandbox_id, start=start, end=end,
                                                         request_timeout=request_timeout))

    # ---- snapshots and forks: as `Sandbox`'s -------------------------------------------------------------
    @dualmethod
    async def create_snapshot(cls, sandbox_id: str, name: str | None = None,
                              **opts: Unpack[ConnectionOptions]) -> SnapshotInfo:
        config = ConnectionConfig.resolve(**opts)
        return await _once_async(config, snapshot_calls.create_snapshot(config, sandbox_id, name,
                                                                        request_timeout=None))

    @create_snapshot.instance
    async def _create_snapshot_on_instance(self, name: str | None = None,
                                           request_timeout: float | None = None) -> SnapshotInfo:
        return await self._io.call(snapshot_calls.create_snapshot(self._ref.config, self.sandbox_id, name,
                                                                  request_timeout=request_timeout))

    @dualmethod
    async def fork(cls, sandbox_id: str, count: int = 1, timeout: int | None = None,
                   **opts: Unpack[ConnectionOptions]) -> builtins.list[Self | SandboxException]:
        config = ConnectionConfig.resolve(**opts)
        refs = await _once_async(config, snapshot_calls.fork(config, sandbox_id, count=count, timeout=timeout,
                                                             request_timeout=None))
        return [cls._from_ref(r, AsyncTransport(config)) if isinstance(r, SandboxRef) else r for r in refs]

    @fork.instance
    async def _fork_on_instance(self, count: int = 1, timeout: int | None = None,
                                request_timeout: float | None = None) -> builtins.list[Self | SandboxException]:
        config = self._ref.config
        refs = await self._io.call(snapshot_calls.fork(config, self.sandbox_id, count=count, timeout=timeout,
                                                       request_timeout=request_timeout))
        return [type(self)._from_ref(r, AsyncTransport(config)) if isinstance(r, SandboxRef) else r for r in refs]

    @classmethod
    async def list_snapshots(cls, sandbox_id: str | None = None, limit: int | None = None,
                             **opts: Unpack[ConnectionOptions]) -> builtins.list[SnapshotInfo]:
        config = ConnectionConfig.resolve(**opts)
        found: builtins.list[SnapshotInfo] = []
        token: str | None = None
        while True:
            page = await _once_async(config, snapshot_calls.list_snapshots(config, sandbox_id, limit=limit,
                                                                           next_token=token, request_timeout=None))
            found += page.items
            if not page.next_token:
                return found
            token = page.next_token

    @classmethod
    async def delete_snapshot(cls, snapshot_id: str, **opts: Unpack[ConnectionOptions]) -> bool:
        config = ConnectionConfig.resolve(**opts)
        return await _once_async(config, snapshot_calls.delete_snapshot(config, snapshot_id, request_timeout=None))

    async def is_running(self, request_timeout: float | None = None) -> bool:
        try:
            await self.commands.list(request_timeout=request_timeout)
        except SandboxException:
            return False
        return True

    async def close(self) -> None:
        await self.kill()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc is None:
            await self.kill()
            return
        with contextlib.suppress(SandboxException):
            await self.kill()


def _send(transport: SyncTransport, call: HttpCall[T]) -> T:
    """The first call of a new sandbox object: on failure nothing keeps its connections open."""
    try:
        return transport.call(call)
    except BaseException:
        transport.close()
        raise


async def _send_async(transport: AsyncTransport, call: HttpCall[T]) -> T:
    try:
        return await transport.call(call)
    except BaseException:
        await transport.close()
        raise


def _once(config: ConnectionConfig, call: HttpCall[T]) -> T:
    """A class-level call (`Sandbox.kill(id)`): a transport for one request."""
    transport = SyncTransport(config)
    try:
        return transport.call(call)
    finally:
        transport.close()


async def _once_async(config: ConnectionConfig, call: HttpCall[T]) -> T:
    transport = AsyncTransport(config)
    try:
        return await transport.call(call)
    finally:
        await transport.close()

