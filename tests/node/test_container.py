"""The container backend: a real sandbox per test, its isolation, its limits, and its clean removal."""

from __future__ import annotations

import asyncio
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import CommandExitException

from sandhive.node import network
from sandhive.node.container import ContainerRuntime

from .conftest import Started, sdk


def run(handle, cmd: str, **kw) -> tuple[int, str]:
    """exit code and stdout+stderr of `cmd` in the sandbox (a non-zero exit is a result, not an error)."""
    try:
        r = sdk(handle).commands.run(cmd, timeout=60, **kw)
        return r.exit_code, r.stdout + r.stderr
    except CommandExitException as exc:
        return exc.exit_code, exc.stdout + exc.stderr


def _mounts_mentioning(text: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if text in line]


async def test_start_runs_envd_as_root_of_a_user_namespace(sandboxes: Started) -> None:
    h = await sandboxes.start()
    code, out = await asyncio.to_thread(run, h, "id -u; cat /proc/self/uid_map; hostname; cat /proc/1/cmdline")
    uid, mapping, hostname, cmdline = out.split("\n", 3)
    assert code == 0 and uid == "0" and mapping.split() == ["0", "100000", "65536"]
    assert hostname == h.sandbox_id and "sandhive.envd" in cmdline


async def test_stop_frees_everything(sandboxes: Started, runtime: ContainerRuntime, data_dir: Path) -> None:
    h = await sandboxes.start()
    sid = h.sandbox_id
    assert sid in network.existing_sandbox_netns() and _mounts_mentioning(sid)
    assert Path(f"/sys/fs/cgroup/memory/sandhive/{sid}").exists()
    await sandboxes.node.kill(h)
    sandboxes.handles.remove(h)
    assert sid not in network.existing_sandbox_netns()
    assert not _mounts_mentioning(sid)
    assert not Path(f"/sys/fs/cgroup/memory/sandhive/{sid}").exists()
    assert not (data_dir / "sandboxes" / sid).exists()
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
    assert "pytest" not in out and "runc" not in out
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


async def test_cannot_load_a_kernel_module_or_mount(sandboxes: Started) -> None:
    h = await sandboxes.start()
    code, out = await asyncio.to_thread(run, h, "echo x > /tmp/m.ko; insmod /tmp/m.ko")
    assert code != 0 and "not permitted" in out.lower()
    code, out = await asyncio.to_thread(run, h, "mkdir -p /mnt/t; mount -t tmpfs none /mnt/t")
    assert code != 0
    code, out = await asyncio.to_thread(run, h, "unshare -U true")
    assert code != 0  # no nested user namespaces


async def test_cannot_raise_its_cgroup_limits(sandboxes: Started) -> None:
    h = await sandboxes.start(memory_mb=128)
    code, out = await asyncio.to_thread(run, h, "echo 9999999999 > /sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert code != 0 and "Read-only" in out
    code, out = await asyncio.to_thread(run, h, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert out.strip() == str(128 * 1024 * 1024)
    host_view = Path(f"/sys/fs/cgroup/memory/sandhive/{h.sandbox_id}/memory.limit_in_bytes").read_text()
    assert host_view.strip() == str(128 * 1024 * 1024)


async def test_fork_bomb_is_contained(sandboxes: Started) -> None:
    h = await sandboxes.start()
    other = await sandboxes.start()
    await asyncio.to_thread(run, h, "for i in $(seq 6000); do sleep 300 & done 2>/dev/null; echo done")
    pids = int(Path(f"/sys/fs/cgroup/pids/sandhive/{h.sandbox_id}/pids.current").read_text())
    assert pids <= 4096  # the pids limit (or the memory limit, whichever comes first) held
    assert (await asyncio.to_thread(run, h, "echo alive"))[1] == "alive\n"  # envd outlived the bomb
    assert (await asyncio.to_thread(run, other, "echo alive"))[1] == "alive\n"


async def test_memory_hog_is_killed_inside(sandboxes: Started) -> None:
    h = await sandboxes.start(memory_mb=128)
    code, _ = await asyncio.to_thread(run, h, "head -c 600m /dev/zero | tail > /dev/null")
    assert code != 0
    assert (await asyncio.to_thread(run, h, "echo still here"))[1] == "still here\n"  # envd survived


async def test_disk_filler_stops_at_the_quota(sandboxes: Started) -> None:
    h = await sandboxes.start(disk_mb=32)
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
