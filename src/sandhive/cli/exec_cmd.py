"""`sandhive sandbox exec ID -- CMD...`: run a command in a sandbox, stream its output, exit with its code.

Scripts rely on the exit code, so it is the remote command's own (not 1 for "failed"); only failures to run
it at all use the CLI's codes. stdout and stderr go to the terminal's stdout and stderr as they arrive.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Callable
from typing import IO, Annotated, Any

import typer

from . import client
from .common import err, parse_pairs
from .config import ApiKey, ApiUrl, resolve
from .failures import reporting

EXIT_TIMEOUT = 124  # as timeout(1): the command ran past --timeout and was killed
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C here killed the remote command
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: our stdout was closed (`| head`), so the remote command was killed


def command_line(argv: list[str]) -> str:
    """What bash in the sandbox runs. One argument is a shell command line, as with ssh (`'echo $HOME; exit 7'`);
    several are an argv, quoted, so `exec ID -- ls -l 'my file'` means what it says."""
    return argv[0] if len(argv) == 1 else shlex.join(argv)


def exec_command(
    sandbox_id: Annotated[str, typer.Argument(metavar="ID", help="The sandbox to run the command in.")],
    command: Annotated[list[str], typer.Argument(metavar="CMD...", help="The command (put it after `--`).")],
    cwd: Annotated[str | None, typer.Option(help="Working directory (default: the template's).")] = None,
    user: Annotated[str | None, typer.Option(help="User to run as (default: the template's, `user`).")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", metavar="KEY=VALUE",
                                                  help="Environment variable (repeatable).")] = None,
    timeout: Annotated[float, typer.Option(min=0, help="Kill the command after this many seconds (0: never).")] = 0,
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Run a command in a sandbox; its output streams here and its exit code is this command's."""
    envs = parse_pairs(env, "--env")
    target = resolve(url, api_key)
    with reporting(target.url, f"cannot run the command in sandbox {sandbox_id}"):
        sandbox = client.connect(target, sandbox_id)
        code = run(sandbox, command_line(command), envs=envs, cwd=cwd, user=user, timeout=timeout)
    raise typer.Exit(code)


def run(sandbox: Any, cmd: str, *, envs: dict[str, str], cwd: str | None, user: str | None, timeout: float) -> int:
    """Run `cmd` to its end and answer its exit code (or 124, 130, 141 when it was cut short here)."""
    sdk = client.sdk()
    handle = None
    try:
        # The deadline covers the start as well: a busy sandbox can use up a short --timeout before the first event.
        handle = sandbox.commands.run(cmd, background=True, envs=envs or None, cwd=cwd, user=user, timeout=timeout)
        return int(handle.wait(on_stdout=_writer(sys.stdout), on_stderr=_writer(sys.stderr)).exit_code)
    except sdk.CommandExitException as exc:
        return int(exc.exit_code)
    except sdk.TimeoutException:
        _kill(handle)
        if not timeout:  # not ours: a request timed out (reported by the caller as a failure)
            raise
        err.print(f"[bold red]error:[/] the command ran longer than --timeout {timeout:g}s and was killed")
        return EXIT_TIMEOUT
    except KeyboardInterrupt:
        _kill(handle)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _kill(handle)
        # Python flushes stdout at exit and would complain about the closed pipe once more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _writer(stream: IO[str]) -> Callable[[str], None]:
    def write(chunk: str) -> None:
        stream.write(chunk)
        stream.flush()  # live: a progress line must show before the command's next one

    return write


def _kill(handle: Any) -> None:
    """Best effort: the command may have ended meanwhile, or the sandbox with it (or never started: None)."""
    if handle is not None:
        with contextlib.suppress(Exception):
            handle.kill()
