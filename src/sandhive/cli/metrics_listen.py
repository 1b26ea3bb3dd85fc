"""`sandhive serve --metrics-listen ADDR`: Prometheus' `GET /metrics` without a key, on a listener of its own.

On the API port `/metrics` needs an admin key; a scraper on a private network usually has none, so the operator
may open this second listener (e.g. `10.0.0.5:9464`, or `127.0.0.1:9464` for a local agent) and keep it off the
public one. It serves nothing but `/metrics`. Its socket is bound before the server starts, so a taken port is a
message at start rather than a log line later.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Annotated, Any

import typer
import uvicorn

MetricsListen = Annotated[str | None, typer.Option(
    "--metrics-listen", metavar="HOST:PORT",
    help="Also serve Prometheus' GET /metrics WITHOUT an API key on this address (for a scraper on a private "
         "network; on the API port it needs an admin key).")]
MetricsInterval = Annotated[float, typer.Option(
    "--metrics-interval", min=0.05, help="Seconds between samples of each sandbox's CPU, memory and disk (and "
                                         "of teams' counts) for the metrics history.")]


def parse_address(value: str) -> tuple[str, int]:
    """`HOST:PORT` (an empty host, `:9464`, listens on all addresses); raises ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not HOST:PORT: {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def bind(value: str) -> socket.socket:
    """The listening socket for `--metrics-listen`; raises ValueError or OSError."""
    host, port = parse_address(value)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class _QuietServer(uvicorn.Server):
    """A second uvicorn server on the same loop: the API's server owns the signals (SIGTERM stops it, and then
    this one), so this one must not take them over."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def metrics_server(app: Any, log_level: str) -> uvicorn.Server:
    """A server of `app` (serve it on `bind`'s socket) that leaves the signals to the API's server."""
    return _QuietServer(uvicorn.Config(app, log_level=log_level, lifespan="off", server_header=False))
