"""`sandhive auth login`: remember a server and an API key, so that later commands need neither flag."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from . import client
from .common import EXIT_USAGE, fail, out
from .config import ApiKey, ApiUrl, Target, resolve_url, save_config
from .failures import reporting

app = typer.Typer(help="Save the server URL and API key the other commands use.", no_args_is_help=True)


@app.command()
def login(
    url: ApiUrl = None,
    api_key: ApiKey = None,
    verify: Annotated[bool, typer.Option(help="Check that the server accepts the key before saving it.")] = True,
) -> None:
    """Save URL and key in $XDG_CONFIG_HOME/sandhive/config.toml (default ~/.config/...), readable by you only."""
    server = resolve_url(url)
    if not api_key:
        if not sys.stdin.isatty():
            fail("no API key: pass --api-key KEY (or set SANDHIVE_API_KEY); create one with `sandhive keys create`",
                 EXIT_USAGE)
        api_key = typer.prompt("API key (from `sandhive keys create`)", hide_input=True).strip()
    target = Target(server, api_key)
    if verify:
        with reporting(server, f"cannot log in to {server}"):
            client.check_key(target)
    path = save_config(target.url, target.api_key)
    out.print(f"Logged in to {server}" + ("" if verify else " (not verified)") + f". Saved to {path}.")
