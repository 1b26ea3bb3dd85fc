"""Building the server's built-in templates (`base`, `code-interpreter`) ahead of their first use: one entry.

Each built-in module describes itself with a `Builtin` (`base.BUILTIN`, `code_interpreter.BUILTIN`), and every way
of asking goes through `build` here: `sandhive template build-builtin NAME` (with progress), `make base-template` /
`make code-interpreter-template` (which run that command), and `python -m sandhive.templates.base build` /
`python -m sandhive.templates.code_interpreter build` (kept for scripts; `main` below). A build is a no-op when
the template is built and current, a copy when the tree cache has it, else a real one. The server builds the same
templates on first use (`registry.TemplateRegistry`); this is for hosts that would rather not make a user wait.

This module imports neither built-in (they import it), so arrows point one way.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import layout
from .info import TemplateInfo

Log = layout.Log


def default_data_dir() -> Path:
    """`$SANDHIVE_DATA_DIR`, else /var/lib/sandhive (where `sandhive serve` keeps its state)."""
    return Path(os.environ.get("SANDHIVE_DATA_DIR") or "/var/lib/sandhive")


@dataclass(frozen=True)
class Builtin:
    name: str  # what `build-builtin` takes
    template_id: str
    module: str  # for `python -m sandhive.templates.<module> build`
    about: str
    # (data_dir, cache_dir, force, log) → the built template; builds what it starts FROM first
    build: Callable[[Path, Path | None, bool, Log], TemplateInfo]


class BuiltinError(Exception):
    """A build that cannot start (not root) or that failed; the message says which and why."""


def build(builtin: Builtin, data_dir: Path | None = None, cache_dir: Path | None = None, *, force: bool = False,
          log: Log = print) -> tuple[TemplateInfo, Path]:
    """Build `builtin` into `data_dir` (default `default_data_dir()`) unless it is built and current; answer its
    info and directory. Blocking; needs root (chroot, mounts, ownership of the tree)."""
    if os.geteuid() != 0:
        raise BuiltinError(f"{builtin.name}: building a template needs root (chroot, mounts and ownership of its "
                           "files)")
    data_dir = data_dir or default_data_dir()
    try:
        info = builtin.build(data_dir, cache_dir, force, log)
    except Exception as exc:  # noqa: BLE001 — BuildError, builder.TemplateBuildError: the message says why
        raise BuiltinError(f"{builtin.name}: build failed: {exc}") from exc
    return info, layout.template_dir(data_dir, builtin.template_id)


def main(builtin: Builtin, argv: list[str] | None = None) -> int:
    """`python -m sandhive.templates.<module> build [--data-dir DIR] [--cache-dir DIR] [--force]`: progress on
    stderr, the template's directory on stdout."""
    parser = argparse.ArgumentParser(prog=f"python -m sandhive.templates.{builtin.module}",
                                     description=f"Build the {builtin.template_id} template ahead of its first use "
                                     f"(as `sandhive template build-builtin {builtin.name}` does).")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("build", help="build the template unless it is built and current; print its directory")
    cmd.add_argument("--data-dir", type=Path, default=None,
                     help="Sandhive's data directory (default: $SANDHIVE_DATA_DIR or /var/lib/sandhive)")
    cmd.add_argument("--cache-dir", type=Path, default=None,
                     help="download and tree cache (default: $SANDHIVE_CACHE_DIR or /var/cache/sandhive)")
    cmd.add_argument("--force", action="store_true",
                     help="rebuild even if built or cached (stop its sandboxes first)")
    args = parser.parse_args(argv)
    try:
        _, directory = build(builtin, args.data_dir, args.cache_dir, force=args.force,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
    except BuiltinError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(directory)
    return 0
