"""`sandhive auth login` writes the config file (0600) and every later command reads it; flags and variables win."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import pytest

from tests.api.rig import Server
from tests.cli.conftest import clean_env, run
from tests.helpers import free_port

pytestmark = pytest.mark.needs_backend


def test_login_writes_a_private_config_that_later_commands_use(live: Server, key: str, tmp_path: Path) -> None:
    env = clean_env(tmp_path)  # HOME and XDG_CONFIG_HOME in tmp_path, no SANDHIVE_*/E2B_* variables
    proc = run("auth", "login", "--url", live.url, "--api-key", key, env=env)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / ".config" / "sandhive" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert tomllib.loads(path.read_text()) == {"url": live.url, "api_key": key}
    listed = run("sandbox", "list", "--json", env=env)
    assert listed.returncode == 0 and isinstance(json.loads(listed.stdout), list)


def test_home_config_without_xdg(live: Server, key: str, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    del env["XDG_CONFIG_HOME"]
    assert run("auth", "login", "--url", live.url, "--api-key", key, env=env).returncode == 0
    assert (tmp_path / ".config" / "sandhive" / "config.toml").exists()
    env["XDG_CONFIG_HOME"] = str(tmp_path / "elsewhere")
    assert run("auth", "login", "--url", live.url, "--api-key", key, env=env).returncode == 0
    assert (tmp_path / "elsewhere" / "sandhive" / "config.toml").exists()


def test_a_refused_key_is_not_saved(live: Server, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    proc = run("auth", "login", "--url", live.url, "--api-key", "e2b_" + "0" * 40, env=env)
    assert proc.returncode == 4
    assert not (tmp_path / ".config" / "sandhive" / "config.toml").exists()
    assert run("auth", "login", "--url", live.url, env=env).returncode == 2  # no key, and no terminal to ask on


def test_flags_beat_variables_beat_the_file(live: Server, key: str, tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = clean_env(tmp_path)
    assert run("auth", "login", "--url", nowhere, "--api-key", "e2b_wrong", "--no-verify", env=env).returncode == 0
    assert run("sandbox", "list", env=env).returncode == 5  # the file's URL
    assert run("sandbox", "list", "--url", live.url, env=env).returncode == 4  # flag URL, the file's key
    assert run("sandbox", "list", "--url", live.url, "--api-key", key, env=env).returncode == 0
    assert run("sandbox", "list", env={**env, "SANDHIVE_API_URL": live.url, "SANDHIVE_API_KEY": key}).returncode == 0
    assert run("sandbox", "list", env={**env, "E2B_API_URL": live.url, "E2B_API_KEY": key}).returncode == 0
    both = {**env, "SANDHIVE_API_URL": live.url, "SANDHIVE_API_KEY": key, "E2B_API_KEY": "e2b_wrong"}
    assert run("sandbox", "list", env=both).returncode == 0  # SANDHIVE_* before E2B_*
    assert run("sandbox", "list", "--api-key", "e2b_wrong", env=both).returncode == 4  # the flag before both
