"""The system image's module bundle: envd from the image imports its modules from one file, and ignores a bad one.

envd runs from the real image in a busybox-only rootfs, as in test_busybox_chroot. It is started through a
small wrapper that runs `sandhive.envd` as `-m` does, plus a thread that, when the test asks, writes down
how each loaded module was loaded. The released e2b SDK drives envd in between, so envd is known to work.
"""

from __future__ import annotations

import json
import marshal
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from importlib.util import MAGIC_NUMBER
from pathlib import Path

import pytest
from e2b import Sandbox

from sandhive.envd.module_bundle import FORMAT, MODULE_BUNDLE, SIGNATURE
from sandhive.images import system_image
from tests.helpers import free_port, stop_process_group
from tests.sysimage.test_busybox_chroot import _assert_nothing_left, make_busybox_rootfs, start_envd_in_chroot

pytestmark = pytest.mark.sysimage

SITE = f"{system_image.MOUNTPOINT}/{system_image.SITE_PACKAGES}"
BUNDLE_LOADER = "sandhive.envd.module_bundle.BundleLoader"
FILE_LOADER = "_frozen_importlib_external.SourceFileLoader"
DECLINED = "envd: module bundle not used, importing from files: "

# Runs envd as `python -m sandhive.envd` does; once /tmp/report-now exists, writes /tmp/modules.json.
WRAPPER = r"""
import os, runpy, sys, threading, time

def report():
    while not os.path.exists("/tmp/report-now"):
        time.sleep(0.02)
    import importlib.machinery, importlib.metadata, json
    import sandhive.envd.watcher  # imported lazily by envd (first watch): not in the bundle
    app = sys.modules["sandhive.envd.app"]
    from sandhive.envd.module_bundle import BundleFinder
    out = {"modules": {}, "uvicorn_version": importlib.metadata.version("uvicorn"),
           "app_code_file": app.EnvdApp.__init__.__code__.co_filename,
           "unused": [sorted(f._entries) for f in sys.meta_path if isinstance(f, BundleFinder)]}
    for name, module in list(sys.modules.items()):
        loader = getattr(getattr(module, "__spec__", None), "loader", None)
        if loader is not None:
            out["modules"][name] = {"loader": f"{type(loader).__module__}.{type(loader).__qualname__}",
                                    "source_loader": isinstance(loader, importlib.machinery.SourceFileLoader),
                                    "file": getattr(module, "__file__", None),
                                    "path": list(getattr(module, "__path__", None) or [])}
    with open("/tmp/modules.json.tmp", "w") as f:
        json.dump(out, f)
    os.rename("/tmp/modules.json.tmp", "/tmp/modules.json")

threading.Thread(target=report, daemon=True).start()
runpy.run_module("sandhive.envd", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def image() -> Path:
    """The system image for the current source tree, built once (the Debian layer is cached)."""
    for tool in ("mmdebstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install mmdebstrap util-linux coreutils)")
    if os.geteuid() != 0:
        pytest.skip("building and mounting the system image needs root")
    return system_image.build(log=lambda line: print(line, flush=True))


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    if not Path("/bin/busybox").is_file():
        pytest.skip("needs a static /bin/busybox (apt-get install busybox-static)")
    return make_busybox_rootfs(tmp_path / "rootfs")


@pytest.fixture
def image_copy(image: Path, tmp_path: Path) -> Iterator[Path]:
    """A hard-linked copy of the image whose bundle a test may replace (unlink first: the files are shared)."""
    copy = tmp_path / "image"
    subprocess.run(["cp", "-al", str(image), str(copy)], check=True)
    try:
        yield copy
    finally:
        shutil.rmtree(copy)


def image_python(image: Path, code: str) -> str:
    argv = [*system_image.loader_command(str(image)), str(image / system_image.PYTHON), "-I", "-B", "-c", code]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def run_envd(image: Path, rootfs: Path, tmp_path: Path) -> tuple[dict, str]:
    """Start envd from `image` in `rootfs`, run a command through the SDK, then return (its report, its log)."""
    port = free_port()
    argv, env = system_image.envd_command(system_image.MOUNTPOINT, port, host="127.0.0.1")
    assert argv[-6:-4] == ["-m", "sandhive.envd"], argv
    argv[-6:-4] = ["-c", WRAPPER]
    log_path = tmp_path / "envd.log"
    url = f"http://127.0.0.1:{port}"
    proc: subprocess.Popen | None = None
    try:
        proc = start_envd_in_chroot(image, rootfs, argv, env, url, log_path)
        sbx = Sandbox.create(debug=True, sandbox_url=url)
        assert sbx.commands.run("echo hi").stdout == "hi\n"
        (rootfs / "tmp/report-now").touch()
        report = rootfs / "tmp/modules.json"
        deadline = time.monotonic() + 30
        while not report.exists():
            assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()
            time.sleep(0.05)
        return json.loads(report.read_text()), log_path.read_text()
    finally:
        if proc is not None:
            stop_process_group(proc)
        _assert_nothing_left(rootfs)


def test_image_has_a_bundle_of_envds_modules(image: Path) -> None:
    bundle = image / MODULE_BUNDLE
    assert bundle.is_file() and bundle.stat().st_mode & 0o004, "the sandbox's users must be able to read it"
    # Read back by the image's own Python, with envd's own header check.
    out = image_python(image, f"""
import json
from sandhive.envd import module_bundle as mb
info, entries = mb.decode(open({str(bundle)!r}, "rb").read())
print(json.dumps({{"info": info, "names": sorted(entries), "files": [e[1] for e in entries.values()]}}))
""")
    found = json.loads(out)
    assert found["info"]["image_key"] == image.name.removeprefix("image-")
    assert found["info"]["format"] == FORMAT
    names = set(found["names"])
    # envd's own modules, its stack, and what uvicorn picks only when it starts serving.
    for name in ("sandhive.envd.app", "sandhive.envd.process_service", "sandhive.rpc.process.process_pb",
                 "uvicorn", "uvicorn.protocols.http.httptools_impl", "uvicorn.lifespan.on", "uvicorn.loops.asyncio",
                 "starlette.routing", "asyncio.base_events", "json"):
        assert name in names, name
    # Not C extensions, not what envd loads lazily, and only the image's own files (relative paths).
    assert "httptools.parser.parser" not in names and "sandhive.envd.watcher" not in names
    assert all(not f.startswith("/") and not f.startswith("..") and f.endswith(".py") for f in found["files"])
    assert len(names) > 200


def test_envd_from_the_image_imports_through_the_bundle(image: Path, rootfs: Path, tmp_path: Path) -> None:
    report, log = run_envd(image, rootfs, tmp_path)
    modules = report["modules"]
    assert DECLINED not in log
    # The bundle holds what envd uses: little is left once it has served /health and a command. (`-m` runs
    # `sandhive.envd.__main__` as `__main__`, so its entry stays.)
    [unused] = report["unused"]
    assert len(unused) <= 3, unused
    for name, file in (("uvicorn", f"{SITE}/uvicorn/__init__.py"),
                       ("sandhive.envd.app", f"{SITE}/sandhive/envd/app.py"),
                       ("uvicorn.protocols.http.httptools_impl", f"{SITE}/uvicorn/protocols/http/httptools_impl.py"),
                       ("json", f"{system_image.MOUNTPOINT}/usr/lib/python3.11/json/__init__.py")):
        assert modules[name]["loader"] == BUNDLE_LOADER, (name, modules[name])
        assert modules[name]["source_loader"], name
        assert modules[name]["file"] == file
    assert modules["uvicorn"]["path"] == [f"{SITE}/uvicorn"]
    # Code objects name the file where it is in the sandbox, not where the image was built (tracebacks).
    assert report["app_code_file"] == f"{SITE}/sandhive/envd/app.py"
    assert report["uvicorn_version"]  # importlib.metadata reads the real dist-info next to the package
    # The modules loaded before the bundle (envd's package, the bundle code) and those not in it: from files.
    assert modules["sandhive.envd.module_bundle"]["loader"] == FILE_LOADER
    assert modules["sandhive.envd.watcher"]["loader"] == FILE_LOADER
    assert modules["sandhive.envd.watcher"]["file"] == f"{SITE}/sandhive/envd/watcher.py"
    assert sum(m["loader"] == BUNDLE_LOADER for m in modules.values()) > 200


def _wrong_magic(data: bytes) -> bytes:
    start = len(SIGNATURE)
    return data[:start] + bytes([data[start] ^ 0xFF]) + data[start + 1:]


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _other_python(data: bytes) -> bytes:
    """Same bytecode magic, another build of Python (e.g. 3.11.7 against the image's 3.11.2)."""
    start = len(SIGNATURE) + len(MAGIC_NUMBER)
    info, entries = marshal.loads(data[start:])
    return data[:start] + marshal.dumps(({**info, "python": "3.11.99 (elsewhere)"}, entries))


def _not_a_bundle(data: bytes) -> bytes:
    return b"PK\x03\x04" + data[4:]


@pytest.mark.parametrize(("spoil", "reason"), [(_wrong_magic, "written for another Python (bytecode magic"),
                                               (_other_python, "written for python '3.11.99 (elsewhere)'"),
                                               (_truncated, "unreadable"),
                                               (_not_a_bundle, "not an envd module bundle"),
                                               (None, "cannot read")])
def test_a_bad_or_missing_bundle_is_ignored(image_copy: Path, rootfs: Path, tmp_path: Path, spoil, reason: str) -> None:
    bundle = image_copy / MODULE_BUNDLE
    data = bundle.read_bytes()
    bundle.unlink()  # a hard link into the real image: never write through it
    if spoil is not None:
        bundle.write_bytes(spoil(data))
    report, log = run_envd(image_copy, rootfs, tmp_path)
    declined = [line for line in log.splitlines() if line.startswith(DECLINED)]
    assert len(declined) == 1 and reason in declined[0], log
    modules = report["modules"]
    assert not any(m["loader"] == BUNDLE_LOADER for m in modules.values())
    assert modules["uvicorn"]["loader"] == FILE_LOADER
    assert modules["sandhive.envd.app"]["file"] == f"{SITE}/sandhive/envd/app.py"
