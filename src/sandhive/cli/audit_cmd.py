"""`sandhive audit`: the team's action audit log (issue 18) — API actions, and commands, PTY sessions and file
changes in its sandboxes. `--follow` polls for events after the last one printed (the API's page cursor is the
last event's id, so nothing is printed twice or skipped)."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.markup import escape

from . import client
from .common import out
from .config import ApiKey, ApiUrl, resolve
from .failures import reporting
from .output import Json, table, when

POLL_SECONDS = 1.0
PAGE = 1000  # the API's largest page
EXIT_INTERRUPTED = 130
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str | None, now: datetime | None = None) -> str | None:
    """`--since`: a span back from now (`30s`, `10m`, `2h`, `7d`) or an RFC 3339 time, as the API takes it."""
    if text is None:
        return None
    match = _RELATIVE.match(text.strip())
    if match:
        start = (now or datetime.now(UTC)) - timedelta(**{_UNITS[match[2]]: int(match[1])})
        return start.isoformat()
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is neither a span (10m, 2h, 7d) nor an RFC 3339 time") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).isoformat()


def summary(event: dict[str, Any]) -> str:
    """What a person wants to see of an event's detail, on one line."""
    detail = event.get("detail") or {}
    action = event.get("action", "")
    if action.endswith(".start") and "cmd" in detail:
        text = " ".join([detail.get("cmd") or "", *detail.get("args", [])])
        extra = f" (pid {detail.get('pid')}, user {detail.get('user') or 'default'})"
        return text + extra + (f" error: {detail['error']}" if detail.get("error") else "")
    if action.endswith(".end") and "exitCode" in detail:
        return f"pid {detail.get('pid')} exit {detail.get('exitCode')} after {detail.get('durationMs')} ms"
    if action.startswith("file."):
        return json.dumps({k: v for k, v in detail.items() if v is not None}, ensure_ascii=False)
    return json.dumps(detail, ensure_ascii=False) if detail else ""


def _line(event: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(event, ensure_ascii=False)
    return "  ".join([when(event["time"]), event["action"], event.get("sandboxID") or "-",
                      event.get("target") or "-", summary(event)])


def audit_command(
    sandbox: Annotated[str | None, typer.Option("--sandbox", help="Only this sandbox's events.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action (process.end) or family (process.*).")] = None,
    since: Annotated[str | None, typer.Option(help="From this long ago (10m, 2h, 7d) or this RFC 3339 time.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events until Ctrl-C.")] = False,
    as_json: Json = False,
    url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Show your team's audit log, oldest first (--json: one JSON object per line)."""
    target = resolve(url, api_key)
    params: dict[str, Any] = {"sandboxID": sandbox, "action": action, "since": parse_since(since), "limit": PAGE}
    token: str | None = None
    last: str | None = None
    events: list[dict[str, Any]] = []
    with reporting(target.url, "cannot read the audit log"):
        while True:  # every page there is now
            page, token = client.audit_page(target, {**params, "nextToken": token})
            events += page
            if page:
                last = str(page[-1]["id"])
            if not token:
                break
    if as_json or follow:
        for event in events:
            print(_line(event, as_json), flush=True)
    else:
        _table(events)
    if not follow:
        return
    try:
        with reporting(target.url, "cannot read the audit log"):
            while True:
                time.sleep(POLL_SECONDS)
                page, _ = client.audit_page(target, {**params, "nextToken": last})
                for event in page:
                    print(_line(event, as_json), flush=True)
                if page:
                    last = str(page[-1]["id"])
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _table(events: list[dict[str, Any]]) -> None:
    rows = table("TIME", "ACTION", "SANDBOX", "TARGET", "DETAIL")
    for event in events:
        rows.add_row(when(event["time"]), event["action"], event.get("sandboxID") or "-",
                     escape(event.get("target") or "-"), escape(summary(event)))
    out.print(rows)
