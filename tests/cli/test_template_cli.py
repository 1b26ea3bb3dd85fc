"""`sandhive template build|list|info|alias|delete` as a user runs them, against the live server of tests/cli."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import Cli

pytestmark = [pytest.mark.needs_backend, pytest.mark.timeout(900)]


def context(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "e2b.Dockerfile").write_text("FROM debian:bookworm-slim\nCOPY site/ /srv/site/\n"
                                         "RUN echo built-by-cli > /cli.txt\nWORKDIR /srv/site\n")
    (root / "site").mkdir(exist_ok=True)
    (root / "site" / "index.html").write_text("<h1>hi</h1>\n")
    (root / "site" / "draft.html").write_text("not yet\n")
    (root / ".dockerignore").write_text("site/draft.html\n")
    (root / "e2b.toml").write_text('template_id = "ignored-when-a-name-is-given"\ncpu_count = 1\nmemory_mb = 512\n')
    (root / "sandhive.toml").write_text('template_name = "cli-site"\n')
    return root


def test_build_then_list_info_alias_delete(cli: Cli, tmp_path: Path) -> None:
    ctx = context(tmp_path / "ctx")
    start = "sh -c 'echo up > /tmp/up; exec sleep 3600'"
    proc = cli("template", "build", "--path", str(ctx), "--start-cmd", start, "--ready-cmd", "test -f /tmp/up",
               timeout=600)
    assert proc.returncode == 0, proc.stderr
    template_id = proc.stdout.strip()  # the id alone on stdout: random, the name is sandhive.toml's template_name
    assert len(template_id) == 20 and template_id.isalnum()
    assert "STEP" in proc.stderr and f"Template {template_id} is ready" in proc.stderr

    listed = json.loads(cli.ok("template", "list", "--json"))
    row = next(t for t in listed if t["template_id"] == template_id)
    assert row["public"] is False
    assert row["cpu_count"] == 1 and row["memory_mb"] == 512 and row["aliases"] == ["cli-site"]  # from e2b.toml

    sandbox_id = cli.create("--template", "cli-site")
    shown = cli.ok("sandbox", "exec", sandbox_id, "--", "cat /cli.txt; pwd; ls /srv/site; cat /tmp/up")
    assert shown.split() == ["built-by-cli", "/srv/site", "index.html", "up"], shown  # the start command ran

    detail = json.loads(cli.ok("template", "info", "cli-site", "--json"))
    assert detail["start_cmd"] == start and detail["ready_cmd"] == "test -f /tmp/up" and detail["owned"]
    assert detail["default_workdir"] == "/srv/site" and detail["builds"][0]["status"] == "ready"
    assert "ready command  test -f /tmp/up" in cli.ok("template", "info", "cli-site")

    assert "aliases cli-site, cli-www" in cli.ok("template", "alias", "cli-site", "cli-www")
    assert json.loads(cli.ok("template", "info", "cli-www", "--json"))["template_id"] == template_id
    assert "cli/cli-site" in cli.ok("template", "publish", "cli-site")
    listed = json.loads(cli.ok("template", "list", "--json"))
    assert next(t for t in listed if t["template_id"] == template_id)["public"] is True
    assert "private again" in cli.ok("template", "unpublish", "cli-site")

    busy = cli("template", "delete", "cli-www")
    assert busy.returncode == 1 and "kill them first" in busy.stderr
    cli.ok("sandbox", "kill", sandbox_id)
    assert "aliases cli-site" in cli.ok("template", "alias", "cli-site", "--remove", "cli-www")
    assert "Deleted template cli-site" in cli.ok("template", "delete", "cli-site")
    gone = cli("template", "info", "cli-site")
    assert gone.returncode == 3 and "not found" in gone.stderr


def test_a_failing_build_names_the_step_and_shows_the_last_lines(cli: Cli, tmp_path: Path) -> None:
    ctx = tmp_path / "bad"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM debian:bookworm-slim\nRUN echo first-line-ok\n"
                                    "RUN echo going-down >&2 && exit 9\n")
    proc = cli("template", "build", "--path", str(ctx), "--name", "cli-broken", timeout=600)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "error: building cli-broken failed" in proc.stderr
    assert "RUN echo going-down >&2 && exit 9" in proc.stderr and "exit status 9" in proc.stderr
    tail = proc.stderr.split("last lines of the build log:")[-1]
    assert "going-down" in tail


def test_usage_errors(cli: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = cli("template", "build", "--path", str(empty))
    assert proc.returncode == 2 and "no e2b.Dockerfile or Dockerfile" in proc.stderr
    proc = cli("template", "build", "--path", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "not a directory" in proc.stderr
    (empty / "e2b.toml").write_text("cpu_count = 'two'\n")
    (empty / "Dockerfile").write_text("FROM debian:bookworm-slim\n")
    proc = cli("template", "build", "--path", str(empty))
    assert proc.returncode == 2 and "cpu_count must be a int" in proc.stderr
    (empty / "e2b.toml").unlink()
    proc = cli("template", "build", "--path", str(empty), "--name", "Bad Name")
    assert proc.returncode == 1 and "invalid template name" in proc.stderr
    proc = cli("template", "info", "no-such-template")
    assert proc.returncode == 3
    proc = cli("template", "delete", "base")
    assert proc.returncode in (1, 3)  # built on the host (403) or not built yet (404): never deleted
