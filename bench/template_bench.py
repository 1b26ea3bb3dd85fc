"""Template build time for the seed's data-science Dockerfile, cold and cached, next to plain buildah.

Cold means an empty buildah storage: the `python:3.11-slim` stand-in is made by mmdebstrap and pandas,
numpy and matplotlib are downloaded and installed (the apt .deb cache is kept, as on any host after its
first build). Cached means the same Dockerfile again. The baseline is `buildah bud` of the same Dockerfile
on the same base image in the same storage, without Sandhive (which adds resolving bases, the build
network, exporting the image as a uid-shifted template tree, and metadata).

Usage: `python -m bench.template_bench` (root; a few minutes). `--quick` measures only a small Dockerfile's
cached rebuild and a rebuild with one changed step, in the host's cache (warm local base), with nothing but
`build_template`: the same code runs against an older tree to compare (issue 12: isolation ≤ 1.5× cached).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine
from sandhive.images.system_image import default_cache_dir
from sandhive.templates import builder
from sandhive.templates.builder import BuildRequest, build_template

DOCKERFILE = """\
FROM python:3.11-slim
RUN pip install pandas numpy matplotlib
WORKDIR /workspace
"""


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


QUICK = """\
FROM debian:bookworm-slim
RUN echo one > /one
RUN echo {two} > /two
"""


def quick(runs: int = 5) -> int:
    """Median cached rebuild and one-changed-step rebuild of QUICK (base and first step cached)."""
    import statistics

    work = Path(tempfile.mkdtemp(prefix="sandhive-bench-quick-", dir="/var/tmp"))
    context = work / "ctx"
    context.mkdir()
    data_dir = work / "data"

    def build(two: str) -> float:
        return _timed(lambda: build_template(data_dir, BuildRequest(template_id="quick", context=context,
                                                                    dockerfile=QUICK.format(two=two)),
                                             log=lambda _line: None))

    try:
        build("warm")
        cached = [build("warm") for _ in range(runs)]
        changed = [build(f"changed-{i}-{time.time_ns()}") for i in range(runs)]
        builder.remove_image(data_dir, "quick")
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
    print(f"machine: {machine()}")
    print(f"| small Dockerfile (debian:bookworm-slim + 2 RUN) | median of {runs}, seconds |")
    print("|---|---|")
    print(f"| cached: unchanged rebuild | {statistics.median(cached):.2f} |")
    print(f"| one changed step (last RUN): rebuild from it + export | {statistics.median(changed):.2f} |")
    return 0


def main() -> int:
    if "--quick" in sys.argv:
        return quick()
    if os.geteuid() != 0:
        print("template_bench: needs root (buildah storage, network namespaces)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="sandhive-bench-tpl-", dir="/var/tmp"))
    work.chmod(0o711)  # the build runs as the BUILD range's root, which must reach the cache dir below
    cache = work / "cache"
    cache.mkdir()
    (cache / "apt-archives").symlink_to(default_cache_dir() / "apt-archives")  # .debs as on a used host
    context = work / "ctx"
    context.mkdir()
    (context / "e2b.Dockerfile").write_text(DOCKERFILE)
    data_dir = work / "data"
    request = BuildRequest(template_id="data-science-sandbox", dockerfile=DOCKERFILE, context=context)

    def build(req: BuildRequest = request) -> None:
        build_template(data_dir, req, cache_dir=cache, log=lambda _line: None)

    try:
        cold = _timed(build)
        cached = _timed(build)
        changed = _timed(lambda: build(BuildRequest(template_id=request.template_id, context=context,
                                                    dockerfile=DOCKERFILE.replace("/workspace", "/work"))))
        base = "localhost/sandhive-base/python:3.11-slim"
        plain = DOCKERFILE.replace("python:3.11-slim", base)
        (context / "plain.Dockerfile").write_text(plain)
        # plain buildah in the same BUILD-range user namespace and the same kind of build network
        with builder.storage_session(cache) as buildah, builder.blocking_build_network() as netns:
            buildah.sandbox.netns = netns
            inside = buildah.sandbox.receive(context, trusted=True, dest="ctx", keep_owners=False)
            bud = ["bud", "--layers", "--pull=never", "--isolation", "chroot", "--network", "host",
                   "-v", f"{builder.HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro",
                   "-f", str(inside / "plain.Dockerfile"), "-t", "bench-plain"]
            raw_cold = _timed(lambda: buildah.run(*bud, "--no-cache", str(inside), network=True))
            raw_cached = _timed(lambda: buildah.run(*bud, str(inside), network=True))
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
    print(f"machine: {machine()}")
    print("command: python -m bench.template_bench\n")
    print("| data-science template (FROM python:3.11-slim, pip install pandas numpy matplotlib) | seconds |"
          " baseline: plain `buildah bud`, same storage | ratio |")
    print("|---|---|---|---|")
    print(f"| cold: empty storage (base made by mmdebstrap) + pip downloads | {cold:.1f} | — | — |")
    print(f"| layers rebuilt (`--no-cache`), base present | — | {raw_cold:.1f} | — |")
    print(f"| cached: unchanged rebuild | {cached:.2f} | {raw_cached:.2f} | {cached / raw_cached:.1f}× |")
    print(f"| last step changed (WORKDIR): rebuild from it + export | {changed:.1f} | — | — |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
