"""Pause, snapshots and forks through remote nodes, and a PostgreSQL restart under a running cluster (issue 17 with
issue 14's features), with the released `e2b` SDK: two `sandhive node`s behind two control-plane replicas.

Paused sandboxes and snapshots resume on the node that holds their files (cluster/remote_saved.py), whichever
replica is asked. The PostgreSQL restart comes last: while it is down the API answers 503 with `Retry-After`,
after it both replicas recover by themselves and nothing is lost.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox, Volume

from tests.api.rig import create_key
from tests.api.test_postgres import pg_url  # noqa: F401  # the private PostgreSQL, as a module fixture
from tests.cluster.pg import restarted
from tests.cluster.rig import TOKEN_HEADER, Cluster, cluster, missing
from tests.helpers import read_count, wait_until

pytestmark = pytest.mark.cluster  # `make test-cluster`

COUNTER_LOOP = "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done"


@pytest.fixture(scope="module")
def c(pg_url: str) -> Iterator[Cluster]:  # noqa: F811
    reason = missing()
    if reason:
        print(f"skipping the cluster suite: {reason}")
        pytest.skip(reason)
    with cluster(pg_url, nodes=2) as running:
        yield running


def sdk(c: Cluster, replica: int) -> dict:
    url = c.replicas[replica].url
    return dict(api_key=c.key, api_url=url, sandbox_url=url)


def counter(sandbox: Sandbox) -> int:
    return read_count(lambda: sandbox.commands.run("cat /tmp/counter 2>/dev/null || true").stdout)


def counting(sandbox: Sandbox) -> int:
    sandbox.files.write("/home/user/kept", "kept\n")
    sandbox.commands.run(COUNTER_LOOP, background=True)
    return wait_until(lambda: counter(sandbox) >= 3 and counter(sandbox), 30, "the counter to count")


def other_key(c: Cluster) -> str:
    if not hasattr(c, "other_key"):
        c.other_key = create_key(c.root / "cp0", "other-team", "--database-url", c.database_url)  # type: ignore[attr-defined]
    return c.other_key  # type: ignore[attr-defined]


def test_node_saved_routes_touch_only_their_own_directories(c: Cluster) -> None:
    """A name that is a path is refused before anything is read or deleted (cluster/saved_models.py)."""
    node = c.nodes[0]
    token = node.token_file.read_text().strip()
    saved = {"source_id": "iabc", "backend": "container", "mode": "memory", "kind": "snapshots"}
    for name in ("../../etc", "..", "a/b", ".hidden", ""):
        r = httpx.post(f"{node.url}/node/v1/saved/discard", json={**saved, "name": name},
                       headers={TOKEN_HEADER: token}, trust_env=False, timeout=30)
        assert r.status_code == 400, (name, r.text)
    r = httpx.post(f"{node.url}/node/v1/saved/discard", json={**saved, "kind": "templates", "name": "base"},
                   headers={TOKEN_HEADER: token}, trust_env=False, timeout=30)
    assert r.status_code in (400, 422), r.text  # only pauses and snapshots, never another directory of the node
    for path in ("/volumes", "/volumes/delete"):  # volumes likewise: only `<data dir>/volumes/<id>`
        r = httpx.post(f"{node.url}/node/v1{path}", json={"volume_id": "../../etc", "size_mb": 1},
                       headers={TOKEN_HEADER: token}, trust_env=False, timeout=30)
        assert r.status_code == 400, (path, r.text)


def test_a_volume_lives_on_one_node_and_serves_through_either_replica(c: Cluster) -> None:
    """A volume made through replica A is mounted by a sandbox created through B (placed on the volume's node),
    mounted again when it is paused and resumed through A, outlives it, is read by a second sandbox through A and
    by its content API through B; another team gets 404; deleting it through B removes its image on its node
    (cluster/remote_volumes.py)."""
    volume = Volume.create(f"data-{uuid.uuid4().hex[:8]}", **sdk(c, 0))
    sandboxes: list[Sandbox] = []
    try:
        first = Sandbox.create(timeout=120, volume_mounts={"/mnt/data": volume}, **sdk(c, 1))
        sandboxes.append(first)
        node = client_id(c, 1, first.sandbox_id)
        image = node_dir(c, node) / "volumes" / volume.volume_id / "volume.ext4"
        assert image.is_file()  # the volume is on the node its sandbox was placed on
        assert first.commands.run("echo kept > /mnt/data/note.txt").exit_code == 0
        assert first.pause(mode="filesystem") is True  # resumed through the other replica, its volume mounted again
        resumed = Sandbox.connect(first.sandbox_id, timeout=120, **sdk(c, 0))
        assert resumed.commands.run("cat /mnt/data/note.txt").stdout == "kept\n"
        resumed.kill()
        second = Sandbox.create(timeout=120, volume_mounts={"/mnt/data": volume}, **sdk(c, 0))
        sandboxes.append(second)
        assert client_id(c, 0, second.sandbox_id) == node
        assert second.commands.run("cat /mnt/data/note.txt").stdout == "kept\n"
        second.kill()
        assert volume.read_file("/note.txt", api_url=c.replicas[1].url) == "kept\n"  # relayed to the node
        volume.write_file("/from-api.txt", "hello", api_url=c.replicas[0].url)
        assert [e.name for e in volume.list("/", api_url=c.replicas[1].url)] == ["from-api.txt", "note.txt"]
        for replica in c.replicas:  # another team: 404, as for a volume nobody has
            with replica.client(other_key(c)) as client:
                assert client.get(f"/volumes/{volume.volume_id}").status_code == 404
                assert client.delete(f"/volumes/{volume.volume_id}").status_code == 404
        assert Volume.destroy(volume.volume_id, **sdk(c, 1)) is True
        assert not image.parent.exists()
        with c.replicas[0].client(c.key) as client:
            assert client.get(f"/volumes/{volume.volume_id}").status_code == 404
    finally:
        for sandbox in sandboxes:
            with contextlib.suppress(Exception):
                sandbox.kill()
        with contextlib.suppress(Exception):
            Volume.destroy(volume.volume_id, **sdk(c, 0))


def node_dir(c: Cluster, node_id: str) -> Path:
    return next(n.data_dir for n in c.nodes if (n.status() or {}).get("node_id") == node_id)


def test_a_paused_sandbox_killed_through_the_other_replica_leaves_nothing_on_its_node(c: Cluster) -> None:
    sandbox = Sandbox.create(timeout=300, **sdk(c, 0))
    node = client_id(c, 0, sandbox.sandbox_id)
    assert sandbox.pause(mode="filesystem") is True  # no memory dump: quick
    paused = node_dir(c, node) / "paused" / sandbox.sandbox_id
    assert paused.is_dir()
    assert Sandbox.kill(sandbox.sandbox_id, **sdk(c, 1)) is True
    with c.replicas[0].client(c.key) as client:
        assert client.get(f"/sandboxes/{sandbox.sandbox_id}").status_code == 404
    assert not paused.exists()


def client_id(c: Cluster, replica: int, sandbox_id: str) -> str:
    with c.replicas[replica].client(c.key) as client:
        return client.get(f"/sandboxes/{sandbox_id}").json()["clientID"]


def test_pause_through_one_replica_resume_through_the_other_keeps_memory(c: Cluster) -> None:
    sandbox = Sandbox.create(timeout=300, **sdk(c, 0))
    try:
        node = client_id(c, 0, sandbox.sandbox_id)
        before = counting(sandbox)
        assert sandbox.pause() is True
        assert Sandbox.get_info(sandbox.sandbox_id, **sdk(c, 1)).state.value == "paused"
        with c.replicas[1].client(other_key(c)) as client:  # another team cannot resume it: 404, nothing resumed
            assert client.post(f"/sandboxes/{sandbox.sandbox_id}/connect", json={"timeout": 60}).status_code == 404
        assert Sandbox.get_info(sandbox.sandbox_id, **sdk(c, 1)).state.value == "paused"
        resumed = Sandbox.connect(sandbox.sandbox_id, timeout=120, **sdk(c, 1))
        after = counter(resumed)
        assert before <= after < before + 300, (before, after)  # went on from memory (nothing re-runs a command)
        wait_until(lambda: counter(resumed) > after, 30, "the counter to go on counting")
        assert resumed.files.read("/home/user/kept") == "kept\n"
        assert client_id(c, 1, sandbox.sandbox_id) == node  # resumed on the node that holds its files
    finally:
        Sandbox.kill(sandbox.sandbox_id, **sdk(c, 1))


def test_snapshot_then_create_from_it_and_fork_through_remote_nodes(c: Cluster) -> None:
    source = Sandbox.create(timeout=300, **sdk(c, 0))
    made: list[Sandbox] = []
    try:
        node = client_id(c, 0, source.sandbox_id)
        at_snapshot = counting(source)
        snap = source.create_snapshot()
        with c.replicas[1].client(other_key(c)) as client:  # another team cannot start from it
            r = client.post("/sandboxes", json={"templateID": snap.snapshot_id, "timeout": 60})
            assert r.status_code == 404, r.text
        restored = Sandbox.create(snap.snapshot_id, timeout=120, **sdk(c, 1))  # through the other replica
        made.append(restored)
        assert restored.sandbox_id != source.sandbox_id
        assert client_id(c, 1, restored.sandbox_id) == node  # restored on the node that holds the snapshot
        assert at_snapshot <= counter(restored) < at_snapshot + 300  # memory came along: no restart at 1
        assert restored.files.read("/home/user/kept") == "kept\n"

        forks = source.fork(count=2, timeout=120)
        for fork in forks:
            assert isinstance(fork, Sandbox), fork
            made.append(fork)
        assert len({source.sandbox_id, *(f.sandbox_id for f in forks)}) == 3
        forks[0].files.write("/home/user/only-in-first", "1")
        assert not forks[1].files.exists("/home/user/only-in-first")
        for fork in forks:
            assert fork.files.read("/home/user/kept") == "kept\n"
            assert counter(fork) >= at_snapshot
        assert source.is_running()
        files = node_dir(c, node) / "snapshots" / snap.snapshot_id.partition(":")[0]
        assert files.is_dir()
        with c.replicas[1].client(c.key) as client:
            assert client.delete(f"/templates/{snap.snapshot_id}").status_code == 204
        assert not files.exists()  # its files went on their node
        assert not list((node_dir(c, node) / "snapshots").glob("fork-*"))  # and the fork's snapshot too
    finally:
        for sandbox in made:
            sandbox.kill()
        source.kill()


def test_timeout_pauses_and_a_request_through_the_other_replica_wakes_it(c: Cluster) -> None:
    """Both replicas' timers see the deadline pass: one pauses, the other is told it is paused already (never a
    kill); a proxied request through the replica that did not pause it resumes it, same process, same node."""
    sandbox = Sandbox.create(timeout=300, lifecycle={"on_timeout": "pause", "auto_resume": True}, **sdk(c, 0))
    headers = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "8000"}
    try:
        node = client_id(c, 0, sandbox.sandbox_id)
        sandbox.files.write("/home/user/www/index.html", "hello from before the pause")
        sandbox.commands.run("cd /home/user/www && python3 -m http.server 8000", background=True)
        wait_until(lambda: sandbox.commands.run("cat /proc/net/tcp | grep -c ':1F40 ' || true").stdout.strip() != "0",
                   30, "the sandbox's web server to listen")

        sandbox.set_timeout(2)  # only now: a loaded machine's setup never races the deadline

        def state() -> str:
            return Sandbox.get_info(sandbox.sandbox_id, **sdk(c, 1)).state.value

        wait_until(lambda: state() == "paused", 60, "the timeout to pause the sandbox", interval=0.5)
        r = httpx.get(c.replicas[1].url, headers=headers, trust_env=False, timeout=120)
        assert r.text == "hello from before the pause", r.text
        assert state() == "running" and client_id(c, 1, sandbox.sandbox_id) == node
    finally:
        Sandbox.kill(sandbox.sandbox_id, **sdk(c, 0))


def test_a_replica_with_an_old_route_wakes_a_sandbox_another_replica_paused(c: Cluster) -> None:
    """Replica 1 has routed to the sandbox; replica 0 pauses it: replica 1 reads the route again from the store
    (within ROUTE_TTL_SECONDS) and its next requests wake the sandbox instead of going to a node that no longer
    runs it."""
    sandbox = Sandbox.create(timeout=300, lifecycle={"on_timeout": "pause", "auto_resume": True}, **sdk(c, 0))
    headers = {"E2b-Sandbox-Id": sandbox.sandbox_id, "E2b-Sandbox-Port": "8000"}
    try:
        sandbox.files.write("/home/user/www/index.html", "served before and after")
        sandbox.commands.run("cd /home/user/www && python3 -m http.server 8000", background=True)
        wait_until(lambda: sandbox.commands.run("cat /proc/net/tcp | grep -c ':1F40 ' || true").stdout.strip() != "0",
                   30, "the sandbox's web server to listen")
        assert httpx.get(c.replicas[1].url, headers=headers, trust_env=False, timeout=60).text == \
            "served before and after"  # replica 1 now holds a route to it
        with c.replicas[0].client(c.key) as client:
            assert client.post(f"/sandboxes/{sandbox.sandbox_id}/pause").status_code == 204

        def woken() -> bool:
            try:
                r = httpx.get(c.replicas[1].url, headers=headers, trust_env=False, timeout=120)
            except httpx.HTTPError:
                return False
            return r.text == "served before and after"

        wait_until(woken, 30, "a request through the replica with the old route to wake the sandbox", interval=0.5)
        assert Sandbox.get_info(sandbox.sandbox_id, **sdk(c, 0)).state.value == "running"
    finally:
        Sandbox.kill(sandbox.sandbox_id, **sdk(c, 0))


def test_the_egress_audit_of_a_remote_sandbox_reads_through_any_replica(c: Cluster) -> None:
    """A denied connection of a sandbox on a node is in its egress audit through the other replica, and counted
    in the control plane's figures. (The packet is dropped by the node's own firewall, in its own network
    namespace: nothing leaves the machine.)"""
    denied = "198.51.100.7"
    sandbox = Sandbox.create(timeout=300, network={"deny_out": [f"{denied}/32"]}, **sdk(c, 0))
    try:
        probe = (f"import socket\ntry:\n socket.create_connection(({denied!r}, 443), timeout=2)\n"
                 "except OSError:\n print('blocked')\n")
        sandbox.files.write("/tmp/probe.py", probe)
        assert sandbox.commands.run("python3 /tmp/probe.py", timeout=60).stdout.strip() == "blocked"

        def audited() -> bool:
            with c.replicas[1].client(c.key) as client:
                r = client.get(f"/sandboxes/{sandbox.sandbox_id}/logs")
            assert r.status_code == 200, r.text
            return any(f.get("logger") == "egress" and f.get("destination") == denied and f.get("verdict") == "denied"
                       for f in (e.get("fields", {}) for e in r.json()["logEntries"]))

        wait_until(audited, 30, "the denied attempt in the egress audit through the other replica", interval=0.5)
        admin = create_key(c.root / "cp0", "operators", "--admin", "--database-url", c.database_url)

        def counted() -> bool:
            with c.replicas[1].client(admin) as client:
                return (client.get("/sandhive/node").json().get("egressDeniedTotal") or 0) >= 1

        wait_until(counted, 30, "the nodes' denied count in the control plane's figures", interval=0.5)
    finally:
        Sandbox.kill(sandbox.sandbox_id, **sdk(c, 0))


def test_postgres_restart_answers_503_then_recovers_with_nothing_lost(c: Cluster, pg_url: str) -> None:  # noqa: F811
    kept = Sandbox.create(timeout=300, **sdk(c, 0))
    try:
        with restarted(pg_url):
            for replica in c.replicas:
                r = httpx.get(f"{replica.url}/v2/sandboxes", headers={"X-API-Key": c.key}, timeout=30,
                              trust_env=False)
                assert r.status_code == 503, f"{r.text}\n{replica.output()[-3000:]}"
                assert r.headers["retry-after"].isdigit()
                assert r.json()["code"] == 503 and "database" in r.json()["message"]
        for replica in (0, 1):  # both recover by themselves
            def listed(replica: int = replica) -> bool:
                r = httpx.get(f"{c.replicas[replica].url}/v2/sandboxes", headers={"X-API-Key": c.key}, timeout=30,
                              trust_env=False)
                return r.status_code == 200 and kept.sandbox_id in {s["sandboxID"] for s in r.json()}

            wait_until(listed, 30, f"replica {replica} to list the sandbox after the restart", interval=0.5)
        again = Sandbox.connect(kept.sandbox_id, **sdk(c, 1))
        assert again.commands.run("echo after-restart").stdout.strip() == "after-restart"
        fresh = Sandbox.create(timeout=120, **sdk(c, 1))
        assert fresh.commands.run("true").exit_code == 0
        fresh.kill()
    finally:
        Sandbox.kill(kept.sandbox_id, **sdk(c, 0))
