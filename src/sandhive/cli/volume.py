"""`sandhive volume create|list|delete`: a team's volumes (E2B's beta API), through the SDK's `Volume`."""

from __future__ import annotations

from typing import Annotated

import typer

from .client import _opts, sdk
from .common import EXIT_NOT_FOUND, err, out
from .config import ApiKey, ApiUrl, resolve
from .failures import reporting
from .output import Json, print_json

app = typer.Typer(help="Create, list and delete volumes: storage that outlives sandboxes.", no_args_is_help=True)


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Unique in your team: letters, digits, '-' and '_'.")],
    as_json: Json = False,
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Create a volume and print its id. Mount it with `Sandbox.create(volume_mounts={"/mnt/data": "NAME"})`."""
    target = resolve(url, api_key)
    with reporting(target.url, f"cannot create volume {name!r}"):
        volume = sdk().Volume.create(name, **_opts(target))
    if as_json:
        print_json({"volumeID": volume.volume_id, "name": volume.name})
    else:
        print(volume.volume_id)


@app.command("list")
def list_volumes(as_json: Json = False, url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """List your team's volumes, oldest first."""
    target = resolve(url, api_key)
    with reporting(target.url, "cannot list volumes"):
        volumes = sdk().Volume.list(**_opts(target))
    if as_json:
        print_json([{"volumeID": v.volume_id, "name": v.name} for v in volumes])
    elif volumes:
        for v in volumes:
            out.print(f"{v.volume_id}  {v.name}")
    else:
        out.print("No volumes. Create one with: sandhive volume create NAME")


@app.command()
def delete(
    volume_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Volumes to delete, with their files.")],
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Delete volumes (refused while a sandbox mounts one). The exit code is 3 if any was not found."""
    target = resolve(url, api_key)
    missing = []
    for volume_id in volume_ids:
        with reporting(target.url, f"cannot delete volume {volume_id}"):
            deleted = sdk().Volume.destroy(volume_id, **_opts(target))
        if deleted:
            out.print(f"Deleted {volume_id}")
        else:
            err.print(f"[bold red]error:[/] volume {volume_id} not found. See: sandhive volume list")
            missing.append(volume_id)
    if missing:
        raise typer.Exit(EXIT_NOT_FOUND)
