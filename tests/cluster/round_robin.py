"""A round-robin load balancer for tests: each request goes to the next replica, as a load balancer without session
affinity sends them. Plain HTTP on loopback, the `Host` header kept (deploy.md asks that of the proxy in front, and
upload URLs are built from it, so they come back through the balancer), bodies relayed whole. Stopped with the
context."""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
              "content-length"}


@contextlib.contextmanager
def round_robin(upstreams: list[str]) -> Iterator[tuple[str, list[str]]]:
    """(the balancer's URL, the upstream each request went to, in order)."""
    turn = itertools.cycle(upstreams)
    lock = threading.Lock()
    served: list[str] = []
    client = httpx.Client(trust_env=False, timeout=httpx.Timeout(300.0, connect=5.0))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def relay(self) -> None:
            with lock:
                upstream = next(turn)
                served.append(upstream)
            body = self.body()
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            r = client.request(self.command, upstream + self.path, content=body, headers=headers)
            self.send_response(r.status_code)
            for key, value in r.headers.items():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-encoding":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(r.content)))
            self.end_headers()
            self.wfile.write(r.content)

        def body(self) -> bytes:
            if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                parts = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline().strip():  # trailers, up to the blank line
                    pass
                return b"".join(parts)
            length = int(self.headers.get("content-length") or 0)
            return self.rfile.read(length) if length else b""

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = relay  # noqa: N815

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="round-robin", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        client.close()
