"""What the edge proxy adds to envd round trips: the same calls directly against envd and through the proxy.

    python -m bench.proxy_bench [--runs N]

envd and the proxy (`python -m sandhive.proxy`, uvicorn) run as separate processes on this host's loopback,
so the client, the proxy and envd do not share a GIL. Each proxied row's baseline is the direct row above it.
The exec round trip is a raw Connect `Start` of /bin/true streamed to its end (the SDK's `commands.run`
would add a login bash, which dwarfs everything here).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import httpx
from e2b import ConnectionConfig, Sandbox
from packaging.version import Version

from bench.common import HEADER, machine, measure, row
from sandhive.envd import ENVD_VERSION
from sandhive.rpc.process import process_connect, process_pb
from tests.helpers import free_port, stop_process_group, wait_for_health

SANDBOX_ID = "ibench"
TEN_MB = os.urandom(10 * 1024 * 1024)


def wait_for_proxy(url: str, headers: dict[str, str], proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Poll envd's /health through the proxy until it answers 204."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", headers=headers, timeout=1, trust_env=False).status_code == 204:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"proxy at {url} not ready after {timeout}s")


def sandbox(url: str, headers: dict[str, str]) -> Sandbox:
    return Sandbox(sandbox_id=SANDBOX_ID, sandbox_domain=None, envd_version=Version(ENVD_VERSION),
                   envd_access_token=None, traffic_access_token=None,
                   connection_config=ConnectionConfig(sandbox_url=url, api_key="x", extra_sandbox_headers=headers))


def report(envd_url: str, proxy_url: str, headers: dict[str, str], runs: int) -> list[str]:
    start = process_pb.StartRequest(process=process_pb.ProcessConfig(cmd="/bin/true"), stdin=False)
    direct_rpc = process_connect.ProcessClientSync(envd_url)
    proxied_rpc = process_connect.ProcessClientSync(proxy_url)
    exec_direct = measure(lambda: list(direct_rpc.start(start, headers=headers)), runs)
    exec_proxied = measure(lambda: list(proxied_rpc.start(start, headers=headers)), runs)
    with httpx.Client(trust_env=False) as client:
        health_direct = measure(lambda: client.get(f"{envd_url}/health", headers=headers), runs)
        health_proxied = measure(lambda: client.get(f"{proxy_url}/health", headers=headers), runs)
    path = f"/tmp/sandhive-proxy-bench-{os.getpid()}.bin"

    def io(sbx: Sandbox) -> None:
        sbx.files.write(path, TEN_MB)
        assert len(sbx.files.read(path, format="bytes")) == len(TEN_MB)

    io_runs = max(10, runs // 5)
    io_direct = measure(lambda: io(sandbox(envd_url, headers)), io_runs)
    io_proxied = measure(lambda: io(sandbox(proxy_url, headers)), io_runs)
    os.remove(path)
    return [
        f"envd and the edge proxy on the host, HTTP/1.1 on loopback, separate processes · {machine()}",
        "",
        HEADER,
        row("Connect Start('/bin/true') direct to envd, stream to its end", exec_direct),
        row("same, through the edge proxy", exec_proxied, exec_direct),
        row("GET /health direct to envd (httpx, keep-alive)", health_direct),
        row("same, through the edge proxy", health_proxied, health_direct),
        row("SDK files.write + files.read of 10 MB direct to envd", io_direct),
        row("same, through the edge proxy", io_proxied, io_direct),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    envd_port, proxy_port = free_port(), free_port()
    envd_url, proxy_url = f"http://127.0.0.1:{envd_port}", f"http://127.0.0.1:{proxy_port}"
    headers = {"E2b-Sandbox-Id": SANDBOX_ID, "E2b-Sandbox-Port": str(envd_port)}
    envd = subprocess.Popen([sys.executable, "-m", "sandhive.envd", "--host", "127.0.0.1", "--port", str(envd_port)],
                            start_new_session=True)
    proxy = subprocess.Popen([sys.executable, "-m", "sandhive.proxy", "--host", "127.0.0.1", "--port", str(proxy_port),
                              "--sandbox", f"{SANDBOX_ID}=127.0.0.1"], start_new_session=True)
    try:
        wait_for_health(envd_url, envd)
        wait_for_proxy(proxy_url, headers, proxy)
        lines = report(envd_url, proxy_url, headers, args.runs)
    finally:
        stop_process_group(proxy)
        stop_process_group(envd)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
