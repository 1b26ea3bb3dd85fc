"""Restart the tests' private PostgreSQL (tests/api/test_postgres.py `pg_url`) in place: same data dir, same socket.

`restarted(url)` stops it (`pg_ctl -m fast`), yields while it is down, and starts it again as the fixture did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.api.test_postgres import _as_postgres, _bindir


@contextlib.contextmanager
def restarted(url: str) -> Iterator[None]:
    sock = Path(parse_qs(urlsplit(url).query)["host"][0])
    root = sock.parent
    bindir = _bindir()
    assert bindir is not None
    pg_ctl, data = str(bindir / "pg_ctl"), str(root / "data")
    _as_postgres(pg_ctl, "-D", data, "-m", "fast", "-w", "-t", "60", "stop")
    try:
        yield
    finally:
        _as_postgres(pg_ctl, "-D", data, "-l", str(root / "log"), "-w", "-t", "60", "-o",
                     f"-k {sock} -c listen_addresses='' -c fsync=off", "start")
