"""`sandhive template build-builtin NAME`: build one of the server's built-in templates ahead of its first use.

Runs on the server's host, as root, into its data dir (like `serve` and `keys`), not through the API: the server
builds the same templates itself on first use, and this is for a host that would rather not make a user's first
create wait. Progress goes to stderr (under a spinner on a terminal), the template's directory to stdout.
"""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import DEFAULT_DATA_DIR, EXIT_FAILED, DataDir, err
from .output import StepSpinner

if TYPE_CHECKING:
    from ..templates.builtin import Builtin


class BuiltinName(StrEnum):
    base = "base"
    code_interpreter = "code-interpreter"


def builtins() -> dict[str, Builtin]:
    """Name → the built-in's build entry (imported on use: the template modules are not needed for `--help`)."""
    from ..templates import base, code_interpreter

    return {b.name: b for b in (base.BUILTIN, code_interpreter.BUILTIN)}


def build_builtin(
    name: Annotated[BuiltinName, typer.Argument(metavar="NAME", help="base or code-interpreter.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", envvar="SANDHIVE_CACHE_DIR", help="Download "
                                                   "and tree cache (default: /var/cache/sandhive).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if built or cached (stop its sandboxes "
                                        "first).")] = False,
) -> None:
    """Build a built-in template (on the server's host, as root) so its first sandbox need not wait.

    Nothing to do if it is built and current; seconds if the tree cache has it (another data dir built it);
    else a real build: base about a minute from the Debian mirror, code-interpreter a few minutes from PyPI
    (after base). Prints the template's directory."""
    from ..templates import builtin

    started = time.monotonic()
    try:
        with StepSpinner(name.value) as spinner:
            info, directory = builtin.build(builtins()[name.value], data_dir.expanduser(), cache_dir, force=force,
                                            log=lambda message: spinner.line(message, step=True))
    except builtin.BuiltinError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    err.print(f"[green]Template {info.id} is ready[/] ({time.monotonic() - started:.1f}s)")
    print(directory)
