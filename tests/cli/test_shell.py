"""`sandhive sandbox shell` in a real terminal: tmux, on a private server socket, fixed size.

Type `echo hi` and see it; resize the window and `stty size` follows; Ctrl-D ends the shell, the pane's command
exits, and the PTY's bash is gone from the sandbox. A hung-up terminal (the tmux session killed) also ends it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandhive.cli import client
from sandhive.cli.config import Target
from tests.api.rig import SANDHIVE
from tests.cli.conftest import Cli
from tests.helpers import wait_until

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(300)]
PTY_ARGS = ["-i", "-l"]  # how envd starts the PTY's bash (both SDKs)


class Tmux:
    """One tmux server on a socket file of our own (`-S`, in the test's temp dir), so nothing touches the
    developer's sessions and no socket is left behind."""

    def __init__(self, socket: Path, session: str) -> None:
        self.socket = str(socket)
        self.session = session

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.socket, *args], check=True, capture_output=True, text=True,
                              timeout=30).stdout

    def start(self, command: str, cols: int, rows: int) -> None:
        """A session of `cols`x`rows` whose pane stays (dead) after `command` exits, so its status can be read."""
        self("-f", "/dev/null", "new-session", "-d", "-s", self.session, "-x", str(cols), "-y", str(rows))
        self("set-option", "-t", self.session, "remain-on-exit", "on")
        self("respawn-pane", "-k", "-t", self.session, command)

    def screen(self) -> list[str]:
        return [line.rstrip() for line in self("capture-pane", "-p", "-t", self.session).splitlines()]

    def pane(self, fmt: str) -> str:
        return self("display-message", "-p", "-t", self.session, fmt).strip()

    def kill(self) -> None:
        for args in (("kill-session", "-t", self.session), ("kill-server",)):
            subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, timeout=30)
        Path(self.socket).unlink(missing_ok=True)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30, show: Callable[[], object] = str) -> None:
    wait_until(check, timeout, what, interval=0.2, show=lambda: f"screen:\n{show()}")


@pytest.fixture()
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (Debian: apt-get install tmux)")
    t = Tmux(tmp_path / "tmux.sock", f"sandhive-cli-test-{os.getpid()}")
    try:
        yield t
    finally:
        t.kill()


def pty_pids(cli: Cli, sandbox_id: str) -> set[int]:
    """Pids of the sandbox's PTY shells, from envd's own process list."""
    target = Target(cli.server.url, cli.key)
    sandbox = client.connect(target, sandbox_id)
    return {p.pid for p in sandbox.commands.list() if p.cmd == "/bin/bash" and list(p.args) == PTY_ARGS}


def pty_size(cli: Cli, sandbox_id: str) -> str:
    """`ROWS COLS` of the sandbox's one PTY as its kernel has them, read beside the shell: its terminal's path
    as the shell's own user (who may look at its fds), the size as root (the device is envd's, who opened it)."""
    (pid,) = pty_pids(cli, sandbox_id)
    sandbox = client.connect(Target(cli.server.url, cli.key), sandbox_id)
    device = sandbox.commands.run(f"readlink /proc/{pid}/fd/0").stdout.strip()
    return sandbox.commands.run(f"stty -F {shlex.quote(device)} size", user="root").stdout.strip()


def prompt_after(screen: list[str], line: str) -> bool:
    """The shell printed its prompt again after `line` (it waits for the next line of input)."""
    return line in screen and any(later.endswith(("$", "#")) for later in screen[screen.index(line) + 1:])


def shell_command(cli: Cli, sandbox_id: str, status: Path) -> str:
    """The pane's command: the shell, then its exit status into `status` (tmux 3.3's own #{pane_dead_status} is
    lost when it sees the terminal close before it reaps the process)."""
    env = {k: cli.env[k] for k in ("SANDHIVE_API_URL", "SANDHIVE_API_KEY", "HOME", "XDG_CONFIG_HOME")}
    shell = shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), str(SANDHIVE), "sandbox", "shell", sandbox_id])
    return f"{shell}; echo $? > {shlex.quote(str(status))}"


def exit_status(status: Path) -> int:
    wait_for("the shell to exit", lambda: status.exists() and status.read_text().strip() != "")
    return int(status.read_text())


def test_shell_types_resizes_and_exits(cli: Cli, sandbox_id: str, tmux: Tmux, tmp_path: Path) -> None:
    tmux.start(shell_command(cli, sandbox_id, tmp_path / "status"), cols=100, rows=30)
    wait_for("the prompt", lambda: any("$" in line for line in tmux.screen()), show=tmux.screen)

    tmux("send-keys", "-t", tmux.session, "echo hi", "Enter")
    wait_for("hi", lambda: "hi" in tmux.screen(), show=tmux.screen)
    assert len(pty_pids(cli, sandbox_id)) == 1

    tmux("send-keys", "-t", tmux.session, "stty size", "Enter")
    # Resize only once the prompt is back: while readline prepares the terminal for a line it reads the window
    # size and writes it straight back (rltty.c's `set_winsize`), undoing a resize that lands in between.
    wait_for("the prompt after 30 100", lambda: prompt_after(tmux.screen(), "30 100"), show=tmux.screen)
    tmux("resize-window", "-t", tmux.session, "-x", "132", "-y", "43")
    # The new size travels on its own path (tmux resizes the pane, the CLI gets SIGWINCH and sends a resize),
    # not with the keys: type `stty size` only once the sandbox's PTY has it.
    wait_for("the sandbox's PTY to be resized", lambda: pty_size(cli, sandbox_id) == "43 132", show=tmux.screen)
    tmux("send-keys", "-t", tmux.session, "clear; stty size", "Enter")
    wait_for("43 132", lambda: "43 132" in tmux.screen(), show=tmux.screen)

    tmux("send-keys", "-t", tmux.session, "C-d")
    assert exit_status(tmp_path / "status") == 0
    wait_for("the pane's command to exit", lambda: tmux.pane("#{pane_dead}") == "1", show=tmux.screen)
    wait_for("the PTY to be gone", lambda: not pty_pids(cli, sandbox_id))


def test_shell_exit_status_is_the_shells(cli: Cli, sandbox_id: str, tmux: Tmux, tmp_path: Path) -> None:
    tmux.start(shell_command(cli, sandbox_id, tmp_path / "status"), cols=80, rows=24)
    wait_for("the prompt", lambda: any("$" in line for line in tmux.screen()), show=tmux.screen)
    tmux("send-keys", "-t", tmux.session, "exit 3", "Enter")
    assert exit_status(tmp_path / "status") == 3


def test_a_closed_terminal_kills_the_pty(cli: Cli, sandbox_id: str, tmux: Tmux, tmp_path: Path) -> None:
    tmux.start(shell_command(cli, sandbox_id, tmp_path / "status"), cols=80, rows=24)
    wait_for("the prompt", lambda: any("$" in line for line in tmux.screen()), show=tmux.screen)
    tmux("send-keys", "-t", tmux.session, "sleep 1000", "Enter")
    wait_for("the PTY", lambda: len(pty_pids(cli, sandbox_id)) == 1)
    tmux("kill-session", "-t", tmux.session)  # SIGHUP to the pane's process
    wait_for("the PTY to be gone", lambda: not pty_pids(cli, sandbox_id))
