"""`GET /v2/sandboxes` query parameters → a `SandboxQuery`, with E2B's encodings (docs/wire.md §2.5)."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import parse_qsl, unquote

from ..errors import UserError
from ..store import SandboxQuery

LISTABLE_STATES = ("running", "paused")


def parse_metadata(raw: str | None) -> dict[str, str]:
    """`metadata` is a query string of `key=value` pairs whose keys and values the SDK percent-encoded
    once more: split the pairs (undoing the form encoding), then percent-decode each part."""
    if not raw:
        return {}
    return {unquote(k): unquote(v) for k, v in parse_qsl(raw, keep_blank_values=True)}


def parse_states(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return LISTABLE_STATES
    states = tuple(dict.fromkeys(s.strip() for s in raw.split(",") if s.strip()))
    unknown = [s for s in states if s not in LISTABLE_STATES]
    if unknown or not states:
        raise UserError(400, f"Invalid state {','.join(unknown) or raw!r}: expected running and/or paused")
    return states


def parse_started_after(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw.replace(" ", "+"))  # a raw "+" in a query string arrives as a space
    except ValueError:
        raise UserError(400, f"Invalid startedAfter {raw!r}: expected an ISO 8601 time with an offset") from None
    if when.tzinfo is None:
        raise UserError(400, f"Invalid startedAfter {raw!r}: the time needs an offset (e.g. Z or +00:00)")
    return when


def build_query(*, metadata: str | None, state: str | None, order: str | None, started_after: str | None,
                template: str | None, next_token: str | None, limit: int) -> SandboxQuery:
    if order not in (None, "asc", "desc"):
        raise UserError(400, f"Invalid order {order!r}: expected asc or desc")
    return SandboxQuery(states=parse_states(state), metadata=parse_metadata(metadata), template=template or None,
                        started_after=parse_started_after(started_after), order=order or "desc", limit=limit,
                        cursor=next_token or None)
