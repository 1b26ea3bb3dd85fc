"""The log of one template build: E2B's log entries, in memory while the build runs and in a file for later.

Each entry is `{timestamp, message, level[, step]}`. They are appended to
`<data_dir>/template-builds/<build_id>.jsonl` as they come (one JSON object a line), so the log of a finished
build, or of one a restart interrupted, can still be read; clients page through it with `logsOffset`.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

LOGS_DIR = "template-builds"
LEVELS = ("debug", "info", "warn", "error")
MAX_MESSAGE_CHARS = 4000  # a single line this long is a progress bar gone wrong; keep the start
_READ_CACHE = 8  # finished builds whose logs are kept in memory after being read


def logs_dir(data_dir: Path) -> Path:
    return Path(data_dir) / LOGS_DIR


class BuildLog:
    """Entries of one build. `add` may be called from the build's thread while requests read."""

    def __init__(self, path: Path, entries: list[dict[str, Any]] | None = None) -> None:
        self.path = path
        self._entries: list[dict[str, Any]] = list(entries or [])
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self._shared = len(self._entries)  # entries before this one are in the store (`take_unshared`)

    def add(self, message: str, level: str = "info", step: str | None = None) -> None:
        entry: dict[str, Any] = {"timestamp": datetime.now(UTC).isoformat(), "message": message[:MAX_MESSAGE_CHARS],
                                 "level": level if level in LEVELS else "info"}
        if step:
            entry["step"] = step
        with self._lock:
            self._entries.append(entry)
            if self._file is None:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 — open for the build's life
            self._file.write(json.dumps(entry) + "\n")
            self._file.flush()

    def entries(self, offset: int = 0, limit: int | None = None, level: str | None = None) -> list[dict[str, Any]]:
        """Entries from `offset` (counted among those at `level` or above), at most `limit`."""
        with self._lock:
            entries = self._entries
            if level in LEVELS:
                floor = LEVELS.index(level)
                entries = [e for e in entries if LEVELS.index(e.get("level", "info")) >= floor]
            end = None if limit is None else offset + limit
            return list(entries[offset:end])

    def take_unshared(self) -> tuple[int, list[dict[str, Any]]]:
        """(index of the first, entries) added since the last call: what a control plane with remote nodes
        appends to the store for the other replicas (templates/build_sharing.py)."""
        with self._lock:
            first, self._shared = self._shared, len(self._entries)
            return first, list(self._entries[first:])

    def untake(self, first: int) -> None:
        """The entries from `first` could not be stored: hand them out again at the next `take_unshared`."""
        with self._lock:
            self._shared = min(self._shared, first)

    def tail(self, count: int) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._entries[-count:])

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    @classmethod
    def read(cls, path: Path) -> BuildLog:
        """The log of a finished build, from its file (empty if it has none)."""
        entries: list[dict[str, Any]] = []
        with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    entries.append(json.loads(line))
        return cls(path, entries)


class BuildLogs:
    """Logs by build id: the running builds' (live), and a few recently read finished ones."""

    def __init__(self, data_dir: Path) -> None:
        self.root = logs_dir(data_dir)
        self._live: dict[str, BuildLog] = {}
        self._finished: OrderedDict[str, BuildLog] = OrderedDict()

    def open(self, build_id: str) -> BuildLog:
        """The log a build writes to (created on first use)."""
        log = self._live.get(build_id)
        if log is None:
            self._finished.pop(build_id, None)
            log = self._live[build_id] = BuildLog(self.root / f"{build_id}.jsonl")
        return log

    def finish(self, build_id: str) -> None:
        log = self._live.pop(build_id, None)
        if log is not None:
            log.close()
            self._remember(build_id, log)

    def get(self, build_id: str) -> BuildLog:
        """The build's log, live or read back from its file."""
        log = self._live.get(build_id) or self._finished.get(build_id)
        if log is None:
            log = BuildLog.read(self.root / f"{build_id}.jsonl")
            self._remember(build_id, log)
        return log

    def _remember(self, build_id: str, log: BuildLog) -> None:
        self._finished[build_id] = log
        self._finished.move_to_end(build_id)
        while len(self._finished) > _READ_CACHE:
            self._finished.popitem(last=False)

    def live(self, build_id: str) -> BuildLog | None:
        return self._live.get(build_id)

    def live_ids(self) -> list[str]:
        return list(self._live)

    def close(self) -> None:
        for build_id in list(self._live):
            self.finish(build_id)
