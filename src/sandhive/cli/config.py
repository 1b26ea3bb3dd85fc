"""Which server and which API key a command talks to, and the config file `sandhive auth login` writes.

Precedence, per value: the command's flag, then SANDHIVE_API_URL / SANDHIVE_API_KEY, then E2B's variables (so an
environment exported for the `e2b` SDK, as `make up` prints one, works unchanged), then
`$XDG_CONFIG_HOME/sandhive/config.toml` (default `~/.config/...`), then http://127.0.0.1:3000 for the URL.
Flags and variables are resolved by Typer (`envvar=`); this module adds the file and the default.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from .common import EXIT_AUTH, EXIT_USAGE, fail

DEFAULT_URL = "http://127.0.0.1:3000"  # where `make up` serves
URL_VARS = ["SANDHIVE_API_URL", "E2B_API_URL", "E2B_SANDBOX_URL"]
KEY_VARS = ["SANDHIVE_API_KEY", "E2B_API_KEY"]

ApiUrl = Annotated[str | None, typer.Option(
    "--url", envvar=URL_VARS, show_envvar=True,
    help=f"Sandhive server (default: the config file from `sandhive auth login`, else {DEFAULT_URL}).")]
ApiKey = Annotated[str | None, typer.Option(
    "--api-key", envvar=KEY_VARS, show_envvar=True,
    help="API key from `sandhive keys create` (default: the config file from `sandhive auth login`).")]


@dataclass(frozen=True)
class Target:
    """A server and the key to use on it: what every remote command needs, resolved once."""

    url: str
    api_key: str


def config_path() -> Path:
    """`$XDG_CONFIG_HOME/sandhive/config.toml`, or `~/.config/sandhive/config.toml` (the XDG default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sandhive" / "config.toml"


def load_config(path: Path | None = None) -> dict[str, str]:
    """The stored settings (`url`, `api_key`), or none; a broken file is an error that says how to repair it."""
    path = path or config_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        fail(f"cannot read {path}: {exc}. Fix it, or delete it and run `sandhive auth login` again.")
    return {k: v for k, v in data.items() if k in ("url", "api_key") and isinstance(v, str)}


def save_config(url: str, api_key: str, path: Path | None = None) -> Path:
    """Write the file readable by its owner only (0600, in a 0700 directory), replacing it in one rename.

    The file is created with mode 0600 rather than chmod-ed afterwards, so the key is never readable by others,
    not even for a moment.
    """
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    text = ("# Written by `sandhive auth login`. Flags and SANDHIVE_*/E2B_* variables override these.\n"
            f"url = {json.dumps(url)}\napi_key = {json.dumps(api_key)}\n")  # JSON strings are TOML basic strings
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is masked by the umask; an old tmp file kept its mode
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def check_url(url: str) -> str:
    """`url` without a trailing slash, or a usage error: a typo here would otherwise read as "unreachable"."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        fail(f"--url {url!r} is not an http(s) URL such as {DEFAULT_URL}", EXIT_USAGE)
    return url.rstrip("/")


def resolve_url(url: str | None) -> str:
    """The server URL: flag or variable (already in `url`), else the config file, else the default."""
    return check_url(url or load_config().get("url") or DEFAULT_URL)


def resolve(url: str | None, api_key: str | None) -> Target:
    """The target of a remote command; no key anywhere is an auth error that says where keys come from."""
    stored = load_config()
    key = api_key or stored.get("api_key")
    if not key:
        fail("no API key. Create one with `sandhive keys create`, then save it with "
             "`sandhive auth login --api-key KEY` (or set SANDHIVE_API_KEY).", EXIT_AUTH)
    return Target(check_url(url or stored.get("url") or DEFAULT_URL), key)
