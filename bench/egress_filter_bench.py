"""Domain rules through the egress filter vs plain NAT (issue 16): connection setup and a 100 MB download, measured
inside a sandbox against a "fake internet" network namespace this bench creates (tests/lan.py; the same HTTP
server and nameserver as tests/hostile/test_egress_rules.py), never beyond this machine.

Two sandboxes of one live server (container backend): one without rules (the kernel's NAT fast path) and one with
`deny_out: ["0.0.0.0/0"], allow_out: ["allowed.test"]`, whose connections to port 80 go through the filter. Both
fetch the same URLs from the same address in the same run.

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
from tests.lan import lan_namespace

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


def interleaved(plain: Sandbox, filtered: Sandbox, address: str, runs: int, size: int,
                repeat: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Setup samples of each, then the downloads alternating between them (the host's load, shared with other
    work, then weighs on both alike)."""
    base = measure(plain, address, runs, size, 0)
    through = measure(filtered, address, runs, size, 0)
    for _ in range(repeat):
        base["seconds"] += measure(plain, address, 0, size, 1)["seconds"]
        through["seconds"] += measure(filtered, address, 0, size, 1)["seconds"]
    return base, through


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", default="container")
    args = parser.parse_args()
    size = args.mb * 1024 * 1024
    with lan_namespace(extra=("203.0.113.{n}",)) as internet, \
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
            plain = Sandbox.create(**common)  # type: ignore[arg-type]
            filtered = Sandbox.create(network={"deny_out": ["0.0.0.0/0"], "allow_out": ["allowed.test"]},
                                      **common)  # type: ignore[arg-type]
            try:
                base, through = interleaved(plain, filtered, site, args.runs, size, args.repeat)
            finally:
                plain.kill()
                filtered.kill()
    rate = {name: [args.mb / s for s in got["seconds"]] for name, got in (("plain", base), ("filter", through))}
    best = {name: max(values) for name, values in rate.items()}
    median = {name: sorted(values)[len(values) // 2] for name, values in rate.items()}
    print(f"Egress filter vs plain NAT, {args.backend} backend, inside the sandbox · {machine()}\n")
    print(HEADER)
    print(row("connection setup + small GET, plain NAT", base["setup"]))
    print(row("same, through the egress filter (Host: allowed.test)", through["setup"], base["setup"]))
    print()
    print("| transfer | MB/s median | MB/s best | runs | median vs plain NAT |\n|---|---|---|---|---|")
    print(f"| {args.mb} MB download, plain NAT | {median['plain']:.0f} | {best['plain']:.0f} | {args.repeat} | — |")
    print(f"| {args.mb} MB download, through the egress filter | {median['filter']:.0f} | {best['filter']:.0f} | "
          f"{args.repeat} | {median['filter'] / median['plain']:.0%} |")


if __name__ == "__main__":
    main()
