"""A cluster on one machine: PostgreSQL, `sandhive node`s each in a network namespace of its own (its own address,
its own firewall tables), and `sandhive serve --no-local-node` replicas on the host's loopback.

Nodes in separate namespaces share the host-wide slot directory (node/network.py's `SlotAllocator` claims each
slot with a file under /run), so their sandboxes' veth names and 10.211/16 addresses never collide; each node's
nftables tables live in its own namespace, so no node touches the host's firewall. A template registry (Debian's
`docker-registry`, plain HTTP, storage in the rig's temp dir) runs in a namespace of its own too; every node and
replica gets `--template-registry`, and the nodes share one `--template-cache`. Everything started here is
stopped by PID and removed, even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.api.rig import SANDHIVE, Server, container_backend_missing, create_key, remove_unless_mounted, start_server
from tests.helpers import stop_process_group
from tests.lan import Lan, lan_namespace

NODE_PORT = 3100
TOKEN_HEADER = "Sandhive-Cluster-Token"
REGISTRY_PORT = 5000  # in a namespace of the rig's own: nothing else listens there
REGISTRY_CONFIG = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: {address}
"""


@dataclass
class ClusterNode:
    lan: Lan
    data_dir: Path
    token_file: Path
    log: Path
    proc: subprocess.Popen | None = None
    extra: list[str] = field(default_factory=list)  # more `sandhive node` options (the template registry)

    @property
    def url(self) -> str:
        return f"http://{self.lan.link_ip}:{NODE_PORT}"

    def start(self) -> None:
        cmd = [str(SANDHIVE), "node", "--cluster-token-file", str(self.token_file), "--listen",
               f"{self.lan.link_ip}:{NODE_PORT}", "--data-dir", str(self.data_dir), "--backend", "container",
               "--pool-size", "0", *self.extra]
        # nsenter, not `ip netns exec`: that also remounts /sys for the namespace, hiding the cgroup2 mount runc
        # needs ("no cgroup mount found"). Only the network namespace is the node's own.
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{self.lan.netns}", *cmd], stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.lan.servers.append(self.proc)

    def status(self) -> dict | None:
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(f"{self.url}/node/v1/status", headers={TOKEN_HEADER: self.token_file.read_text().strip()},
                          timeout=2, trust_env=False)
            if r.status_code == 200:
                return r.json()
        return None

    def wait_ready(self, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"sandhive node exited with {self.proc.returncode}:\n{self.log.read_text()}")
            status = self.status()
            if status is not None:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"sandhive node not answering after {timeout}s:\n{self.log.read_text()}")
            time.sleep(0.1)

    def sigkill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, timeout=30)


@dataclass
class Cluster:
    root: Path
    database_url: str
    token_file: Path
    nodes: list[ClusterNode] = field(default_factory=list)
    replicas: list[Server] = field(default_factory=list)
    key: str = ""
    registry: str | None = None  # host:port of the template registry (Debian's docker-registry), if installed

    def registry_args(self) -> list[str]:
        return ["--template-registry", self.registry, "--template-registry-insecure"] if self.registry else []

    def add_replica(self) -> Server:
        name = f"cp{len(self.replicas)}"
        args = ["--no-local-node", "--cluster-token-file", str(self.token_file),
                "--max-sandboxes-per-team", "0", *(a for n in self.nodes for a in ("--node-url", n.url)),
                *self.registry_args()]
        # Every replica has the same data-dir secret (deploy/kubernetes copies one Secret into each): upload URLs
        # one replica signs are accepted by the others.
        (self.root / name).mkdir(mode=0o700, parents=True, exist_ok=True)
        shared = self.root / "replica-secret"
        if not shared.exists():
            shared.write_text(secrets.token_hex(32) + "\n")
        (self.root / name / "secret").write_text(shared.read_text())
        (self.root / name / "secret").chmod(0o600)
        server = start_server(self.root / name, *args, backend="none", database_url=self.database_url)
        self.replicas.append(server)
        return server


def missing() -> str | None:
    """Why a cluster cannot run here (the container backend's reason), or None."""
    return container_backend_missing("container")


@contextlib.contextmanager
def cluster(database_url: str, nodes: int = 3, replicas: int = 2) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="sandhive-cluster-", dir="/tmp"))
    root.chmod(0o711)
    token_file = root / "cluster-token"
    token_file.write_text(secrets.token_hex(32) + "\n")
    token_file.chmod(0o600)
    c = Cluster(root, database_url, token_file)
    try:
        with contextlib.ExitStack() as stack:
            c.registry = _start_registry(stack, root)
            for i in range(nodes):
                lan = stack.enter_context(lan_namespace(extra=()))
                # one template cache for every node: nodes of one host share pulled images (templates/pull.py)
                node = ClusterNode(lan, root / f"node{i}", token_file, root / f"node{i}.log",
                                   extra=[*c.registry_args(), "--template-cache", str(root / "template-cache")])
                stack.callback(node.stop)
                node.start()
                c.nodes.append(node)
            for node in c.nodes:
                node.wait_ready()
            try:
                for _ in range(replicas):
                    c.add_replica()
                c.key = create_key(root / "cp0", "default", "--database-url", database_url)
                yield c
            finally:
                try:
                    _kill_all(c)
                finally:
                    for server in c.replicas:
                        server.stop()
    finally:
        remove_unless_mounted(root)


def _start_registry(stack: contextlib.ExitStack, root: Path) -> str | None:
    """Debian's docker-registry (plain HTTP, deletes enabled) in a network namespace of its own, storage in the
    rig's temp dir; its address, or None when it is not installed (the template test then skips)."""
    if shutil.which("docker-registry") is None:
        return None
    lan = stack.enter_context(lan_namespace(extra=()))
    address = f"{lan.link_ip}:{REGISTRY_PORT}"
    config = root / "registry.yml"
    config.write_text(REGISTRY_CONFIG.format(root=root / "registry", address=address))
    log = root / "registry.log"
    lan.spawn(["docker-registry", "serve", str(config)], stderr=log.open("w"))  # stopped by PID with the namespace
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://{address}/v2/", timeout=1, trust_env=False).status_code == 200:
                return address
        if time.monotonic() > deadline:
            raise RuntimeError(f"docker-registry did not start:\n{log.read_text()}")
        time.sleep(0.1)


def _kill_all(c: Cluster) -> None:
    """Sandboxes outlive their servers by design: end the test's own through a replica still running."""
    live = [s for s in c.replicas if s.proc.poll() is None]
    if not live or not c.key:
        return
    with live[0].client(c.key) as client:
        for sandbox in client.get("/v2/sandboxes", params={"limit": 100}).json():
            client.delete(f"/sandboxes/{sandbox['sandboxID']}")
