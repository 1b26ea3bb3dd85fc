"""`process.Process`: the Connect RPC service that starts and drives processes (wire doc §3.3)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import signal as signals
import subprocess
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Literal, TypeAlias, cast

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf import Oneof

from ..rpc.process import process_pb as pb
from ..rpc.process.process_connect import Process
from .processes import Ending, ManagedProcess, ProcessGone, ProcessTable, Spec
from .requests import keepalive_interval, request_timeout, request_user
from .state import SandboxState
from .streams import until_deadline, with_keepalive
from .system_shell import system_bash_argv
from .users import process_environment

if TYPE_CHECKING:
    _Output: TypeAlias = (Oneof[Literal["stdout"], bytes] | Oneof[Literal["stderr"], bytes]
                          | Oneof[Literal["pty"], bytes])

_SIGNALS = {pb.Signal.SIGTERM: signals.SIGTERM, pb.Signal.SIGKILL: signals.SIGKILL}


class ProcessService(Process):
    """Implements the generated `Process` protocol over a `ProcessTable` (subclassed: its `desc()` comes along)."""

    def __init__(self, table: ProcessTable, state: SandboxState, system_root: str | None) -> None:
        self.table = table
        self.state = state
        self.system_root = system_root

    # ---- streams --------------------------------------------------------------------------
    async def start(self, request: pb.StartRequest, ctx: RequestContext) -> AsyncIterator[pb.StartResponse]:
        """Start a process and stream it. With a timeout (`Connect-Timeout-Ms`, the SDK's `timeout`), the
        process is killed when it passes, whether or not its stream is still open, and the stream ends with
        DEADLINE_EXCEEDED: E2B's envd runs it under a context with that deadline."""
        deadline = _deadline(ctx)
        proc = self._spawn(request, ctx)
        if deadline is not None:
            asyncio.get_running_loop().call_at(deadline, _kill_unless_ended, proc)
        async for event in until_deadline(_events(proc, keepalive_interval(ctx)), deadline):
            yield pb.StartResponse(event=event)

    async def connect(self, request: pb.ConnectRequest, ctx: RequestContext) -> AsyncIterator[pb.ConnectResponse]:
        """Stream a running process; at the timeout the stream ends, the process runs on (as in E2B)."""
        deadline = _deadline(ctx)
        proc = self._select(request.process, draining=True)
        async for event in until_deadline(_events(proc, keepalive_interval(ctx)), deadline):
            yield pb.ConnectResponse(event=event)

    async def stream_input(self, requests: AsyncIterator[pb.StreamInputRequest],
                           ctx: RequestContext) -> pb.StreamInputResponse:
        proc: ManagedProcess | None = None
        async for message in requests:
            event = message.event
            if event is None or event.field == "keepalive":
                continue
            if event.field == "start":
                proc = self._select(event.value.process)
            elif proc is None:
                raise ConnectError(Code.FAILED_PRECONDITION, "the first StreamInput message must be start")
            else:
                await self._write(proc, event.value.input)
        return pb.StreamInputResponse()

    # ---- unary ----------------------------------------------------------------------------
    async def list(self, request: pb.ListRequest, ctx: RequestContext) -> pb.ListResponse:
        return pb.ListResponse(processes=[
            pb.ProcessInfo(
                config=pb.ProcessConfig(cmd=p.spec.cmd, args=p.spec.args, envs=p.spec.envs, cwd=p.spec.cwd),
                pid=p.pid, tag=p.spec.tag)
            for p in self.table.running()
        ])

    async def send_input(self, request: pb.SendInputRequest, ctx: RequestContext) -> pb.SendInputResponse:
        await self._write(self._select(request.process), request.input)
        return pb.SendInputResponse()

    async def send_signal(self, request: pb.SendSignalRequest, ctx: RequestContext) -> pb.SendSignalResponse:
        sig = _SIGNALS.get(request.signal)
        if sig is None:
            raise ConnectError(Code.INVALID_ARGUMENT, f"unsupported signal {request.signal!r}")
        proc = self._select(request.process)
        try:
            proc.signal(sig)
        except ProcessGone as exc:
            raise ConnectError(Code.NOT_FOUND, str(exc)) from None
        return pb.SendSignalResponse()

    async def close_stdin(self, request: pb.CloseStdinRequest, ctx: RequestContext) -> pb.CloseStdinResponse:
        try:
            self._select(request.process).close_stdin()
        except ValueError as exc:
            raise ConnectError(Code.FAILED_PRECONDITION, str(exc)) from None
        return pb.CloseStdinResponse()

    async def update(self, request: pb.UpdateRequest, ctx: RequestContext) -> pb.UpdateResponse:
        proc = self._select(request.process)
        if request.pty is not None and request.pty.size is not None:
            try:
                proc.resize(request.pty.size.cols, request.pty.size.rows)
            except ValueError as exc:
                raise ConnectError(Code.FAILED_PRECONDITION, str(exc)) from None
        return pb.UpdateResponse()

    # ---- helpers --------------------------------------------------------------------------
    def _select(self, selector: pb.ProcessSelector | None, *, draining: bool = False) -> ManagedProcess:
        which = selector.selector if selector is not None else None
        if which is None:
            raise ConnectError(Code.INVALID_ARGUMENT, "a process selector (pid or tag) is required")
        try:
            if which.field == "pid":
                return self.table.select(which.value, None, draining=draining)
            return self.table.select(None, which.value, draining=draining)
        except ProcessGone as exc:
            raise ConnectError(Code.NOT_FOUND, str(exc)) from None

    async def _write(self, proc: ManagedProcess, data: pb.ProcessInput | None) -> None:
        if data is None or data.input is None:
            return
        try:
            await proc.write_input(data.input.value, pty=data.input.field == "pty")
        except ProcessGone as exc:
            raise ConnectError(Code.NOT_FOUND, str(exc)) from None
        except ValueError as exc:
            raise ConnectError(Code.FAILED_PRECONDITION, str(exc)) from None

    def _spawn(self, request: pb.StartRequest, ctx: RequestContext) -> ManagedProcess:
        config = request.process
        if config is None or not config.cmd:
            raise ConnectError(Code.INVALID_ARGUMENT, "process.cmd is required")
        user = request_user(ctx, self.state)
        cwd = _working_dir(config.cwd, self.state.default_workdir, user.home)
        if not os.path.isdir(cwd):
            raise ConnectError(Code.INVALID_ARGUMENT, f"cwd '{cwd}' does not exist or is not a directory")
        pty_size = None
        if request.pty is not None:
            size = request.pty.size
            pty_size = (size.cols or 80, size.rows or 24) if size is not None else (80, 24)
        spec = Spec(cmd=config.cmd, args=list(config.args), envs=dict(config.envs), cwd=config.cwd,
                    tag=request.tag or None, pty_size=pty_size, stdin=request.stdin is not False)
        env = process_environment(user, self.state, spec.envs)
        argv = [*self._shell_fallback(spec.cmd), *spec.args]
        try:
            return self.table.spawn(spec, argv, env, cwd, user.spawn_credentials())
        except FileExistsError as exc:
            raise ConnectError(Code.ALREADY_EXISTS, str(exc)) from None
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConnectError(Code.INVALID_ARGUMENT, f"cannot start {spec.cmd!r}: {exc}") from None

    def _shell_fallback(self, cmd: str) -> builtins.list[str]:  # `list` here is the method above
        """E2B's SDK always runs `/bin/bash -l -c`; a rootfs without bash gets the system image's."""
        if cmd != "/bin/bash" or os.path.exists(cmd) or not self.system_root:
            return [cmd]
        return system_bash_argv(self.system_root)


def _deadline(ctx: RequestContext) -> float | None:
    """The request's deadline on the event loop's clock, or None."""
    timeout = request_timeout(ctx)
    return None if timeout is None else asyncio.get_running_loop().time() + timeout


def _kill_unless_ended(proc: ManagedProcess) -> None:
    if not proc.exited:
        with contextlib.suppress(ProcessGone, OSError):
            proc.signal(signals.SIGKILL)


def _working_dir(requested: str | None, default_workdir: str | None, home: str) -> str:
    """Where a process starts: the requested cwd (relative to home, `~` expanded), else the default."""
    path = requested or default_workdir or home
    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    return os.path.normpath(os.path.join(home, path))


async def _events(proc: ManagedProcess, keepalive: float) -> AsyncIterator[pb.ProcessEvent]:
    """start, then data and keepalive events, then end — the order the SDK expects."""
    # Each oneof is typed where it is made: mypy cannot infer a field's literal name against the union.
    start: Oneof[Literal["start"], pb.ProcessEvent.StartEvent] = Oneof("start",
                                                                       pb.ProcessEvent.StartEvent(pid=proc.pid))
    yield pb.ProcessEvent(event=start)
    async for item in with_keepalive(proc.follow(), keepalive, _keepalive):
        if isinstance(item, pb.ProcessEvent):
            yield item
        elif isinstance(item, Ending):
            end: Oneof[Literal["end"], pb.ProcessEvent.EndEvent] = Oneof("end", pb.ProcessEvent.EndEvent(
                exit_code=item.exit_code, exited=item.exited, status=item.status, error=item.error))
            yield pb.ProcessEvent(event=end)
            return
        else:
            output = cast("_Output", Oneof(item.stream, item.data))  # `stream` is one of the oneof's field names
            data: Oneof[Literal["data"], pb.ProcessEvent.DataEvent] = Oneof("data", pb.ProcessEvent.DataEvent(
                output=output))
            yield pb.ProcessEvent(event=data)


def _keepalive() -> pb.ProcessEvent:
    keepalive: Oneof[Literal["keepalive"], pb.ProcessEvent.KeepAlive] = Oneof("keepalive", pb.ProcessEvent.KeepAlive())
    return pb.ProcessEvent(event=keepalive)
