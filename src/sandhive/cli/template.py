"""`sandhive template list`: the templates your team can create sandboxes from."""

from __future__ import annotations

import typer
from rich.table import Column

from . import client
from .common import out
from .config import ApiKey, ApiUrl, resolve
from .failures import reporting
from .output import Json, print_json, show, size, table, when

app = typer.Typer(help="List the templates sandboxes start from.", no_args_is_help=True)


@app.command("list")
def list_templates(as_json: Json = False, url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """List the built templates: id, aliases, default size."""
    target = resolve(url, api_key)
    with reporting(target.url, "cannot list templates"):
        rows = client.templates(target)
    if as_json:
        print_json([t.to_json() for t in rows])
        return
    if not rows:
        out.print("No templates built yet. `base` is built on first use (`sandhive sandbox create`), or ahead "
                  "of time by `sudo make up`.")
        return
    listing = table(Column("TEMPLATE ID", no_wrap=True), "ALIASES", "CPU", "MEMORY", "DISK", "CREATED")
    for t in rows:
        listing.add_row(t.template_id, ", ".join(t.aliases) or "-", str(t.cpu_count), size(t.memory_mb * 2**20),
                        size(t.disk_size_mb * 2**20), when(t.created_at))
    show(listing)
