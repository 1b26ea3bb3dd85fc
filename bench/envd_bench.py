"""envd round trips through the released e2b SDK, next to local baselines measured in the same run.

    python -m bench.envd_bench [--runs N]

envd runs on this host (no sandbox around it), so the figures are envd's own cost: the SDK's
`commands.run` is `/bin/bash -l -c <cmd>` behind a Connect stream, so its fair baseline is running
that same bash locally; `subprocess.run(["true"])` is the floor.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from e2b import ConnectionConfig, Sandbox
from packaging.version import Version

from bench.common import HEADER, machine, measure, row
from sandhive.envd import ENVD_VERSION
from sandhive.rpc.process import process_connect, process_pb
from tests.helpers import free_port, stop_process_group, wait_for_health

TEN_MB = os.urandom(10 * 1024 * 1024)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sandhive.envd", "--host", "127.0.0.1", "--port", str(port)],
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, proc)
        sbx = Sandbox(sandbox_id="bench", sandbox_domain=None, envd_version=Version(ENVD_VERSION),
                      envd_access_token=None, traffic_access_token=None,
                      connection_config=ConnectionConfig(debug=True, sandbox_url=url))
        lines = report(sbx, url, args.runs)
    finally:
        stop_process_group(proc)
    print("\n".join(lines))


def report(sbx: Sandbox, url: str, runs: int) -> list[str]:
    true_local = measure(lambda: subprocess.run(["true"], check=True), runs)
    rpc = process_connect.ProcessClientSync(url)
    start = process_pb.StartRequest(process=process_pb.ProcessConfig(cmd="/bin/true"), stdin=False)
    rpc_true = measure(lambda: list(rpc.start(start)), runs)
    bash_local = measure(lambda: subprocess.run(["/bin/bash", "-l", "-c", "true"], check=True), runs)
    run_true = measure(lambda: sbx.commands.run("true"), runs)
    path = "/tmp/sandhive-bench-10mb.bin"
    local_dir = tempfile.mkdtemp()

    def local_io() -> None:
        with open(os.path.join(local_dir, "f"), "wb") as f:
            f.write(TEN_MB)
        with open(os.path.join(local_dir, "f"), "rb") as f:
            assert len(f.read()) == len(TEN_MB)

    def envd_io() -> None:
        sbx.files.write(path, TEN_MB)
        assert len(sbx.files.read(path, format="bytes")) == len(TEN_MB)

    io_runs = max(10, runs // 5)
    local = measure(local_io, io_runs)
    remote = measure(envd_io, io_runs)
    os.remove(path)
    os.remove(os.path.join(local_dir, "f"))
    os.rmdir(local_dir)
    return [
        f"envd on the host, driven by the released e2b SDK over HTTP/1.1 on loopback · {machine()}",
        "",
        HEADER,
        row("baseline: subprocess.run(['true'])", true_local),
        row("Connect Start('/bin/true') via envd, stream to its end", rpc_true, true_local),
        row("baseline: subprocess.run(['/bin/bash','-l','-c','true'])", bash_local, true_local),
        row("SDK commands.run('true') (= bash -l -c true via envd)", run_true, bash_local),
        row("baseline: local 10 MB write + read", local),
        row("SDK files.write + files.read of 10 MB via envd", remote, local),
    ]


if __name__ == "__main__":
    main()
