"""The OCI backends (container and gvisor): a real sandbox per test, its isolation, its limits, and its clean
removal. Each test runs on both; where gVisor's user-space kernel makes the same promise look different from
inside (its own cgroupfs, its own user namespaces, no in-sandbox OOM killer), the test says so and checks the
promise where it holds — on the host."""

from __future__ import annotations

import asyncio
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from e2b import CommandExitException

from sandhive.node import network, userns
from sandhive.node.backends import BackendMismatch
from sandhive.node.oci_runtime import OciRuntime

from .conftest import Started, sdk


def run(handle, cmd: str, **kw) -> tuple[int, str]:
    """exit code and stdout+stderr of `cmd` in the sandbox (a non-zero exit is a result, not an error)."""
    try:
        r = sdk(handle).commands.run(cmd, timeout=60, **kw)
        return r.exit_code, r.stdout + r.stderr
    except CommandExitException as exc:
        return exc.exit_code, exc.stdout + exc.stderr


def run_or_die(handle, cmd: str) -> tuple[int, str] | None:
    """Like `run`, or None when the sandbox ended under it (gVisor ends a sandbox that spends its memory)."""
    try:
        return run(handle, cmd)
    except Exception as exc:  # the SDK's error for a sandbox that went away mid-command
        print(f"sandbox {handle.sandbox_id} ended while running {cmd!r}: {exc}")
        return None


def cgroup_file(controller: str, sandbox_id: str, name: str) -> Path:
    return Path(f"/sys/fs/cgroup/{controller}/sandhive/{sandbox_id}/{name}")


def host_uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Uid:"))


def _mounts_mentioning(text: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if text in line]


async def test_start_runs_envd_as_root_of_a_user_namespace(sandboxes: Started, runtime: OciRuntime,
                                                            backend: str) -> None:
    h = await sandboxes.start()
    code, out = await asyncio.to_thread(run, h, "id -u; cat /proc/self/uid_map; hostname; uname -r; "
                                                "cat /proc/1/cmdline")
    uid, mapping, hostname, kernel, cmdline = out.split("\n", 4)
    assert code == 0 and uid == "0"
    assert hostname == h.sandbox_id and "sandhive.envd" in cmdline
    # On the host, what runs the sandbox (envd itself, or gVisor's sentry) is the unprivileged root of the
    # sandbox's own uid range (derived from its network slot), not the canonical range its template is stored in.
    pid = int((runtime.sandboxes_dir / h.sandbox_id / "pid").read_text())
    host_root = userns.sandbox_range(h.state["slot"])
    assert host_uid(pid) == host_root != userns.BASE
    if backend == "container":
        assert mapping.split() == ["0", str(host_root), "65536"] and kernel == os.uname().release
    else:  # gVisor's own kernel answers: its identity map, and not the host kernel's release
        assert kernel != os.uname().release, "the sandbox sees the host kernel"


async def test_stop_frees_everything(sandboxes: Started, runtime: OciRuntime) -> None:
    h = await sandboxes.start()
    sid = h.sandbox_id
    assert sid in network.existing_sandbox_netns() and _mounts_mentioning(sid)
    assert Path(f"/sys/fs/cgroup/memory/sandhive/{sid}").exists()
    await sandboxes.node.kill(h)
    sandboxes.handles.remove(h)
    assert sid not in network.existing_sandbox_netns()
    assert not _mounts_mentioning(sid)
    assert not Path(f"/sys/fs/cgroup/memory/sandhive/{sid}").exists()
    assert not (runtime.sandboxes_dir / sid).exists()
    assert sid not in await runtime.running_ids()
    assert not any(p.name.startswith(network.VETH_PREFIX) and p.name == f"shv{h.state['slot']}"
                   for p in Path("/sys/class/net").iterdir())


async def test_cannot_read_host_files(sandboxes: Started, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("top secret")
    h = await sandboxes.start()
    code, out = await asyncio.to_thread(run, h, f"cat {secret}; cat /etc/shadow; ls /work 2>&1")
    assert code != 0 and "top secret" not in out


async def test_cannot_see_host_processes(sandboxes: Started) -> None:
    h = await sandboxes.start()
    code, out = await asyncio.to_thread(run, h, "ps -o pid,args")
    assert "sandhive.envd" in out
    assert "pytest" not in out and "runc" not in out and "runsc" not in out
    assert len(out.strip().splitlines()) < 6  # header, envd, the shell, ps


@pytest.fixture
def host_http_server() -> Iterator[int]:
    """An HTTP server of the host's own, on every host address (stands in for the API's port)."""
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _host_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface's address
        return s.getsockname()[0]


async def test_cannot_reach_host_services(sandboxes: Started, host_http_server: int) -> None:
    h = await sandboxes.start()
    slot = network.Slot(h.state["slot"])
    for address in (slot.host_ip, _host_ip()):
        code, out = await asyncio.to_thread(run, h, f"wget -q -T 2 -O- http://{address}:{host_http_server}/")
        assert code != 0, f"sandbox reached the host at {address}: {out}"


async def test_cannot_reach_another_sandbox(sandboxes: Started) -> None:
    a, b = await sandboxes.start(), await sandboxes.start()
    sdk(a).commands.run("while true; do echo pong | nc -l -p 8080; done", background=True)
    await asyncio.sleep(0.5)
    # Control: the host reaches a's listener, so the listener is there.
    reader, writer = await asyncio.open_connection(a.address, 8080)
    assert (await asyncio.wait_for(reader.read(100), 5)).strip() == b"pong"
    writer.close()
    code, out = await asyncio.to_thread(run, b, f"nc -w 2 {a.address} 8080 </dev/null")
    assert "pong" not in out


async def test_cannot_load_a_kernel_module_or_mount(sandboxes: Started, backend: str) -> None:
    h = await sandboxes.start()
    code, out = await asyncio.to_thread(run, h, "echo x > /tmp/m.ko; insmod /tmp/m.ko")
    assert code != 0 and "not permitted" in out.lower()
    code, out = await asyncio.to_thread(run, h, "mkdir -p /mnt/t; mount -t tmpfs none /mnt/t")
    assert code != 0
    code, out = await asyncio.to_thread(run, h, "unshare -U true")
    if backend == "container":
        assert code != 0  # no nested user namespaces: the host kernel's userns code is attack surface
    # gVisor: a nested user namespace is one of gVisor's own, served by the sentry, never the host kernel's.


async def test_cannot_raise_its_cgroup_limits(sandboxes: Started, backend: str) -> None:
    h = await sandboxes.start(memory_mb=128)
    code, out = await asyncio.to_thread(run, h, "echo 9999999999 > /sys/fs/cgroup/memory/memory.limit_in_bytes")
    if backend == "container":
        assert code != 0 and "Read-only" in out
        code, out = await asyncio.to_thread(run, h, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
        assert out.strip() == str(128 * 1024 * 1024)
    # gVisor: /sys/fs/cgroup inside is gVisor's own cgroupfs, whatever the sandbox writes there; the limit that
    # binds it is the host's, which the sandbox cannot reach.
    host_view = cgroup_file("memory", h.sandbox_id, "memory.limit_in_bytes").read_text()
    assert host_view.strip() == str(128 * 1024 * 1024)


def assert_hit_its_memory_limit(sandbox_id: str, memory_mb: int) -> None:
    """The sandbox's host memory cgroup was filled to its limit (so what it spent was charged there) and not
    beyond it."""
    limit = memory_mb * 1024 * 1024
    peak = int(cgroup_file("memory", sandbox_id, "memory.max_usage_in_bytes").read_text())
    slack = 256 * 1024  # the kernel charges in per-CPU batches of pages, so the peak may read a page or two over
    assert 0.9 * limit <= peak <= limit + slack, f"peak {peak} vs limit {limit}"


async def test_fork_bomb_is_contained(sandboxes: Started, backend: str) -> None:
    h = await sandboxes.start()
    other = await sandboxes.start()
    result = await asyncio.to_thread(run_or_die, h, "for i in $(seq 6000); do sleep 300 & done 2>/dev/null; "
                                                    "echo done")
    if backend == "container" or result is not None:
        pids = int(cgroup_file("pids", h.sandbox_id, "pids.current").read_text())
        assert pids <= 4096  # the pids limit (or the memory limit, whichever comes first) held
    if backend == "container":
        # envd outlived the bomb: it answers (a call that forks nothing: the pids limit may still be full of
        # the bomb's sleeps, so a new command could not start until they end).
        async with httpx.AsyncClient(timeout=30) as client:
            assert (await client.get(f"{h.envd_url}/health")).status_code == 204
    else:
        # gVisor has no OOM killer of its own: each process costs the sentry host memory, and a bomb that
        # spends the sandbox's memory ends the whole sandbox (the host's OOM killer takes the sentry).
        # Contained all the same: it never got past its own limit, and nothing else noticed.
        assert result is None or await sandboxes.node.is_running(h)
        assert_hit_its_memory_limit(h.sandbox_id, 256)
    assert (await asyncio.to_thread(run, other, "echo alive"))[1] == "alive\n"


async def test_memory_hog_is_killed_inside(sandboxes: Started, backend: str) -> None:
    h = await sandboxes.start(memory_mb=128)
    other = await sandboxes.start(memory_mb=128)
    result = await asyncio.to_thread(run_or_die, h, "head -c 600m /dev/zero | tail > /dev/null")
    if backend == "container":
        assert result is not None and result[0] != 0
        assert (await asyncio.to_thread(run, h, "echo still here"))[1] == "still here\n"  # envd survived
    else:  # gVisor: the hog ends its own sandbox (no OOM killer inside gVisor), at its limit and not past it
        assert result is None or result[0] != 0
        assert_hit_its_memory_limit(h.sandbox_id, 128)
        if result is None:  # the runtime sees it ended (the sentry's exit reaches runsc's state a moment later)
            for _ in range(100):
                if not await sandboxes.node.is_running(h):
                    break
                await asyncio.sleep(0.1)
            assert not await sandboxes.node.is_running(h)
    assert (await asyncio.to_thread(run, other, "echo alive"))[1] == "alive\n"


async def test_disk_filler_stops_at_the_quota(sandboxes: Started) -> None:
    h = await sandboxes.start(disk_mb=32)
    code, out = await asyncio.to_thread(run, h, "dd if=/dev/zero of=/tmp/big bs=1M count=100; s=$?; "
                                                "rm -f /tmp/big; exit $s")
    assert code != 0 and "No space left" in out  # /tmp too is inside the quota (not an unbounded tmpfs)
    code, out = await asyncio.to_thread(run, h, "dd if=/dev/zero of=/big bs=1M count=100")
    assert code != 0 and "No space left" in out
    assert os.statvfs("/").f_bavail > 0
    usage = await sandboxes.node.usage(h)
    assert usage.disk_total == 32 * 1024 * 1024 and usage.disk_used > 30 * 1024 * 1024


async def test_usage_reports_the_sandbox_cgroup(sandboxes: Started) -> None:
    h = await sandboxes.start(memory_mb=256, cpu_count=1)
    usage = await sandboxes.node.usage(h)
    assert usage.mem_total == 256 * 1024 * 1024 and 1_000_000 < usage.mem_used < usage.mem_total
    assert usage.cpu_count == 1


async def test_internet_off_drops_outbound(sandboxes: Started, host_http_server: int) -> None:
    h = await sandboxes.start(internet=False)
    code, out = await asyncio.to_thread(run, h, f"wget -q -T 2 -O- http://{_host_ip()}:{host_http_server}/")
    assert code != 0


async def test_a_template_asking_for_another_backend_is_refused(sandboxes: Started, runtime: OciRuntime,
                                                                backend: str) -> None:
    other = "gvisor" if backend == "container" else "container"
    sandboxes.template = replace(sandboxes.template, backend=other)
    with pytest.raises(BackendMismatch, match=f"asks for the {other} backend, but this server runs {backend}"):
        await sandboxes.start()
    assert await runtime.running_ids() == set()  # refused before anything was made for it
    sandboxes.template = replace(sandboxes.template, backend=backend)  # asking for its own backend is fine
    h = await sandboxes.start()
    assert (await asyncio.to_thread(run, h, "echo ok"))[1] == "ok\n"
