"""Domain and header rules vs plain NAT (issue 16): connection setup and a 100 MB download, measured
inside a sandbox against a "fake internet" network namespace this bench creates (tests/lan.py; the same HTTP
server and nameserver as tests/hostile/test_egress_rules.py), never beyond this machine.

Three sandboxes of one live server (container backend): one without rules (the kernel's NAT fast path), one with
`deny_out: ["0.0.0.0/0"], allow_out: ["allowed.test"]`, whose connections to port 80 are judged in place (the
egress judge: first segments through a netfilter queue, then the kernel), and one with a header rule for
allowed.test, whose connections go through the egress filter's relay. All fetch the same URLs from the same
address in the same run.

    .venv/bin/python -m bench.egress_filter_bench [--runs 50] [--mb 100] [--backend container]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from e2b import Sandbox

from bench.common import HEADER, machine, row
from tests.api.rig import container_server
from tests.hostile.test_egress_rules import NAMES, WEB
from tests.lan import INTERNET, lan_namespace

# Inside the sandbox: `runs` small GETs (connect to the end of the response), then `repeat` downloads of `size`.
CLIENT = r"""
import json, socket, sys, time
address, runs, size, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def get(path):
    with socket.create_connection((address, 80), timeout=30) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n".encode())
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        got = 0
        while True:
            n = conn.recv_into(view)
            if not n:
                return got
            got += n
setup = []
for _ in range(runs + 3):
    start = time.perf_counter()
    get("/")
    setup.append((time.perf_counter() - start) * 1000)
seconds = []
for _ in range(repeat):
    start = time.perf_counter()
    got = get(f"/bytes/{size}")
    seconds.append(time.perf_counter() - start)
    assert got > size, got
print(json.dumps({"setup": setup[3:] if runs else [], "seconds": seconds}))
"""


def measure(sbx: Sandbox, address: str, runs: int, size: int, repeat: int) -> dict[str, list[float]]:
    sbx.files.write("/tmp/client.py", CLIENT)
    out = sbx.commands.run(f"python3 /tmp/client.py {address} {runs} {size} {repeat}", timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


def interleaved(sandboxes: dict[str, Sandbox], address: str, runs: int, size: int,
                repeat: int) -> dict[str, dict[str, list[float]]]:
    """Setup samples of each, then the downloads taking turns (the host's load, shared with other work, then
    weighs on all alike)."""
    got = {name: measure(sbx, address, runs, size, 0) for name, sbx in sandboxes.items()}
    for _ in range(repeat):
        for name, sbx in sandboxes.items():
            got[name]["seconds"] += measure(sbx, address, 0, size, 1)["seconds"]
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", default="container")
    args = parser.parse_args()
    size = args.mb * 1024 * 1024
    with lan_namespace(extra=(INTERNET,)) as internet, \
            tempfile.TemporaryDirectory(prefix="sandhive-egress-bench-") as certs:
        cert, key = Path(certs) / "cert.pem", Path(certs) / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-subj", "/CN=allowed.test", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        site = internet.addresses[1]
        internet.spawn([sys.executable, "-c", WEB, str(cert), str(key), internet.link_ip, site, *NAMES])
        with container_server("egress-bench", "bench", "--egress-resolver", internet.link_ip,
                              backend=args.backend) as server:
            key_ = server.key("bench")
            common = {"api_key": key_, "api_url": server.url, "sandbox_url": server.url, "timeout": 600}
            rules = {"allowed.test": [{"transform": {"headers": {"X-Api-Key": "bench"}}}]}
            sandboxes = {
                "plain": Sandbox.create(**common),  # type: ignore[arg-type]
                "judged": Sandbox.create(network={"deny_out": ["0.0.0.0/0"], "allow_out": ["allowed.test"]},
                                         **common),  # type: ignore[arg-type]
                "relayed": Sandbox.create(network={"rules": rules}, **common),  # type: ignore[arg-type]
            }
            try:
                got = interleaved(sandboxes, site, args.runs, size, args.repeat)
            finally:
                for sbx in sandboxes.values():
                    sbx.kill()
    rate = {name: [args.mb / s for s in values["seconds"]] for name, values in got.items()}
    best = {name: max(values) for name, values in rate.items()}
    median = {name: sorted(values)[len(values) // 2] for name, values in rate.items()}
    labels = {"plain": "plain NAT", "judged": "a domain rule, judged in place (allow_out: allowed.test)",
              "relayed": "a header rule, through the relay (rules: allowed.test)"}
    print(f"Domain and header rules vs plain NAT, {args.backend} backend, inside the sandbox · {machine()}\n")
    print(HEADER)
    print(row("connection setup + small GET, plain NAT", got["plain"]["setup"]))
    for name in ("judged", "relayed"):
        print(row(f"same, {labels[name]}", got[name]["setup"], got["plain"]["setup"]))
    print()
    print("| transfer | MB/s median | MB/s best | runs | median vs plain NAT |\n|---|---|---|---|---|")
    for name in ("plain", "judged", "relayed"):
        ratio = "—" if name == "plain" else f"{median[name] / median['plain']:.0%}"
        print(f"| {args.mb} MB download, {labels[name]} | {median[name]:.0f} | {best[name]:.0f} | {args.repeat} | "
              f"{ratio} |")


if __name__ == "__main__":
    main()
