"""The web dashboard in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright; no browser is
downloaded) against a live `sandhive serve` with container sandboxes, the released e2b SDK on the other side:
log in with a key, see an SDK-created sandbox appear without a reload, type `echo hi` into its terminal and read
`hi`, see its CPU chart fill with points, upload a file and read it back through the SDK, kill it from the UI.
Another team's key sees none of it; a state change without the session's CSRF token is refused.

A screenshot of each page is saved under $SANDHIVE_TEST_ARTIFACTS (default tests/artifacts, ignored by git).
The tests run in file order on one module-scoped sandbox (the kill comes last). Every wait is on a condition.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2b import Sandbox

from sandhive.api.dashboard import assets
from tests.api.rig import Server, container_server, create_key
from tests.helpers import wait_until

pytestmark = [pytest.mark.needs_backend, pytest.mark.one_backend, pytest.mark.timeout(600)]
CHROMIUM = "/usr/bin/chromium"
TEAM, OTHER = "dashboard", "dashboard-other"
WAIT_MS = 60_000
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server"]


def artifacts() -> Path:
    root = Path(os.environ.get("SANDHIVE_TEST_ARTIFACTS") or Path(__file__).parent.parent / "artifacts")
    path = root / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


def shot(page: Any, name: str) -> None:
    path = artifacts() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


@pytest.fixture(scope="module")
def playwright_api() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        print(f"skipping the dashboard's browser tests: chromium is not installed ({CHROMIUM})")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright cannot be imported: it is in the `test` extras")
    if not assets.installed():
        pytest.fail("the dashboard's npm assets are missing: run `make dashboard-assets`")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright_api: Any) -> Iterator[Any]:
    # Playwright gives each launch a fresh temporary --user-data-dir of its own (and refuses one in `args`).
    browser = playwright_api.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS,
                                             env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()})
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope="module")
def live(browser: Any) -> Iterator[Server]:
    with container_server("dashboard", TEAM, "--metrics-interval", "1") as server:
        yield server


@pytest.fixture(scope="module")
def key(live: Server) -> str:
    return live.key(TEAM)


@pytest.fixture(scope="module")
def sandbox(live: Server, key: str) -> Iterator[Sandbox]:
    sbx = Sandbox.create(timeout=300, api_key=key, api_url=live.url, sandbox_url=live.url)
    try:
        yield sbx
    finally:
        with contextlib.suppress(Exception):  # already killed by the UI test
            sbx.kill()


def login(browser: Any, live: Server, key: str) -> Any:
    context = browser.new_context(base_url=live.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto("/dashboard")
    assert page.url.endswith("/dashboard/login")
    page.fill("#key", key)
    page.click("#login")
    page.wait_for_url(re.compile(r"/dashboard/sandboxes$"))
    return page


@pytest.fixture(scope="module")
def page(browser: Any, live: Server, key: str) -> Iterator[Any]:
    page = login(browser, live, key)
    try:
        yield page
    finally:
        page.context.close()


def test_login_sets_a_strict_httponly_session_cookie(page: Any) -> None:
    cookies = page.context.cookies()
    assert len(cookies) == 1, cookies
    cookie = cookies[0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
    assert not any(c["value"].startswith("e2b_") for c in cookies)  # the key itself never reaches the browser


def test_a_wrong_key_is_refused(browser: Any, live: Server) -> None:
    context = browser.new_context(base_url=live.url)
    try:
        p = context.new_page()
        p.goto("/dashboard/login")
        p.fill("#key", "e2b_" + "0" * 40)
        p.click("#login")
        p.wait_for_selector("#login-error", timeout=WAIT_MS)
        assert context.cookies() == []
        shot(p, "login")
    finally:
        context.close()


def test_a_sandbox_created_through_the_sdk_appears_without_a_reload(page: Any, live: Server, key: str) -> None:
    page.goto("/dashboard/sandboxes")
    page.wait_for_selector("#rows tr")
    sbx = Sandbox.create(timeout=120, api_key=key, api_url=live.url, sandbox_url=live.url)
    try:
        row = page.wait_for_selector(f'tr[data-sandbox="{sbx.sandbox_id}"]')
        assert "running" in row.inner_text()
        shot(page, "sandboxes")
    finally:
        sbx.kill()
    page.wait_for_selector(f'tr[data-sandbox="{sbx.sandbox_id}"]', state="detached")


def test_terminal_runs_echo_hi(page: Any, sandbox: Sandbox) -> None:
    page.goto(f"/dashboard/sandboxes/{sandbox.sandbox_id}")
    page.wait_for_selector('#terminal[data-state="open"]')
    page.wait_for_function("() => document.querySelector('#terminal .xterm-rows').innerText.includes('$')")
    page.click("#terminal")
    page.keyboard.type("echo hi\n")
    page.wait_for_function(
        "() => document.querySelector('#terminal .xterm-rows').innerText.split('\\n').some(l => l.trim() === 'hi')")


def test_terminal_follows_the_window_size(page: Any, sandbox: Sandbox) -> None:
    """The terminal is fitted again when the window changes, and the shell is told the new size."""
    # Resize while the shell waits at its prompt: readline rewrites the size it read as it prepares each line,
    # so a resize landing in between would be undone (sdk/pty.py says the same of the SDK's resize).
    page.wait_for_function(
        "() => { const l = document.querySelector('#terminal .xterm-rows').innerText.split('\\n');"
        " const i = l.findIndex(x => x.trim() === 'hi'); return i >= 0 && l.slice(i + 1).some(x => x.includes('$')); }")
    page.set_viewport_size({"width": 700, "height": 900})
    page.wait_for_function("() => Number(document.querySelector('#terminal').dataset.cols) < 90")  # refitted
    page.keyboard.type("stty size\n")  # after the resize message on the same socket, so its answer is the new size
    page.wait_for_function(
        "() => document.querySelector('#terminal .xterm-rows').innerText.split('\\n')"
        ".some(l => /^\\d+ \\d+$/.test(l.trim()) && Number(l.trim().split(' ')[1]) < 90)")
    page.set_viewport_size({"width": 1280, "height": 900})


def test_cpu_chart_renders_with_data_points(page: Any, sandbox: Sandbox) -> None:
    page.goto(f"/dashboard/sandboxes/{sandbox.sandbox_id}")
    page.wait_for_function("() => Number(document.querySelector('#chart-cpu').dataset.points) >= 2")
    assert page.query_selector("#chart-cpu canvas") is not None
    page.wait_for_selector('#terminal[data-state="open"]')
    shot(page, "sandbox")


def test_upload_in_the_file_browser_reads_back_through_the_sdk(page: Any, sandbox: Sandbox) -> None:
    page.goto(f"/dashboard/sandboxes/{sandbox.sandbox_id}")
    folder = tempfile.mkdtemp(prefix="sandhive-dashboard-upload-")
    try:
        payload = f"uploaded from the dashboard {secrets.token_hex(8)}\n"
        local = Path(folder) / "hello-dashboard.txt"
        local.write_text(payload)
        page.set_input_files("#upload-file", str(local))
        page.click("#upload")
        page.wait_for_selector("#files td.file:text-is('hello-dashboard.txt')")
        assert sandbox.files.read("/home/user/hello-dashboard.txt") == payload
        with page.expect_download() as download:
            page.click("#files a[download]:near(td.file:text-is('hello-dashboard.txt'))")
        saved = Path(folder) / "back.txt"
        download.value.save_as(saved)
        assert saved.read_text() == payload
        # the audit trail panel shows the terminal session and the upload (docs/audit.md)
        page.wait_for_function("() => { const t = document.querySelector('#audit').innerText;"
                               " return t.includes('pty.start') && t.includes('hello-dashboard.txt'); }")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_state_change_without_the_csrf_token_is_refused(page: Any, live: Server, sandbox: Sandbox) -> None:
    page.goto("/dashboard/sandboxes")
    no_token = page.request.post(f"/dashboard/sandboxes/{sandbox.sandbox_id}/kill", form={"x": "1"})
    assert no_token.status == 403, no_token.text()
    wrong = page.request.post(f"/dashboard/sandboxes/{sandbox.sandbox_id}/kill",
                              headers={"X-CSRF-Token": "not-the-token"})
    assert wrong.status == 403
    assert page.request.post("/dashboard/keys").status == 403
    token = json.loads(page.get_attribute("body", "hx-headers"))["X-CSRF-Token"]
    foreign = page.request.post(f"/dashboard/sandboxes/{sandbox.sandbox_id}/kill",
                                headers={"X-CSRF-Token": token, "Origin": "http://evil.example"})
    assert foreign.status == 403  # the right token, sent from another site's page
    assert sandbox.is_running()


def test_another_team_sees_none_of_it(browser: Any, live: Server, sandbox: Sandbox) -> None:
    page = login(browser, live, live.key(OTHER))
    try:
        page.wait_for_selector("#rows tr.empty")
        assert sandbox.sandbox_id not in page.content()
        for path in ("", "/metrics.json", "/logs", "/files/download?path=/etc/hostname"):
            answer = page.request.get(f"/dashboard/sandboxes/{sandbox.sandbox_id}{path}")
            assert answer.status == 404, (path, answer.status)
        files = page.request.get(f"/dashboard/sandboxes/{sandbox.sandbox_id}/files?path=/home/user")
        assert "hello-dashboard" not in files.text()
        csrf = page.get_attribute("#terminal", "data-csrf") if page.query_selector("#terminal") else None
        assert csrf is None
        token = json.loads(page.get_attribute("body", "hx-headers"))["X-CSRF-Token"]  # its own session's token
        kill = page.request.post(f"/dashboard/sandboxes/{sandbox.sandbox_id}/kill", headers={"X-CSRF-Token": token})
        assert "done" not in kill.text()
        assert page.request.get("/dashboard/nodes").status == 403  # not an admin key
        assert sandbox.is_running()
    finally:
        page.context.close()


def test_the_terminal_socket_needs_the_same_origin_and_the_token(page: Any, live: Server, sandbox: Sandbox) -> None:
    """Cross-site WebSocket hijacking: the session cookie alone opens no shell."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    page.goto("/dashboard/sandboxes")
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies())
    csrf = json.loads(page.get_attribute("body", "hx-headers"))["X-CSRF-Token"]
    url = live.url.replace("http://", "ws://") + f"/dashboard/sandboxes/{sandbox.sandbox_id}/terminal"
    for query, origin in ((f"?csrf={csrf}", "http://evil.example"), ("", live.url), ("?csrf=wrong", live.url)):
        with pytest.raises(InvalidStatus):
            connect(url + query, origin=origin, additional_headers={"Cookie": cookie}, open_timeout=30)  # type: ignore[arg-type]
    with connect(url + f"?csrf={csrf}", origin=live.url, additional_headers={"Cookie": cookie},  # type: ignore[arg-type]
                 open_timeout=30) as ws:
        ws.send(json.dumps({"type": "input", "data": "echo sock-$((6*7))\n"}))
        seen = b""
        while b"sock-42" not in seen:
            seen += ws.recv(timeout=30)  # type: ignore[operator]


def test_templates_keys_and_admin_pages(browser: Any, live: Server, page: Any) -> None:
    page.goto("/dashboard/templates")
    page.wait_for_selector("text=base")
    shot(page, "templates")
    page.goto("/dashboard/keys")
    before = len(page.query_selector_all("tr[data-prefix]"))
    page.click("#create-key")
    new_key = page.inner_text("#new-key")
    assert new_key.startswith("e2b_") and len(page.query_selector_all("tr[data-prefix]")) == before + 1
    shot(page, "keys")
    row = f'tr[data-prefix="{new_key[:12]}"]'
    page.click(f"{row} button.revoke")
    page.wait_for_selector(f"{row} td:text-is('revoked')")
    admin = login(browser, live, create_key(live.data_dir, "dashboard-operator", "--admin"))
    try:
        admin.goto("/dashboard/nodes")
        admin.wait_for_selector("#pools")
        assert "container" in admin.inner_text("#nodes")
        shot(admin, "nodes")
    finally:
        admin.context.close()


def test_pause_and_resume_from_the_ui(page: Any, live: Server, sandbox: Sandbox) -> None:
    """Where the backend can pause (its /health lists pause modes), Pause and Resume move the row's state;
    elsewhere the refusal is shown, and the sandbox runs on."""
    page.goto("/dashboard/sandboxes")
    row = f'tr[data-sandbox="{sandbox.sandbox_id}"]'
    page.click(f"{row} button.pause")
    with live.client() as c:
        can_pause = bool(c.get("/health").json()["persistence"]["pauseModes"])
    if not can_pause:
        page.wait_for_selector("#flash .error")
        assert sandbox.is_running()
        return
    page.wait_for_selector(f'{row}[data-state="paused"]', timeout=120_000)
    page.click(f"{row} button.resume")
    page.wait_for_selector(f'{row}[data-state="running"]', timeout=120_000)
    assert sandbox.commands.run("echo back").stdout.strip() == "back"


def test_kill_from_the_ui(page: Any, live: Server, key: str, sandbox: Sandbox) -> None:
    page.goto("/dashboard/sandboxes")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click(f'tr[data-sandbox="{sandbox.sandbox_id}"] button.kill')
    page.wait_for_selector(f'tr[data-sandbox="{sandbox.sandbox_id}"]', state="detached")
    wait_until(lambda: not sandbox.is_running(), 60, "the sandbox killed from the UI to be gone")
