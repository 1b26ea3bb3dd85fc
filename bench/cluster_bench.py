"""What a remote node costs (issue 17): create → first command, and a proxied round trip, through a control plane and a
`sandhive node` (both on this host's loopback) next to the same through one `sandhive serve` with its embedded node.

Both sides run the container backend with warm pools (each create is a pool hit) and run at the same time, measured
in turns (embedded, remote, remote, embedded, ...): on a shared machine whose load changes by the minute, measuring
one side after the other would compare two different moments, not two paths. Before every create, both pools are
full with no fill in flight, each as its node sees it now (the embedded server's `/sandhive/node`, the remote node's
own `/node/v1/status`: the control plane's view is up to 2 s old), so no create competes with a refill and hits are
compared with hits. The round trip is envd's `GET /health` through the edge proxy: embedded, proxy → sandbox;
remote, control plane's proxy → node's proxy → sandbox; also in turns.

    .venv/bin/python -m bench.cluster_bench [--runs 20] [--trips 200]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from e2b import Sandbox

from bench.common import HEADER, machine, pct, row
from bench.live import create_and_run
from tests.api.rig import SANDHIVE, Server, container_server, create_key, remove_unless_mounted, start_server
from tests.helpers import free_port, stop_process_group, wait_until

TEAM = "cluster-bench"
CLUSTER_TOKEN = "Sandhive-Cluster-Token"


@dataclass
class Side:
    """One way to reach sandboxes: its server, a key of the team, and how to read its node's pools right now."""

    name: str
    server: Server
    key: str
    pools: Callable[[], list[dict]]

    @contextlib.contextmanager
    def sdk(self) -> Iterator[None]:
        os.environ.update({"E2B_API_URL": self.server.url, "E2B_SANDBOX_URL": self.server.url,
                           "E2B_API_KEY": self.key})
        yield

    def pool_full(self) -> bool:
        """The `base` pool at its target with no fill in flight, as the node itself says now."""
        return any(p.get("templateID", p.get("template_id")) == "base" and p["ready"] >= p["target"] > 0
                   and p["starting"] == 0 for p in self.pools())


def pools_at(client: httpx.Client, path: str) -> Callable[[], list[dict]]:
    """A node's own pool levels at `path`, through `client`: one kept-alive connection, so the bench's polling
    does not make a measured server accept a connection every 0.1 s."""
    def pools() -> list[dict]:
        return list(client.get(path).raise_for_status().json().get("pools", []))
    return pools


def creates(sides: list[Side], runs: int) -> dict[str, list[float]]:
    """`runs` creates → first command per side, in turns (ABBA: neither side always goes first)."""
    for side in sides:
        with side.sdk():
            create_and_run()  # builds `base` and makes its pool; not measured
    out: dict[str, list[float]] = {side.name: [] for side in sides}
    for i in range(runs):
        for side in sides if i % 2 == 0 else sides[::-1]:
            wait_until(lambda: all(s.pool_full() for s in sides), 180, "full warm pools on both sides",
                       interval=0.1)
            with side.sdk():
                out[side.name].append(create_and_run())
    return out


def trips(sides: list[Side], count: int, warmup: int = 10) -> dict[str, list[float]]:
    """`count` proxied envd `/health` round trips per side, in turns, each to a sandbox of its own side."""
    out: dict[str, list[float]] = {side.name: [] for side in sides}
    with contextlib.ExitStack() as stack:
        clients = []
        for side in sides:
            with side.sdk():
                sandbox = Sandbox.create(timeout=300)
            stack.callback(sandbox.kill)
            headers = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "49983"}
            clients.append(stack.enter_context(httpx.Client(base_url=side.server.url, headers=headers,
                                                            trust_env=False)))
        for i in range(warmup + count):
            for side, client in zip(sides, clients, strict=True):
                started = time.perf_counter()
                client.get("/health").raise_for_status()
                if i >= warmup:
                    out[side.name].append((time.perf_counter() - started) * 1000)
    return out


@contextlib.contextmanager
def remote_cluster() -> Iterator[Side]:
    """A node and a control plane on loopback, in a data dir removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="sandhive-cluster-bench-", dir="/tmp"))
    root.chmod(0o711)
    token_file = root / "token"
    token = secrets.token_hex(32)
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    port = free_port()
    node_url = f"http://127.0.0.1:{port}"
    log = (root / "node.log").open("w")
    node = subprocess.Popen([str(SANDHIVE), "node", "--cluster-token-file", str(token_file), "--listen",
                             f"127.0.0.1:{port}", "--data-dir", str(root / "node"), "--backend", "container",
                             "--pool-size", "2"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def answers() -> bool:
            if node.poll() is not None:
                raise RuntimeError(f"sandhive node exited:\n{(root / 'node.log').read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{node_url}/node/v1/status", trust_env=False, timeout=2,
                                 headers={CLUSTER_TOKEN: token}).is_success
            return False

        wait_until(answers, 300, "the node to answer", interval=0.2)
        server = start_server(root / "cp", "--no-local-node", "--node-url", node_url,
                              "--cluster-token-file", str(token_file), backend="none")
        key = server.key(TEAM)
        try:
            with httpx.Client(base_url=node_url, headers={CLUSTER_TOKEN: token}, trust_env=False,
                              timeout=10) as client:
                yield Side("remote", server, key, pools_at(client, "/node/v1/status"))
        finally:
            with server.client(key) as c:
                for s in c.get("/v2/sandboxes", params={"limit": 100}).json():
                    c.delete(f"/sandboxes/{s['sandboxID']}")
            server.stop()
    finally:
        stop_process_group(node, timeout=30)
        log.close()
        remove_unless_mounted(root)


@contextlib.contextmanager
def embedded() -> Iterator[Side]:
    with container_server("cluster-bench", TEAM, "--pool-size", "2") as server:
        admin = create_key(server.data_dir, "cluster-bench-ops", "--admin")
        with server.client(admin) as client:
            yield Side("embedded", server, server.key(TEAM), pools_at(client, "/sandhive/node"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--trips", type=int, default=200)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with embedded() as local, remote_cluster() as remote:
        sides = [local, remote]
        created = creates(sides, args.runs)
        tripped = trips(sides, args.trips)
    # Each message of the remote path wakes one more process (control plane, then node): on a machine whose
    # cores are all busy, each such wake-up waits for a core, so the figures depend on the load; it is shown.
    load = f"load average {load_before:.1f} → {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    print(f"Remote node vs embedded node, container backend, pool hits, measured in turns · {load} · {machine()}\n")
    print(HEADER)
    print(row("create → first command, embedded node", created["embedded"]))
    print(row("create → first command, remote node", created["remote"], created["embedded"]))
    print(row("proxied envd /health, embedded (proxy → sandbox)", tripped["embedded"]))
    print(row("proxied envd /health, remote (control plane → node → sandbox)", tripped["remote"],
              tripped["embedded"]))
    extra = pct(created["remote"], 50) - pct(created["embedded"], 50)
    print(f"\nThe remote path adds {extra:+.2f} ms at p50 to create → first command (issue 17 allows +5 ms), and "
          f"{pct(tripped['remote'], 50) - pct(tripped['embedded'], 50):+.2f} ms to a proxied round trip.")


if __name__ == "__main__":
    main()
