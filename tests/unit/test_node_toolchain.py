"""The node toolchain's trixie sources and criu wrapper, without building anything (no root, no network)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sandhive.images import node_toolchain


def test_trixie_sources_reuse_the_hosts_mirror_and_keyring(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    key = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
    assert node_toolchain.trixie_sources(tmp_path) == [
        f"deb {key} http://mirror.example/debian trixie main",
        f"deb {key} http://mirror.example/debian trixie-updates main",
        f"deb {key} http://mirror.example/debian-security trixie-security main",
    ]


def test_criu_wrapper_execs_the_loader_with_shim_and_config(tmp_path: Path) -> None:
    """runc execs the wrapper as `criu swrk 3`: it must pass every argument on and default the config."""
    final = tmp_path / "image-x"
    node_toolchain._write_wrapper(tmp_path, final, "bin/w", node_toolchain.CRIU, criu=True)
    wrapper = tmp_path / "bin/w"
    # Run the script with `exec` swapped for `echo` to see the argv and environment it would exec with.
    script = wrapper.read_text().replace("exec ", 'echo "$CRIU_CONFIG_FILE" ')
    out = subprocess.run(["sh", "-c", script, "criu", "swrk", "3"], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(final / node_toolchain.CRIU_CONFIG), str(final / node_toolchain.LOADER),
                           "--preload", str(final / node_toolchain.SOCKOPT_SHIM), "--library-path",
                           f"{final}/lib/x86_64-linux-gnu:{final}/usr/lib/x86_64-linux-gnu",
                           str(final / node_toolchain.CRIU), "swrk", "3"]
    env = {"CRIU_CONFIG_FILE": "/own.conf", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(["sh", "-c", script, "criu"], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split()[0] == "/own.conf"
