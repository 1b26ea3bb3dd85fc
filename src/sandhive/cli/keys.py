"""`sandhive keys create|list|revoke`: API keys, shown once, stored as sha256 hashes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from .common import DEFAULT_DATA_DIR, DatabaseUrl, DataDir, fail, out
from .stores import open_store

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


@app.command()
def create(
    team: Annotated[str, typer.Option(help="Team the key belongs to (created if new).")] = "default",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the key.")] = False,
    admin: Annotated[bool, typer.Option(
        "--admin", help="An operator's key: also sees the whole node (every team's warm pools).")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key; it is shown once and cannot be recovered."""
    if not team.strip():
        fail("--team must not be empty", 2)
    store = open_store(data_dir, database_url)
    try:
        key, info = store.create_api_key(team.strip(), admin=admin)
    finally:
        store.close()
    if quiet:
        print(key)
        return
    kind = "an admin API key" if admin else "an API key"
    out.print(f"Created {kind} for team [bold]{info.team}[/]:\n\n  {key}\n")
    out.print("It is not shown again. Use it as E2B_API_KEY (the X-API-Key header).")


@app.command("list")
def list_keys(data_dir: DataDir = DEFAULT_DATA_DIR, database_url: DatabaseUrl = None) -> None:
    """List API keys by prefix (never the keys themselves)."""
    store = open_store(data_dir, database_url)
    try:
        keys = store.list_api_keys()
    finally:
        store.close()
    if not keys:
        out.print("No API keys yet. Create one with: sandhive keys create")
        return
    table = Table("prefix", "team", "admin", "created", "last used", "status")
    for k in keys:
        table.add_row(k.prefix, k.team, "yes" if k.admin else "-", _when(k.created_at), _when(k.last_used_at),
                      f"revoked {_when(k.revoked_at)}" if k.revoked_at else "active")
    out.print(table)


@app.command()
def revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix as `keys list` shows it, or the whole key.")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke an API key: requests with it get 401 from now on."""
    if len(prefix) < 5:
        fail(f"prefix {prefix!r} is too short; give at least 5 characters (as `sandhive keys list` shows them)", 2)
    store = open_store(data_dir, database_url)
    try:
        info = store.revoke_api_key(prefix)
    except (LookupError, ValueError) as exc:
        fail(str(exc.args[0]))
    finally:
        store.close()
    out.print(f"Revoked {info.prefix} (team {info.team}).")


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else "-"
