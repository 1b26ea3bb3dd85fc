"""Opening the store from a command: a bad URL or an unreachable database is a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .common import fail, prepare_data_dir

if TYPE_CHECKING:
    from ..store import Store


def open_store(data_dir: Path, url: str | None) -> Store:
    """The migrated store of `data_dir` (or of `url`), ready for queries.

    The store (SQLAlchemy, alembic) is imported here, not at the top: client commands such as `sandbox list`
    never open it and should not pay its import on every run.
    """
    from ..store import Store, database_url

    if not url:
        data_dir = prepare_data_dir(data_dir)
    resolved = database_url(data_dir, url)
    try:
        store = Store(resolved)
        store.migrate()
    except Exception as exc:  # SQLAlchemy's errors for bad URLs, refused connections, locked or corrupt files
        fail(f"cannot open the database {_redact(resolved)}: {_first_line(exc)}")
    return store


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        rest = f"{user}:***@{rest.split('@', 1)[1]}"
    return scheme + sep + rest
