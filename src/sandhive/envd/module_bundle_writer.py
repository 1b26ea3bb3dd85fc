"""Write the system image's module bundle (see module_bundle): a build step, run by the image's own Python.

    <image python> -I -B -m sandhive.envd.module_bundle_writer OUT --image-key KEY

Which modules: this starts envd for real (its `main`, on a free loopback port) and, once envd has
answered its first `GET /health`, takes every module then loaded from one of the image's source
files. That is what a sandbox's envd imports before the node sees it healthy, uvicorn's lazily
chosen protocol, loop and lifespan modules included, and it stays so as envd's code changes, with
no list to keep. Modules a real start has loaded before the bundle is installed (the interpreter's,
runpy's) are in it too; `install` drops those entries (see module_bundle).

It must run with the image's Python, from the image's own tree: marshal and bytecode are per Python
version, and paths are stored relative to the image root that Python's prefix gives.
"""

from __future__ import annotations

import argparse
import contextlib
import marshal
import os
import signal
import socket
import sys
import threading
import time
from importlib.machinery import SourceFileLoader
from types import ModuleType

from . import module_bundle
from .module_bundle import Entry

HEALTH_TIMEOUT = 60.0  # seconds for envd to answer its first /health (the build machine may be busy)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandhive.envd.module_bundle_writer", description=__doc__)
    parser.add_argument("out", help="the bundle file to write (inside the image: module_bundle.MODULE_BUNDLE)")
    parser.add_argument("--image-key", required=True, help="the image's cache key, recorded in the header")
    args = parser.parse_args(argv)
    root = module_bundle.image_root()
    if root is None:
        print(f"{parser.prog}: run this with the system image's own python (prefix <image>/usr)", file=sys.stderr)
        return 2
    modules = modules_at_first_health()
    entries = collect(modules, root)
    data = module_bundle.encode(entries, args.image_key)
    tmp = f"{args.out}.tmp"
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.out)
    finder = module_bundle.BundleFinder.load(args.out, root)  # what envd will do: the header must pass
    print(f"module bundle: {len(finder)} modules, {len(data) // 1024} KiB: {args.out}")
    return 0


def modules_at_first_health() -> dict[str, ModuleType]:
    """Run envd's main in this process until it answers `/health`; the modules loaded at that moment."""
    from . import __main__ as envd_main

    port = _free_port()
    seen: dict[str, ModuleType] = {}
    failure: list[str] = []

    def probe() -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while time.monotonic() < deadline:
            if _health(port):
                seen.update(sys.modules)
                break
            time.sleep(0.02)
        else:
            failure.append(f"envd did not answer /health on port {port} within {HEALTH_TIMEOUT:.0f}s")
        os.kill(os.getpid(), signal.SIGINT)  # uvicorn stops gracefully, then re-raises it: KeyboardInterrupt

    threading.Thread(target=probe, daemon=True, name="health-probe").start()
    with contextlib.suppress(KeyboardInterrupt):
        envd_main.main(["--host", "127.0.0.1", "--port", str(port)])
    if failure or not seen:
        raise SystemExit(f"module bundle: {failure[0] if failure else 'envd stopped before it was healthy'}")
    seen.pop(envd_main.__name__)  # it installs the bundle, so it always comes from its file (`-m` runs it as __main__)
    return seen


def collect(modules: dict[str, ModuleType], root: str) -> dict[str, Entry]:
    """Entries for the modules loaded from a source file under `root` (not built-in, frozen or C extensions)."""
    entries: dict[str, Entry] = {}
    for name, module in sorted(modules.items()):
        spec = getattr(module, "__spec__", None)
        if spec is None or spec.name != name or type(spec.loader) is not SourceFileLoader or not spec.origin:
            continue
        paths = [spec.origin, *(spec.submodule_search_locations or ())]
        relative = [os.path.relpath(path, root) for path in paths]
        if any(path.startswith(os.pardir) or os.path.isabs(path) for path in relative):
            continue  # not the image's: nothing envd would find there inside a sandbox
        code = spec.loader.get_code(name)  # the image's .pyc, compiled by the build just before
        entries[name] = (spec.submodule_search_locations is not None, relative[0], tuple(relative[1:]),
                         marshal.dumps(code))
    return entries


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(port: int) -> bool:
    # A plain connect, not create_connection: its getaddrinfo would import the idna codec, which envd never does.
    try:
        with socket.socket() as s:
            s.settimeout(2)
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 204")
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
