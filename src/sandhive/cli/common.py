"""What every command shares: the data dir and database options, exit codes, and user errors without tracebacks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

DEFAULT_DATA_DIR = Path("/var/lib/sandhive")

# Exit codes scripts can rely on (docs/cli.md); `sandbox exec` and `sandbox shell` exit with the remote command's.
EXIT_FAILED = 1  # the command failed, or the API answered an error
EXIT_USAGE = 2  # bad arguments (Click's own usage errors exit 2 as well)
EXIT_NOT_FOUND = 3  # no such sandbox (or template)
EXIT_AUTH = 4  # no API key, or the server refused it
EXIT_UNREACHABLE = 5  # no server answered at the URL

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

DataDir = Annotated[Path, typer.Option("--data-dir", envvar="SANDHIVE_DATA_DIR",
                                       help="Where the database, secret, templates and sandboxes live.")]
DatabaseUrl = Annotated[str | None, typer.Option("--database-url", envvar="SANDHIVE_DATABASE_URL",
                                                 help="PostgreSQL URL (default: SQLite in the data dir).")]


def fail(message: str, code: int = 1) -> NoReturn:
    """Stop with a message a user can act on, and no traceback."""
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def prepare_data_dir(path: Path) -> Path:
    """Create the data dir (0700) if needed and prove it is writable, or fail saying why."""
    path = path.expanduser().absolute()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
        fail(f"data dir {path} is not usable by {who}: {exc.strerror or exc}. "
             "Pick another with --data-dir (or SANDHIVE_DATA_DIR).")
    return path


def parse_pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """`KEY=VALUE` options → a dict; a value may itself contain `=`. A malformed one is a usage error (exit 2)."""
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=flag)
        pairs[key] = value
    return pairs
