"""What the action audit log costs a command (issue 18): `commands.run` round trips with and without audit.

Two live servers (container backend) run side by side, one with the audit log (the default) and one started
with `--no-audit`; the released e2b SDK runs `commands.run("true")` in one sandbox on each, in alternating blocks,
so both see the same load on a shared machine. With audit, the edge proxy parses the `Start` request and its
streamed start/end events, and the API queues two events that a background task writes to SQLite. The
`--no-audit` rows of the same run are the baseline. The target (issue 18): at most +10 % p50.

    .venv/bin/python -m bench.audit_bench [--runs 400] [--block 10]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator

from e2b import Sandbox

from bench.common import HEADER, machine, measure, row
from tests.api.rig import Server, container_server

TEAM = "audit-bench"


@contextlib.contextmanager
def sandbox_on(server: Server) -> Iterator[Sandbox]:
    key = server.key(TEAM)
    sbx = Sandbox.create(timeout=600, api_key=key, api_url=server.url, sandbox_url=server.url)
    try:
        yield sbx
    finally:
        sbx.kill()


def report(runs: int, block: int) -> list[str]:
    with container_server("audit-bench-on", TEAM, "--pool-size", "1") as on, \
            container_server("audit-bench-off", TEAM, "--pool-size", "1", "--no-audit") as off, \
            sandbox_on(on) as audited, sandbox_on(off) as plain:
        def run_in(sbx: Sandbox) -> object:
            return sbx.commands.run("true")

        measure(lambda: run_in(audited), 0, warmup=10)
        measure(lambda: run_in(plain), 0, warmup=10)
        with_audit: list[float] = []
        without: list[float] = []
        turn = 0
        while len(with_audit) < runs:  # alternating blocks, in ABBA order: load on the machine hits both alike
            first, second = (plain, audited) if turn % 2 == 0 else (audited, plain)
            for sbx in (first, second):
                (without if sbx is plain else with_audit).extend(measure(lambda s=sbx: run_in(s), block, warmup=0))
            turn += 1
        time.sleep(1.0)  # the audited server's queue is flushed every 0.5 s
        with on.client(on.key(TEAM)) as c:
            recorded = len(c.get("/sandhive/audit", params={"sandboxID": audited.sandbox_id, "action": "process.end",
                                                          "limit": 1000}).json())
    return [f"commands.run('true') through the released e2b SDK, live servers, container backend · {machine()}",
            "", HEADER,
            row("commands.run round trip, `--no-audit` (baseline)", without),
            row("commands.run round trip, with the audit log", with_audit, without),
            "", f"process.end events recorded for the audited sandbox: {recorded} (of {runs + 10} commands, "
                "at most 1000 read)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--block", type=int, default=10)
    args = parser.parse_args()
    print("\n".join(report(args.runs, args.block)))


if __name__ == "__main__":
    main()
