"""The record of a finished pause: `saved.json` in the pause directory, written last and atomically.

Its presence is what makes a pause directory whole: a backend writes it after everything else of the pause
is on disk, so a server that died mid-pause finds either no record (the sandbox still runs, or the attempt
is garbage) or a complete pause it can record and resume (`api/pause.py`, `Pauses.recover`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .runtime import SavedSandbox

RECORD = "saved.json"


def write_record(saved: SavedSandbox) -> None:
    """Mark `saved.directory` as a whole pause: written last, atomically (a rename)."""
    body = {"source_id": saved.source_id, "backend": saved.backend, "mode": saved.mode, "state": saved.state}
    tmp = saved.directory / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(body))
    os.replace(tmp, saved.directory / RECORD)


def read_record(directory: Path) -> SavedSandbox | None:
    """The pause recorded in `directory`, or None when there is none (no pause finished there, or a record this
    node cannot read: the API must still start).

    Every backend's record names `source_id`, `backend` and `mode`. The OCI backends' (`write_record`) keep
    their runtime state under `state`; microvm's is its machine description (`node/microvm/saved.py`) with
    those fields at its top, and that whole description is its state, as its `pause` returns it."""
    try:
        body = json.loads((directory / RECORD).read_text())
        if not isinstance(body, dict):
            return None
        state = body.get("state", body)
        return SavedSandbox(str(body["source_id"]), str(body["backend"]), body["mode"], directory, dict(state or {}))
    except (OSError, ValueError, KeyError, TypeError):
        return None
