"""What a remote node costs (issue 17): create → first command, and a proxied round trip, through a control plane and a
`sandhive node` (both on this host's loopback) next to the same through one `sandhive serve` with its embedded node.

Both sides run the container backend with warm pools (each create is a pool hit; the bench waits for the pool to
refill between creates, so hits are compared with hits). The round trip is envd's `GET /health` through the edge
proxy: embedded, proxy → sandbox; remote, control plane's proxy → node's proxy → sandbox.

    .venv/bin/python -m bench.cluster_bench [--runs 20] [--trips 200]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
from e2b import Sandbox

from bench.common import HEADER, machine, measure, row
from bench.live import create_and_run
from tests.api.rig import SANDHIVE, Server, container_server, create_key, remove_unless_mounted, start_server
from tests.helpers import free_port, stop_process_group, wait_until

TEAM = "cluster-bench"


def pool_ready(server: Server, admin: str) -> bool:
    with server.client(admin) as c:
        pools = c.get("/sandhive/node").json().get("pools", [])
    return any(p["templateID"] == "base" and p["ready"] >= 1 for p in pools)


def figures(server: Server, key: str, admin: str, runs: int, trips: int) -> tuple[list[float], list[float]]:
    os.environ.update({"E2B_API_URL": server.url, "E2B_SANDBOX_URL": server.url, "E2B_API_KEY": key})
    create_and_run()  # builds `base` and makes its pool
    creates = []
    for _ in range(runs):
        wait_until(lambda: pool_ready(server, admin), 120, "a warm base sandbox", interval=0.2)
        creates.append(create_and_run())
    sandbox = Sandbox.create(timeout=300)
    try:
        headers = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "49983"}
        with httpx.Client(base_url=server.url, headers=headers, trust_env=False) as client:
            trip = measure(lambda: client.get("/health").raise_for_status(), trips, warmup=10)
    finally:
        sandbox.kill()
    return creates, trip


@contextlib.contextmanager
def remote_cluster() -> Iterator[tuple[Server, str, str]]:
    """A node and a control plane on loopback, in a data dir removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="sandhive-cluster-bench-", dir="/tmp"))
    root.chmod(0o711)
    token = root / "token"
    token.write_text(secrets.token_hex(32) + "\n")
    token.chmod(0o600)
    port = free_port()
    log = (root / "node.log").open("w")
    node = subprocess.Popen([str(SANDHIVE), "node", "--cluster-token-file", str(token), "--listen",
                             f"127.0.0.1:{port}", "--data-dir", str(root / "node"), "--backend", "container",
                             "--pool-size", "2"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def answers() -> bool:
            if node.poll() is not None:
                raise RuntimeError(f"sandhive node exited:\n{(root / 'node.log').read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"http://127.0.0.1:{port}/node/v1/status", trust_env=False, timeout=2,
                                 headers={"Sandhive-Cluster-Token": token.read_text().strip()}).is_success
            return False

        wait_until(answers, 300, "the node to answer", interval=0.2)
        server = start_server(root / "cp", "--no-local-node", "--node-url", f"http://127.0.0.1:{port}",
                              "--cluster-token-file", str(token), backend="none")
        try:
            key = server.key(TEAM)
            admin = create_key(server.data_dir, "cluster-bench-ops", "--admin")
            yield server, key, admin
        finally:
            with server.client(key) as c:
                for s in c.get("/v2/sandboxes", params={"limit": 100}).json():
                    c.delete(f"/sandboxes/{s['sandboxID']}")
            server.stop()
    finally:
        stop_process_group(node, timeout=30)
        log.close()
        remove_unless_mounted(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--trips", type=int, default=200)
    args = parser.parse_args()
    with container_server("cluster-bench", TEAM, "--pool-size", "2") as server:
        key, admin = server.key(TEAM), create_key(server.data_dir, "cluster-bench-ops", "--admin")
        embedded_create, embedded_trip = figures(server, key, admin, args.runs, args.trips)
    with remote_cluster() as (server, key, admin):
        remote_create, remote_trip = figures(server, key, admin, args.runs, args.trips)
    print(f"Remote node vs embedded node, container backend, pool hits · {machine()}\n")
    print(HEADER)
    print(row("create → first command, embedded node", embedded_create))
    print(row("create → first command, remote node", remote_create, embedded_create))
    print(row("proxied envd /health, embedded (proxy → sandbox)", embedded_trip))
    print(row("proxied envd /health, remote (control plane → node → sandbox)", remote_trip, embedded_trip))


if __name__ == "__main__":
    main()
