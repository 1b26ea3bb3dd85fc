"""envd on the host, driven by the released e2b SDK.

envd runs in a private mount namespace whose /etc/passwd and /etc/group add the sandbox user `user`,
whose root dotfiles are empty (NAMESPACE_SCRIPT), and whose /home and /small are fresh tmpfs mounts (/small is
2 MiB, for disk-full tests), so the tests need root but change nothing on the host and leave no mount behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2b import AsyncSandbox, ConnectionConfig, Sandbox
from packaging.version import Version

from sandhive.envd import ENVD_VERSION
from tests.helpers import free_port, stop_process_group, wait_for_health

USER_UID = 2000

# The host's own root dotfiles stay out of the commands' login shells (`bash -l`): here they run `pyenv init` and
# `pyenv rehash`, which waits a minute on a lock that a killed shell left behind, and every later command as root
# timed out (a test that ends its commands early can leave it so).
NAMESPACE_SCRIPT = r"""
set -e
mount --bind "$WORK/passwd" /etc/passwd
mount --bind "$WORK/group" /etc/group
for dotfile in /root/.bashrc /root/.profile /root/.bash_profile /root/.bash_login; do
    if [ -f "$dotfile" ]; then mount --bind "$WORK/empty" "$dotfile"; fi
done
mount -t tmpfs -o mode=0755 tmpfs /home
mkdir -p /home/user && chown {uid}:{uid} /home/user
mkdir -p /small && mount -t tmpfs -o size=2m tmpfs /small && chmod 1777 /small
exec "$PYTHON" -m sandhive.envd --host 127.0.0.1 --port "$PORT"
"""


@dataclass
class Envd:
    url: str
    proc: subprocess.Popen

    def sdk(self, token: str | None = None) -> Sandbox:
        """A sync SDK sandbox bound to this envd, gated at the envd version we report."""
        return Sandbox(**self._opts(token))

    def async_sdk(self, token: str | None = None) -> AsyncSandbox:
        return AsyncSandbox(**self._opts(token))

    def _opts(self, token: str | None) -> dict:
        return dict(sandbox_id="envdtest", sandbox_domain=None, envd_version=Version(ENVD_VERSION),
                    envd_access_token=token, traffic_access_token=None,
                    connection_config=ConnectionConfig(
                        debug=True, sandbox_url=self.url,
                        extra_sandbox_headers={"X-Access-Token": token} if token else None))


def start_envd(tmp: Path) -> Envd:
    if os.geteuid() != 0:
        pytest.skip("envd tests need root (a private mount namespace with a sandbox user)")
    if not shutil.which("unshare"):
        pytest.skip("util-linux unshare is missing")
    passwd = Path("/etc/passwd").read_text().rstrip("\n") + f"\nuser:x:{USER_UID}:{USER_UID}::/home/user:/bin/bash\n"
    group = Path("/etc/group").read_text().rstrip("\n") + f"\nuser:x:{USER_UID}:\n"
    (tmp / "passwd").write_text(passwd)
    (tmp / "group").write_text(group)
    (tmp / "empty").write_text("")
    port = free_port()
    env = {**os.environ, "WORK": str(tmp), "PYTHON": sys.executable, "PORT": str(port)}
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", NAMESPACE_SCRIPT.format(uid=USER_UID)],
        env=env, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, proc)
    except BaseException:
        stop_process_group(proc)
        raise
    return Envd(url, proc)


@pytest.fixture(scope="package")
def envd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envd]:
    server = start_envd(tmp_path_factory.mktemp("envd"))
    yield server
    stop_process_group(server.proc)


@pytest.fixture(scope="package")
def sbx(envd: Envd) -> Sandbox:
    return envd.sdk()


@pytest.fixture
def asbx(envd: Envd) -> AsyncSandbox:
    return envd.async_sdk()


@pytest.fixture
def workdir(sbx: Sandbox, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh directory inside envd's namespace for one test."""
    path = f"/tmp/sandhive-test-{request.node.name[:40]}-{os.getpid()}"
    sbx.commands.run(f"rm -rf {path} && mkdir -p {path} && chmod 777 {path}")
    yield path
    sbx.commands.run(f"rm -rf {path}")
