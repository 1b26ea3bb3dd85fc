"""The `sandhive` command line (Typer): `serve`, `keys`, `openapi` on the host; `auth`, `sandbox`, `template`, `mcp`
as a client of a server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import auth, keys, sandbox, snapshot_cmd, template, volume
from .audit_cmd import audit_command
from .mcp_cmd import mcp
from .node_cmd import node
from .serve import serve

app = typer.Typer(help="Sandhive: self-hosted, E2B-compatible sandboxes.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
app.command()(serve)
app.add_typer(keys.app, name="keys")
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(template.app, name="template")
app.add_typer(snapshot_cmd.app, name="snapshot")
app.add_typer(auth.app, name="auth")
app.add_typer(volume.app, name="volume")
app.command()(mcp)
app.command("audit")(audit_command)
app.command()(node)


@app.command()
def openapi(path: Annotated[Path | None, typer.Argument(help="File to write (default: stdout).")] = None) -> None:
    """Print or write the API's OpenAPI document (docs/openapi.json is this output)."""
    from ..api.app import render_openapi

    text = render_openapi()
    if path is None:
        print(text, end="")
    else:
        path.write_text(text)


def main() -> None:
    app()
