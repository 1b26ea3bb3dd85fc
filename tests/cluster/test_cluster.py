"""Many hosts on one machine (issue 17): three `sandhive node`s, each in its own network namespace, behind two
control-plane replicas on one PostgreSQL, driven with the official `e2b` SDK and plain REST.

In order: creates spread over every node through either replica; the SDK through each replica on sandboxes the
other created; a node SIGKILLed is lost within 10 s, its sandboxes answer a clear error at once and creates go
elsewhere, and once restarted it re-adopts the sandboxes that survived while one that died meanwhile is gone; a
replica SIGKILLed loses nothing, the other serves everything and notices deaths of the sandboxes the dead one
created. A template built through one replica (on a node, pushed to the rig's registry) starts on every node, each
pulling it on its first create, which says so at the top of that sandbox's logs; the SDK's build flow works through
a round-robin balancer, and each step of a build through another replica.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import SandboxException

from sandhive.api.views import ERROR_KEY
from tests.api.rig import create_key
from tests.api.test_postgres import pg_url  # noqa: F401  # the private PostgreSQL, as a module fixture
from tests.cluster.rig import TOKEN_HEADER, Cluster, ClusterNode, cluster, missing
from tests.cluster.round_robin import round_robin
from tests.helpers import wait_until

pytestmark = pytest.mark.cluster  # `make test-cluster`; deselected from the default run (pyproject's addopts)

LOST_WITHIN = 10 + 1  # issue 17's 10 s, and 1 s for this test's own polling (every 0.2 s, three requests a check)


@pytest.fixture(scope="module")
def c(pg_url: str) -> Iterator[Cluster]:  # noqa: F811
    reason = missing()
    if reason:
        print(f"skipping the cluster suite: {reason}")
        pytest.skip(reason)
    with cluster(pg_url) as running:
        yield running


def create(c: Cluster, replica: int) -> dict:
    with c.replicas[replica].client(c.key) as client:
        r = client.post("/sandboxes", json={"templateID": "base", "timeout": 600}, timeout=240)
    assert r.status_code == 201, f"{r.text}\n{c.replicas[replica].output()[-3000:]}"
    return r.json()


def kill(c: Cluster, replica: int, sandbox_id: str) -> None:
    with c.replicas[replica].client(c.key) as client:
        assert client.delete(f"/sandboxes/{sandbox_id}").status_code == 204


def sdk(c: Cluster, replica: int) -> dict:
    url = c.replicas[replica].url
    return dict(api_key=c.key, api_url=url, sandbox_url=url)


def test_node_api_needs_the_cluster_token(c: Cluster) -> None:
    node = c.nodes[0]
    assert httpx.get(f"{node.url}/node/v1/status", trust_env=False).status_code == 401
    assert httpx.get(f"{node.url}/node/v1/status", headers={TOKEN_HEADER: "x" * 64},
                     trust_env=False).status_code == 401
    proxied = httpx.get(f"{node.url}/health", headers={"E2b-Sandbox-Id": "iabc", "E2b-Sandbox-Port": "49983"},
                        trust_env=False)
    assert proxied.status_code == 401


def test_creates_spread_over_every_node(c: Cluster) -> None:
    with ThreadPoolExecutor(3) as pool:
        made = list(pool.map(lambda i: create(c, i % 2), range(30)))
    try:
        per_node = Counter(s["clientID"] for s in made)
        node_ids = {n.status()["node_id"] for n in c.nodes}  # type: ignore[index]
        assert set(per_node) == node_ids, per_node
        assert len({s["sandboxID"] for s in made}) == 30
    finally:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda i_s: kill(c, i_s[0] % 2, i_s[1]["sandboxID"]), enumerate(made)))


def test_sdk_through_either_replica(c: Cluster) -> None:
    for made_on, used_on in ((0, 1), (1, 0)):
        sandbox = Sandbox.create(timeout=600, **sdk(c, made_on))
        try:
            other = Sandbox.connect(sandbox.sandbox_id, **sdk(c, used_on))
            assert other.commands.run("echo through-$((1+1))").stdout.strip() == "through-2"
            other.files.write("/tmp/cross", f"from {used_on}")
            assert sandbox.files.read("/tmp/cross") == f"from {used_on}"
            assert other.get_info().sandbox_id == sandbox.sandbox_id
        finally:
            sandbox.kill()


def test_template_built_through_one_replica_starts_on_every_node(c: Cluster, tmp_path: Path) -> None:
    """Issue 17: a template built with the released SDK's build API, through a round-robin load balancer over both
    replicas (each request to the next one: promise 62), runs on a node, is pushed to the registry, and every node
    pulls it on its first create, which says so first in that sandbox's logs (promise 53); both replicas resolve it
    by its team name."""
    if c.registry is None:
        pytest.skip("docker-registry is not installed (make debian-packages)")
    from e2b import Template

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hello.txt").write_text("copied across hosts\n")
    template = (Template(file_context_path=str(tmp_path)).from_image("debian:bookworm-slim").copy("data/", "/opt/data/")
                .run_cmd("echo built-on-a-node > /built.txt", user="root"))
    with pytest.MonkeyPatch.context() as mp, round_robin([r.url for r in c.replicas]) as (balancer, served):
        for name, value in (("E2B_API_URL", balancer), ("E2B_SANDBOX_URL", c.replicas[0].url),
                            ("E2B_API_KEY", c.key)):
            mp.setenv(name, value)
        mp.delenv("E2B_DOMAIN", raising=False)
        logs: list = []
        info = Template.build(template, "across-nodes", cpu_count=1, memory_mb=256, on_build_logs=logs.append)
    assert len(served) >= 4 and set(served) == {r.url for r in c.replicas}, served
    messages = [entry.message for entry in logs]
    assert any(m.startswith("building on node ") for m in messages), "\n".join(messages)
    assert any("pushed to" in m for m in messages), "\n".join(messages)
    node_ids = {n.status()["node_id"] for n in c.nodes}  # type: ignore[index]
    builder = next(m.removeprefix("building on node ") for m in messages if m.startswith("building on node "))
    made: list[dict] = []
    try:
        # Placement prefers the node that has the template, but not one already starting a create (from the same
        # replica): three creates at once through one replica land on three nodes. Rounds alternate replicas.
        for round_ in range(4):
            with ThreadPoolExecutor(3) as pool:
                made += list(pool.map(lambda _: create_of(c, round_ % 2, "across-nodes"), range(3)))  # noqa: B023
            if {s["clientID"] for s in made} == node_ids:
                break
        assert {s["clientID"] for s in made} == node_ids, Counter(s["clientID"] for s in made)
        for node_id in node_ids:
            one = next(s for s in made if s["clientID"] == node_id)
            sandbox = Sandbox.connect(one["sandboxID"], **sdk(c, 1))
            assert sandbox.commands.run("cat /built.txt /opt/data/hello.txt").stdout == \
                "built-on-a-node\ncopied across hosts\n"
        # The create that paid for a pull says so first in the sandbox's own log (`sandhive sandbox logs`), read
        # through the other replica; the building node had it, so none of its creates pulled.
        pull_note = f"template {info.template_id} pulled from registry {c.registry} for this sandbox (digest sha256:"
        for node_id in node_ids:
            firsts = [first_log_entry(c, s["sandboxID"]) for s in made if s["clientID"] == node_id]
            notes = [e for e in firsts if e and e["message"].startswith(pull_note)]
            if node_id == builder:
                assert not notes, firsts
            else:
                assert notes, f"no create on node {node_id} says it pulled the template: {firsts}"
                assert notes[0]["fields"]["digest"].startswith("sha256:") and float(notes[0]["fields"]["seconds"]) > 0
    finally:
        for s in made:
            kill(c, 0, s["sandboxID"])
    # Deleted through replica B: the registry forgets it and no replica resolves it any more.
    with c.replicas[1].client(c.key) as client:
        assert client.delete(f"/templates/{info.template_id}").status_code == 204
    registry = httpx.get(f"http://{c.registry}/v2/templates/{info.template_id}/tags/list", trust_env=False)
    assert registry.status_code == 404 or not registry.json().get("tags"), registry.text
    with c.replicas[0].client(c.key) as client:
        r = client.post("/sandboxes", json={"templateID": "across-nodes", "timeout": 60}, timeout=60)
    assert r.status_code == 404, r.text


def test_build_steps_through_alternating_replicas(c: Cluster) -> None:
    """Issue 17 (promise 62): E2B's build flow with its requests spread over the replicas, as a round-robin load
    balancer spreads them: register on A, upload on B, start on A, poll status and logs on B, and the template
    starts on a node. Aliases and tags changed through B hold through A. Another team sees none of it through
    either replica (security promise 38)."""
    if c.registry is None:
        pytest.skip("docker-registry is not installed (make debian-packages)")
    a, b = c.replicas[0], c.replicas[1]
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tar:
        data = b"uploaded through another replica\n"
        member = tarfile.TarInfo("data/rr.txt")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    files_hash = hashlib.sha256(payload.getvalue()).hexdigest()
    other_key = create_key(c.root / "cp0", "rr-other", "--database-url", c.database_url)
    made: dict | None = None
    with a.client(c.key) as on_a, b.client(c.key) as on_b, a.client(other_key) as other_a, \
            b.client(other_key) as other_b:
        r = on_a.post("/v3/templates", json={"name": "rr-built", "cpuCount": 1, "memoryMB": 256})
        assert r.status_code == 202, r.text
        template_id, build_id = r.json()["templateID"], r.json()["buildID"]
        files = f"/templates/{template_id}/files/{files_hash}"
        r = on_b.get(files)
        assert r.status_code == 201 and not r.json()["present"], r.text
        assert r.json()["url"].startswith(b.url)
        put = httpx.put(r.json()["url"], content=payload.getvalue(), trust_env=False, timeout=60)
        assert put.status_code == 204, put.text
        assert on_a.get(files).json()["present"] is True  # received by B, known to A
        for other in (other_a, other_b):  # another team: no such template, no such files
            assert other.get(files).status_code == 404
        r = on_a.post(f"/v2/templates/{template_id}/builds/{build_id}", json={
            "fromImage": "debian:bookworm-slim", "force": False,
            "steps": [{"type": "COPY", "args": ["data/", "/opt/rr/"], "filesHash": files_hash},
                      {"type": "RUN", "args": ["cat /opt/rr/rr.txt > /built-rr.txt", "root"]}]})
        assert r.status_code == 202, r.text
        assert on_b.post(f"/v2/templates/{template_id}/builds/{build_id}", json={
            "fromImage": "debian:bookworm-slim", "steps": []}).status_code == 409  # one replica runs it
        status_path = f"/templates/{template_id}/builds/{build_id}/status"
        entries: list[dict] = []
        last: dict = {}

        def finished() -> bool:
            r = on_b.get(status_path, params={"logsOffset": len(entries)})
            assert r.status_code == 200, r.text
            last.update(r.json())
            entries.extend(last["logEntries"])
            return last["status"] in ("ready", "error")

        wait_until(finished, 300, "the build started through A to finish, polled through B", interval=0.5,
                   show=lambda: a.output()[-3000:])
        assert last["status"] == "ready", last.get("reason")
        finished()  # lines stored with the final status are there
        messages = [e["message"] for e in entries]
        assert any(m.startswith("building on node ") for m in messages), "\n".join(messages)
        assert any("pushed to" in m for m in messages), "\n".join(messages)
        every = on_a.get(status_path, params={"logsOffset": 0}).json()["logEntries"]
        assert [e["message"] for e in every] == messages[:100]  # A reads the same log as B
        for other in (other_a, other_b):
            assert other.get(status_path).status_code == 404
        # Names after the build, through B; seen through A.
        r = on_b.put(f"/templates/{template_id}/aliases", json={"aliases": ["rr-built", "rr-renamed"]})
        assert r.status_code == 200, r.text
        r = on_b.post("/templates/tags", json={"target": "rr-built:default", "tags": ["v2"]})
        assert r.status_code == 201, r.text
        assert on_a.get("/templates/aliases/rr-renamed").json()["templateID"] == template_id
        assert {t["tag"] for t in on_a.get(f"/templates/{template_id}/tags").json()} == {"default", "v2"}
        assert other_a.get("/templates/aliases/rr-renamed").status_code == 404
        try:
            made = create_of(c, 0, "rr-renamed:v2")
            sandbox = Sandbox.connect(made["sandboxID"], **sdk(c, 1))
            assert sandbox.commands.run("cat /built-rr.txt").stdout == "uploaded through another replica\n"
        finally:
            if made is not None:
                kill(c, 0, made["sandboxID"])
        r = on_b.request("DELETE", "/templates/tags", json={"name": "rr-built", "tags": ["v2"]})
        assert r.status_code == 204, r.text
        with a.client(c.key) as fresh:
            assert fresh.post("/sandboxes", json={"templateID": "rr-built:v2", "timeout": 60}).status_code == 404
        assert on_a.delete(f"/templates/{template_id}").status_code == 204


def first_log_entry(c: Cluster, sandbox_id: str) -> dict | None:
    """The oldest entry of the sandbox's logs (E2B's `GET /sandboxes/{id}/logs`), through replica B."""
    with c.replicas[1].client(c.key) as client:
        r = client.get(f"/sandboxes/{sandbox_id}/logs", params={"limit": 1000})
    assert r.status_code == 200, r.text
    entries = r.json()["logEntries"]
    return entries[0] if entries else None


def create_of(c: Cluster, replica: int, template: str) -> dict:
    with c.replicas[replica].client(c.key) as client:
        r = client.post("/sandboxes", json={"templateID": template, "timeout": 600}, timeout=240)
    assert r.status_code == 201, f"{r.text}\n{c.replicas[replica].output()[-3000:]}"
    return r.json()


def test_lost_node_is_visible_and_comes_back_with_its_sandboxes(c: Cluster) -> None:
    """SIGKILL of a node: lost within 10 s on both replicas. While it is down one of its sandboxes dies too; back,
    the node re-adopts the one that survived, and the store learns the other died (404 through both replicas)."""
    made = [create(c, i % 2) for i in range(4)]  # four on three nodes: one node has two
    victim_id = Counter(s["clientID"] for s in made).most_common(1)[0][0]
    on_victim, doomed = [s for s in made if s["clientID"] == victim_id][:2]
    victim = next(n for n in c.nodes if n.status()["node_id"] == victim_id)  # type: ignore[index]
    sandbox = Sandbox.connect(on_victim["sandboxID"], **sdk(c, 1))
    assert sandbox.commands.run("true").exit_code == 0
    victim.sigkill()
    killed_at = time.monotonic()
    runc_kill(victim, doomed["sandboxID"])  # dies while its node is down: nobody sees it go
    try:
        def lost(replica: int) -> bool:
            """The sandbox shows its error state, with a message naming its node, in its details and lists
            (`state` stays one the SDK parses: the error rides in metadata, api/views.py ERROR_KEY)."""
            with c.replicas[replica].client(c.key) as client:
                r = client.get(f"/sandboxes/{on_victim['sandboxID']}")
                error = r.json().get("metadata", {}).get(ERROR_KEY, "")
                if not (r.status_code == 200 and "lost" in error and victim_id in error):
                    return False
                for path in ("/v2/sandboxes", "/sandboxes"):
                    listed = {s["sandboxID"]: s for s in client.get(path).json()}
                    if ERROR_KEY not in listed[on_victim["sandboxID"]]["metadata"]:
                        return False
                    assert all(ERROR_KEY not in s["metadata"] for s in listed.values() if s["clientID"] != victim_id)
            return True

        for replica in (0, 1):  # each replica polls on its own: each must see it
            wait_until(lambda: lost(replica), LOST_WITHIN, f"replica {replica} to report the killed node's "  # noqa: B023
                       "sandbox as lost", interval=0.2)
        assert time.monotonic() - killed_at < LOST_WITHIN
        began = time.monotonic()
        with pytest.raises(SandboxException, match="lost"):
            Sandbox.connect(on_victim["sandboxID"], **sdk(c, 0))
        info = Sandbox.get_info(on_victim["sandboxID"], **sdk(c, 0))  # the released SDK parses the error state
        assert victim_id in info.metadata[ERROR_KEY]
        with pytest.raises(Exception):  # noqa: B017  # the proxy cannot reach the node: a 502, not a hang
            sandbox.commands.run("true", request_timeout=30)
        assert time.monotonic() - began < 20
        after = [create(c, i % 2) for i in range(4)]
        assert all(s["clientID"] != victim_id for s in after)
        for s in after:
            kill(c, 0, s["sandboxID"])
    finally:
        # The node comes back: a replica sends it what the store says ran there, and it re-adopts what survived.
        victim.start()
        victim.wait_ready()

        def answers(replica: int) -> bool:
            with c.replicas[replica].client(c.key) as client:
                r = client.get(f"/sandboxes/{on_victim['sandboxID']}")
                return r.status_code == 200 and ERROR_KEY not in r.json()["metadata"]

        for replica in (0, 1):
            wait_until(lambda: answers(replica), 30, f"replica {replica} to see the node back", interval=0.2,  # noqa: B023
                       show=lambda: c.replicas[replica].output()[-4000:] + victim.log.read_text()[-4000:])  # noqa: B023
    for replica in (0, 1):
        again = Sandbox.connect(on_victim["sandboxID"], **sdk(c, replica))
        assert again.commands.run("echo re-adopted").stdout.strip() == "re-adopted"

    def gone(replica: int) -> bool:
        with c.replicas[replica].client(c.key) as client:
            if client.get(f"/sandboxes/{doomed['sandboxID']}").status_code != 404:
                return False
            return all(doomed["sandboxID"] not in {s["sandboxID"] for s in client.get(path).json()}
                       for path in ("/v2/sandboxes", "/sandboxes"))

    for replica in (0, 1):
        wait_until(lambda: gone(replica), 20, f"replica {replica} to learn the sandbox that died while its node "  # noqa: B023
                   "was down is gone", interval=0.2, show=lambda: c.replicas[replica].output()[-4000:])  # noqa: B023
    for s in made:
        if s is not doomed:
            kill(c, 0, s["sandboxID"])


def runc_kill(node: ClusterNode, sandbox_id: str) -> None:
    """End a sandbox from outside Sandhive: its container killed on its node, as a crash would (the node's daemon
    need not be running)."""
    roots = [p for p in node.data_dir.rglob("runc") if (p / sandbox_id).is_dir()]
    assert roots, f"no runc state of {sandbox_id} under {node.data_dir}"
    subprocess.run(["runc", "--root", str(roots[0]), "kill", sandbox_id, "KILL"], check=True, timeout=30)


def test_replica_killed_the_other_serves(c: Cluster) -> None:
    sandbox = Sandbox.create(timeout=600, **sdk(c, 0))
    doomed = create(c, 0)
    c.replicas[0].proc.kill()
    c.replicas[0].proc.wait(10)
    # A sandbox the dead replica created dies by itself: the other replica, which never watched it, notices.
    runc_kill(next(n for n in c.nodes if n.status()["node_id"] == doomed["clientID"]), doomed["sandboxID"])  # type: ignore[index]

    def ended() -> bool:
        with c.replicas[1].client(c.key) as client:
            return client.get(f"/sandboxes/{doomed['sandboxID']}").status_code == 404

    wait_until(ended, 20, "the surviving replica to notice a sandbox of the dead replica ended", interval=0.2)
    listed = Sandbox.list(**sdk(c, 1)).next_items()
    assert sandbox.sandbox_id in {s.sandbox_id for s in listed}
    again = Sandbox.connect(sandbox.sandbox_id, **sdk(c, 1))
    assert again.commands.run("echo still-here").stdout.strip() == "still-here"
    fresh = Sandbox.create(timeout=600, **sdk(c, 1))
    assert fresh.commands.run("true").exit_code == 0
    fresh.kill()
    again.kill()
