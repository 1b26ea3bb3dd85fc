"""`sandhive sandbox create|list|info|kill|pause|resume|metrics`; `exec`, `run-code`, `shell`, `logs`, `network`
have their own modules."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from . import client, exec_cmd, logs_cmd, network_cmd, run_code_cmd, shell_cmd, snapshot_cmd
from .common import EXIT_NOT_FOUND, err, out, parse_pairs
from .config import ApiKey, ApiUrl, resolve
from .failures import SEE_LIST, reporting
from .output import Json, metrics_table, print_json, sandbox_details, sandbox_table, show

app = typer.Typer(help="Create, inspect, enter and kill sandboxes.", no_args_is_help=True)

SandboxId = Annotated[str, typer.Argument(metavar="ID", help="The sandbox's id, as `sandhive sandbox list` shows it.")]
Pairs = list[str] | None  # KEY=VALUE options, parsed by `parse_pairs`


class State(StrEnum):
    running = "running"
    paused = "paused"


@app.command()
def create(
    template: Annotated[str, typer.Option("--template", "-t", help="Template id or alias.")] = "base",
    timeout: Annotated[int | None, typer.Option(
        min=1, help="Seconds until the sandbox is killed (default: the server's, 300).")] = None,
    metadata: Annotated[Pairs, typer.Option("--metadata", "-m", metavar="KEY=VALUE",
                                            help="Metadata to tag it with (repeatable).")] = None,
    env: Annotated[Pairs, typer.Option("--env", "-e", metavar="KEY=VALUE",
                                       help="Environment variable of its commands (repeatable).")] = None,
    allow_out: network_cmd.AllowOut = None,
    deny_out: network_cmd.DenyOut = None,
    no_internet: network_cmd.NoInternet = False,
    private_ports: Annotated[bool, typer.Option(
        "--private-ports", help="Its ports answer only requests with its traffic access token (printed).")] = False,
    mask_host: Annotated[str | None, typer.Option(
        "--mask-host", metavar="HOST", help="The Host header its ports see (${PORT} is the port).")] = None,
    as_json: Json = False,
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Create a sandbox and print its id (or, with --json, all of it). With --private-ports, the token its ports
    ask for is printed too (on stderr; in --json as traffic_access_token)."""
    meta, envs = parse_pairs(metadata, "--metadata"), parse_pairs(env, "--env")
    network = network_cmd.egress(allow_out, deny_out)
    if private_ports:
        network["allow_public_traffic"] = False
    if mask_host is not None:
        network["mask_request_host"] = mask_host
    target = resolve(url, api_key)
    with reporting(target.url, f"cannot create a sandbox from template {template!r}"):
        row = client.create(target, template, timeout, meta, envs, network=network,
                            internet=False if no_internet else None)
    if as_json:
        print_json(row.to_json())
        return
    print(row.sandbox_id)
    if row.traffic_access_token:
        network_cmd.show_token(row.sandbox_id, row.traffic_access_token)


@app.command("list")
def list_sandboxes(
    metadata: Annotated[Pairs, typer.Option("--metadata", "-m", metavar="KEY=VALUE",
                                            help="Only sandboxes tagged so (repeatable).")] = None,
    state: Annotated[list[State] | None, typer.Option(help="Only sandboxes in this state (repeatable).")] = None,
    as_json: Json = False,
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """List your team's sandboxes, newest first."""
    meta = parse_pairs(metadata, "--metadata")
    target = resolve(url, api_key)
    with reporting(target.url, "cannot list sandboxes"):
        rows = client.list_sandboxes(target, meta, [s.value for s in state or []])
    if as_json:
        print_json([r.to_json() for r in rows])
    elif rows:
        show(sandbox_table(rows))
    else:
        out.print("No sandboxes" + (" match" if meta or state else "") + ". Create one with: sandhive sandbox create")


@app.command()
def info(sandbox_id: SandboxId, as_json: Json = False, url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """Show one sandbox: template, state, times, size, metadata and network settings."""
    target = resolve(url, api_key)
    with reporting(target.url, f"cannot describe sandbox {sandbox_id}"):
        row = client.info(target, sandbox_id)
    if as_json:
        print_json(row.to_json())
    else:
        show(sandbox_details(row))


@app.command()
def kill(
    sandbox_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Sandboxes to kill.")],
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Kill sandboxes. Every id is tried; the exit code is 3 if any of them was not found."""
    target = resolve(url, api_key)
    missing = []
    for sandbox_id in sandbox_ids:
        with reporting(target.url, f"cannot kill sandbox {sandbox_id}"):
            killed = client.kill(target, sandbox_id)
        if killed:
            out.print(f"Killed {sandbox_id}")
        else:
            missing.append(sandbox_id)
            err.print(f"[bold red]error:[/] sandbox {sandbox_id} not found. {SEE_LIST}")
    if missing:
        raise typer.Exit(EXIT_NOT_FOUND)


@app.command()
def pause(
    sandbox_id: SandboxId,
    filesystem: Annotated[bool, typer.Option(
        "--filesystem", help="Keep only its files: the resume starts it afresh (default: its memory too).")] = False,
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Pause a sandbox: its processes stop where they are (or, with --filesystem, end) until it is resumed."""
    target = resolve(url, api_key)
    with reporting(target.url, f"cannot pause sandbox {sandbox_id}"):
        paused = client.pause(target, sandbox_id, filesystem)
    out.print(f"Paused {sandbox_id}" if paused else f"{sandbox_id} was paused already")


@app.command()
def resume(
    sandbox_id: SandboxId,
    timeout: Annotated[int | None, typer.Option(
        min=1, help="Seconds it then lives (default: the server's, 300).")] = None,
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Resume a paused sandbox (a running one just has its timeout extended)."""
    target = resolve(url, api_key)
    with reporting(target.url, f"cannot resume sandbox {sandbox_id}"):
        client.resume(target, sandbox_id, timeout)
    out.print(f"Resumed {sandbox_id}")


# In the order `--help` lists them: the lifecycle above, then into the sandbox and out of it.
app.command("exec")(exec_cmd.exec_command)
app.command("run-code")(run_code_cmd.run_code_command)
app.command("shell")(shell_cmd.shell_command)
app.command("logs")(logs_cmd.logs_command)
app.command("network")(network_cmd.network_command)
app.command("egress")(network_cmd.egress_command)
app.command("snapshot")(snapshot_cmd.snapshot_command)
app.command("fork")(snapshot_cmd.fork_command)


@app.command()
def metrics(sandbox_id: SandboxId, as_json: Json = False, url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """Show the sandbox's CPU, memory and disk use now."""
    target = resolve(url, api_key)
    with reporting(target.url, f"cannot read metrics of sandbox {sandbox_id}"):
        rows = client.metrics(target, sandbox_id)
    if as_json:
        print_json([m.to_json() for m in rows])
    elif rows:
        show(metrics_table(rows))
    else:
        out.print(f"No metrics for {sandbox_id} right now.")
