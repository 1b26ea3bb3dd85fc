"""The dashboard's sandbox list in headless Chromium (issue 18): time to first paint and until every row is in the
table, with 200 sandboxes against 1 (the baseline of the same run), plus the server's time for the list fragment.

A live server with no backend (the list reads the store alone, so rows written straight into the store list as
real ones would), Debian's /usr/bin/chromium driven by Playwright, one logged-in browser context, a fresh page per
run. `first paint` is the page's first-contentful-paint entry; `rows` is navigation start to the moment the
htmx-loaded table holds every row.

    .venv/bin/python -m bench.dashboard_bench [--runs 20] [--sandboxes 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from bench.common import HEADER, machine, row
from tests.api.rig import Server, insert_sandbox, start_server
from tests.dashboard.test_dashboard import ARGS, CHROMIUM

TEAM = "dashboard-bench"


def timings(page: Any, url: str, count: int, runs: int) -> tuple[list[float], list[float], list[float]]:
    paint, rows, fragment = [], [], []
    for i in range(runs + 2):  # two warm-up loads
        page.goto(url)
        page.wait_for_function(f"() => document.querySelectorAll('#rows tr[data-sandbox]').length >= {count}")
        done = page.evaluate("() => performance.now()")
        fcp = page.evaluate("() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime")
        start = time.perf_counter()
        page.request.get("/dashboard/sandboxes/rows")
        took = (time.perf_counter() - start) * 1000
        if i >= 2:
            paint.append(float(fcp or 0))
            rows.append(float(done))
            fragment.append(took)
    return paint, rows, fragment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--sandboxes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sandhive-dashboard-bench-") as tmp:
        server: Server = start_server(Path(tmp) / "data")
        try:
            key = server.key(TEAM)
            team = server.store.caller(key)
            assert team is not None
            insert_sandbox(server.store, team.team_id)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
                context = browser.new_context(base_url=server.url)
                page = context.new_page()
                page.goto("/dashboard/login")
                page.fill("#key", key)
                page.click("#login")
                page.wait_for_url("**/dashboard/sandboxes")
                one = timings(page, "/dashboard/sandboxes", 1, args.runs)
                for _ in range(args.sandboxes - 1):
                    insert_sandbox(server.store, team.team_id)
                many = timings(page, "/dashboard/sandboxes", args.sandboxes, args.runs)
                browser.close()
        finally:
            server.stop()
    n = args.sandboxes
    print(f"Dashboard sandbox list in headless Chromium · {machine()}\n")
    print(HEADER)
    print(row("first contentful paint, 1 sandbox", one[0]))
    print(row(f"first contentful paint, {n} sandboxes", many[0], one[0]))
    print(row("navigation to every row shown, 1 sandbox", one[1]))
    print(row(f"navigation to every row shown, {n} sandboxes", many[1], one[1]))
    print(row("list fragment (server, over HTTP), 1 sandbox", one[2]))
    print(row(f"list fragment (server, over HTTP), {n} sandboxes", many[2], one[2]))


if __name__ == "__main__":
    main()
