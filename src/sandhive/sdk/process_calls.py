"""envd's `process.Process` calls (docs/wire.md §3.3): what to send for each operation and how to read it."""

from __future__ import annotations

from typing import Literal

from connectrpc.code import Code
from protobuf import Oneof

from ..rpc.process import process_pb as pb
from .models import ProcessInfo, PtySize
from .ref import SandboxRef
from .wire import RpcCall

# `commands.run` runs through a login shell, exactly as E2B's SDK does, so profiles and PATH are the same.
SHELL = "/bin/bash"
PTY_ENVS = {"TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _selector(pid: int) -> pb.ProcessSelector:
    # A oneof is typed where it is made: mypy cannot infer the field's literal name against the union.
    selector: Oneof[Literal["pid"], int] = Oneof("pid", pid)
    return pb.ProcessSelector(selector=selector)


def _event(message: pb.StartResponse | pb.ConnectResponse) -> pb.ProcessEvent | None:
    """The event a stream message carries; keepalives (and empty messages) are skipped."""
    event = message.event
    if event is None or event.event is None or event.event.field == "keepalive":
        return None
    return event


def start(ref: SandboxRef, cmd: str, *, envs: dict[str, str] | None, cwd: str | None, user: str | None,
          stdin: bool, timeout: float | None, pty: PtySize | None = None) -> RpcCall[pb.ProcessEvent | None]:
    """`Start`: a command in `bash -l -c`, or (with `pty`) an interactive login shell on a terminal."""
    if pty is None:
        config = pb.ProcessConfig(cmd=SHELL, args=["-l", "-c", cmd], envs=dict(envs or {}), cwd=cwd)
        terminal, what = None, f"run {cmd!r}"
    else:
        config = pb.ProcessConfig(cmd=SHELL, args=["-i", "-l"], envs={**PTY_ENVS, **(envs or {})}, cwd=cwd)
        terminal, what = pb.PTY(size=pb.PTY.Size(cols=pty.cols, rows=pty.rows)), "start a terminal"
    return RpcCall("process", "start", pb.StartRequest(process=config, pty=terminal, stdin=stdin),
                   ref.envd_headers(user, stream=True), ref.context(what, timeout=timeout), _event, timeout)


def connect(ref: SandboxRef, pid: int, *, timeout: float | None) -> RpcCall[pb.ProcessEvent | None]:
    """`Connect`: follow a running process's output from where no stream has read it yet."""
    return RpcCall("process", "connect", pb.ConnectRequest(process=_selector(pid)),
                   ref.envd_headers(stream=True), ref.context(f"connect to process {pid}", timeout=timeout),
                   _event, timeout)


def list_processes(ref: SandboxRef, *, timeout: float | None) -> RpcCall[list[ProcessInfo]]:
    return RpcCall("process", "list", pb.ListRequest(), ref.envd_headers(),
                   ref.context("list processes", timeout=timeout), _processes, timeout)


def _processes(response: pb.ListResponse) -> list[ProcessInfo]:
    infos = []
    for p in response.processes:
        config = p.config or pb.ProcessConfig()
        infos.append(ProcessInfo(pid=p.pid, tag=p.tag if p.has_field("tag") else None, cmd=config.cmd,
                                 args=list(config.args), envs=dict(config.envs),
                                 cwd=config.cwd if config.has_field("cwd") else None))
    return infos


def send_input(ref: SandboxRef, pid: int, data: str | bytes, *, pty: bool = False,
               timeout: float | None) -> RpcCall[None]:
    """`SendInput`: bytes to the process's stdin (or its terminal)."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    stream = Oneof[Literal["pty"], bytes]("pty", raw) if pty else Oneof[Literal["stdin"], bytes]("stdin", raw)
    request = pb.SendInputRequest(process=_selector(pid), input=pb.ProcessInput(input=stream))
    return RpcCall("process", "send_input", request, ref.envd_headers(),
                   ref.context(f"send input to process {pid}", timeout=timeout), lambda r: None, timeout)


def close_stdin(ref: SandboxRef, pid: int, *, timeout: float | None) -> RpcCall[None]:
    return RpcCall("process", "close_stdin", pb.CloseStdinRequest(process=_selector(pid)), ref.envd_headers(),
                   ref.context(f"close the stdin of process {pid}", timeout=timeout), lambda r: None, timeout)


def kill(ref: SandboxRef, pid: int, *, timeout: float | None) -> RpcCall[bool]:
    """SIGKILL to the process group; False when no such process runs (E2B's meaning)."""
    request = pb.SendSignalRequest(process=_selector(pid), signal=pb.Signal.SIGKILL)
    return RpcCall("process", "send_signal", request, ref.envd_headers(),
                   ref.context(f"kill process {pid}", timeout=timeout), lambda r: True, timeout,
                   special={Code.NOT_FOUND: lambda e: False})


def resize(ref: SandboxRef, pid: int, size: PtySize, *, timeout: float | None) -> RpcCall[None]:
    request = pb.UpdateRequest(process=_selector(pid), pty=pb.PTY(size=pb.PTY.Size(cols=size.cols, rows=size.rows)))
    return RpcCall("process", "update", request, ref.envd_headers(),
                   ref.context(f"resize the terminal of process {pid}", timeout=timeout), lambda r: None, timeout)
