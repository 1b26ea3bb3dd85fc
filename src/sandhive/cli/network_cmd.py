"""`sandhive sandbox network ID`, and the egress options it shares with `sandbox create` (issue 16).

Rules are IP addresses and CIDR ranges (`--allow-out 10.0.0.0/8`), and for `--allow-out` also domain names
(`--allow-out pypi.org --allow-out '*.pythonhosted.org'`, judged on HTTP Host and TLS SNI); allow beats deny, as in
E2B. `network`
replaces every rule at once, as the API's `PUT /sandboxes/{id}/network` does: what is not given is cleared.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from . import client
from .common import err, out
from .config import ApiKey, ApiUrl, resolve
from .failures import reporting
from .output import Json, network_fields, print_json, show, table

SandboxId = Annotated[str, typer.Argument(metavar="ID", help="The sandbox's id, as `sandhive sandbox list` shows it.")]
AllowOut = Annotated[list[str] | None, typer.Option(
    "--allow-out", metavar="ADDR",
    help="An IP address, CIDR range or domain name (example.com, *.example.com: HTTP and HTTPS) it may reach even "
         "where denied (repeatable).")]
DenyOut = Annotated[list[str] | None, typer.Option(
    "--deny-out", metavar="ADDR", help="An IP address or CIDR range it may not reach, e.g. 0.0.0.0/0 (repeatable).")]
NoInternet = Annotated[bool, typer.Option(
    "--no-internet", help="Turn its internet off: only --allow-out addresses are reachable.")]


def egress(allow_out: list[str] | None, deny_out: list[str] | None) -> dict[str, Any]:
    """The SDK's `allow_out`/`deny_out` keys for the options given."""
    rules: dict[str, Any] = {}
    if allow_out:
        rules["allow_out"] = list(allow_out)
    if deny_out:
        rules["deny_out"] = list(deny_out)
    return rules


def network_command(
    sandbox_id: SandboxId,
    allow_out: AllowOut = None,
    deny_out: DenyOut = None,
    no_internet: NoInternet = False,
    clear: Annotated[bool, typer.Option("--clear", help="Remove every rule and turn the internet back on.")]
    = False,
    as_json: Json = False,
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Replace a running or paused sandbox's egress rules. Every rule not given here is cleared (and the internet
    is on unless --no-internet): repeat the ones to keep. New connections follow the rules at once; open ones
    they deny are cut. `sandbox info` shows the rules it has."""
    update: dict[str, Any] = egress(allow_out, deny_out)
    if no_internet:
        update["allow_internet_access"] = False
    if not update and not clear:
        raise typer.BadParameter("nothing to set: give --allow-out, --deny-out or --no-internet, or --clear to "
                                 "remove every rule (the rules not given are cleared)",
                                 param_hint="'--allow-out' / '--deny-out' / '--no-internet' / '--clear'")
    if update and clear:
        raise typer.BadParameter("--clear removes every rule: give it alone", param_hint="--clear")
    target = resolve(url, api_key)
    with reporting(target.url, f"cannot set the network of sandbox {sandbox_id}"):
        row = client.update_network(target, sandbox_id, update)
    if as_json:
        print_json({"sandbox_id": sandbox_id, "allow_internet_access": row.allow_internet_access,
                    "network": row.network})
        return
    out.print(f"Updated the network of {sandbox_id}")
    for name, value in network_fields(row):
        out.print(f"  {name}: {value}", markup=False)


def show_token(sandbox_id: str, token: str) -> None:
    """Tell a person creating a sandbox with private ports what its ports now need (stderr: stdout is the id)."""
    err.print(f"Ports of {sandbox_id} are private: requests to them need the header "
              f"`E2B-Traffic-Access-Token: {token}`", markup=False)


def egress_command(
    sandbox_id: SandboxId,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="How many of the newest entries to show.")] = 100,
    as_json: Json = False,
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Show what the sandbox reached or tried to reach: each egress connection (destination, verdict, bytes once
    it has ended) and each denied attempt, newest last (--json: the entries' fields)."""
    target = resolve(url, api_key)
    with reporting(target.url, f"cannot read the egress log of sandbox {sandbox_id}"):
        entries = client.egress(target, sandbox_id, limit)
    if as_json:
        print_json(entries)
        return
    if not entries:
        err.print(f"sandbox {sandbox_id} has made no egress connection yet")
        return
    rows = table("TIME", "VERDICT", "PROTO", "DESTINATION", "DOMAIN", "OUT", "IN")
    for entry in entries:
        where = f"{entry['destination']}:{entry['port']}" if entry.get("port") else entry.get("destination", "")
        rows.add_row(entry["timestamp"], entry.get("verdict", ""), entry.get("protocol", ""), where,
                     entry.get("domain", "-"), entry.get("bytes_out", "-"), entry.get("bytes_in", "-"))
    show(rows)
