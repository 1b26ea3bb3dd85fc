"""`sandhive sandbox snapshot|fork` and `sandhive snapshot list|delete` (issue 14), through Sandhive's SDK.

A snapshot id is what `sandhive sandbox create --template` takes to start a sandbox from it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import client
from .common import EXIT_NOT_FOUND, err, out
from .config import ApiKey, ApiUrl, resolve
from .failures import reporting
from .output import Json, print_json

app = typer.Typer(help="List and delete sandbox snapshots (start sandboxes from them with "
                       "`sandhive sandbox create --template SNAPSHOT_ID`).", no_args_is_help=True)

SandboxId = Annotated[str, typer.Argument(metavar="ID", help="The sandbox's id, as `sandhive sandbox list` shows it.")]


def snapshot_command(
    sandbox_id: SandboxId,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Name it (its id is then TEAM/NAME:default).")]
    = None,
    as_json: Json = False,
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Snapshot a running sandbox's memory and files (it keeps running) and print the snapshot's id."""
    target = resolve(url, api_key)
    with reporting(target.url, f"cannot snapshot sandbox {sandbox_id}"):
        info = client.sdk().Sandbox.create_snapshot(sandbox_id, name, **client._opts(target))
    if as_json:
        print_json({"snapshot_id": info.snapshot_id, "names": info.names})
    else:
        print(info.snapshot_id)


def fork_command(
    sandbox_id: SandboxId,
    count: Annotated[int, typer.Option("--count", "-c", min=1, max=100, help="How many copies (1–100).")] = 1,
    timeout: Annotated[int | None, typer.Option(min=1, help="Seconds each copy lives (default: the server's).")]
    = None,
    as_json: Json = False,
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Copy a running sandbox COUNT times, memory and files (it keeps running); print each copy's id, or why it
    did not start (exit code 1 if any did not)."""
    target = resolve(url, api_key)
    with reporting(target.url, f"cannot fork sandbox {sandbox_id}"):
        results = client.sdk().Sandbox.fork(sandbox_id, count=count, timeout=timeout, **client._opts(target))
    failed = [r for r in results if isinstance(r, Exception)]
    if as_json:
        print_json([{"sandbox_id": r.sandbox_id} if not isinstance(r, Exception) else {"error": str(r)}
                    for r in results])
    else:
        for result in results:
            if isinstance(result, Exception):
                err.print(f"[bold red]error:[/] a copy did not start: {result}")
            else:
                print(result.sandbox_id)
    if failed:
        raise typer.Exit(1)


@app.command("list")
def list_snapshots(
    sandbox_id: Annotated[str | None, typer.Option("--sandbox", help="Only snapshots of this sandbox.")] = None,
    as_json: Json = False,
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """List your team's snapshots, newest first."""
    target = resolve(url, api_key)
    with reporting(target.url, "cannot list snapshots"):
        items = client.sdk().Sandbox.list_snapshots(sandbox_id, **client._opts(target))
    if as_json:
        print_json([{"snapshot_id": s.snapshot_id, "names": s.names} for s in items])
    elif items:
        for item in items:
            print(item.snapshot_id)
    else:
        out.print("No snapshots. Take one with: sandhive sandbox snapshot ID")


@app.command()
def delete(
    snapshot_ids: Annotated[list[str], typer.Argument(metavar="SNAPSHOT_ID...", help="Snapshots to delete.")],
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Delete snapshots. Every id is tried; the exit code is 3 if any of them was not found."""
    target = resolve(url, api_key)
    missing = False
    for snapshot_id in snapshot_ids:
        with reporting(target.url, f"cannot delete snapshot {snapshot_id}"):
            deleted = client.sdk().Sandbox.delete_snapshot(snapshot_id, **client._opts(target))
        if deleted:
            out.print(f"Deleted {snapshot_id}")
        else:
            missing = True
            err.print(f"[bold red]error:[/] snapshot {snapshot_id} not found: see `sandhive snapshot list`.")
    if missing:
        raise typer.Exit(EXIT_NOT_FOUND)
