"""`sandhive sandbox logs ID [--follow]`: the sandbox's own log lines (its envd's output).

The API answers the newest lines, each stamped with the time it was read rather than written, so following is
polling, and a poll's new lines are found by content: what follows the lines already printed.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from . import client
from .common import EXIT_NOT_FOUND, err
from .config import ApiKey, ApiUrl, Target, resolve
from .failures import classify, reporting
from .output import Json

POLL_SECONDS = 1.0
WINDOW = 10000  # lines per poll while following: the API's largest answer
EXIT_INTERRUPTED = 130


def new_lines(seen: list[str], now: list[str]) -> list[str]:
    """The lines of `now` after the end of `seen` (both oldest first, `now` read later than `seen`).

    While the log is shorter than a poll's window, `now` starts with `seen`. Once it is longer the window slides,
    and the new lines follow the longest suffix of `seen` that `now` starts with.
    """
    if now[:len(seen)] == seen:
        return now[len(seen):]
    if seen:
        for i in range(min(len(now), len(seen)) - 1, -1, -1):  # the longest overlap first: never print twice
            if now[i] == seen[-1] and now[:i + 1] == seen[len(seen) - i - 1:]:
                return now[i + 1:]
    return now


def logs_command(
    sandbox_id: Annotated[str, typer.Argument(metavar="ID", help="The sandbox whose logs to show.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=WINDOW, help="How many of the newest lines to show first.")] = 1000,
    as_json: Json = False,
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Show a sandbox's log lines (--json: one {"timestamp", "line"} object per line)."""
    target = resolve(url, api_key)
    with reporting(target.url, f"cannot read the logs of sandbox {sandbox_id}"):
        entries = client.logs(target, sandbox_id, WINDOW if follow else limit)
    _emit(entries[-limit:], as_json)
    if not follow:
        return
    seen = [e["line"] for e in entries]
    try:
        with reporting(target.url, f"cannot read the logs of sandbox {sandbox_id}"):
            while entries or not _gone(target, sandbox_id):
                time.sleep(POLL_SECONDS)
                entries = client.logs(target, sandbox_id, WINDOW)
                lines = [e["line"] for e in entries]
                fresh = new_lines(seen, lines)
                _emit(entries[len(entries) - len(fresh):], as_json)
                seen = lines or seen
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _gone(target: Target, sandbox_id: str) -> bool:
    """Whether the sandbox has ended: asked only after an empty read, which is how a killed sandbox's logs read."""
    try:
        client.info(target, sandbox_id)
    except Exception as exc:
        if (classify(exc, target.url) or (None,))[0] != EXIT_NOT_FOUND:
            raise
        err.print(f"sandbox {sandbox_id} has ended")
        return True
    return False


def _emit(entries: list[dict[str, str]], as_json: bool) -> None:
    for entry in entries:
        if as_json:
            line = json.dumps({"timestamp": entry["timestamp"], "line": entry["line"]}, ensure_ascii=False)
        else:
            line = entry["line"]
        print(line, flush=True)
