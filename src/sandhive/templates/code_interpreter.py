"""The built-in template `code-interpreter-v1`: what `e2b_code_interpreter.Sandbox.create()` asks for.

`base` plus a Jupyter stack from PyPI and Sandhive's own server on port 49999 (`sandhive.code_interpreter`),
which the template's start command runs; the ready check is `GET :49999/health`, which answers once the
default Python kernel is up, so a sandbox (and a pool's) is handed out with a warm kernel.

Like `base`, it belongs to the server (every team sees it, none can take its name) and is built on first use
— the first create naming it waits a few minutes, with progress in the server's log — or ahead with
`python -m sandhive.templates.code_interpreter build` (`make code-interpreter-template`; `make up` does not,
so it stays as fast as before). The build is an ordinary Dockerfile build (`builder`, buildah): `FROM base`,
`pip install` through the host's CA bundle (the builder mounts it into RUN steps), the server copied in.
The finished tree is kept in the tree cache under a key of everything that goes in (the pip set, the server's
sources, base's recipe), so another data dir — or a test session — gets it as a copy in seconds.

Times here (2 cores): see docs/code-interpreter.md.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from ..images.debian import BuildError
from ..images.system_image import default_cache_dir
from . import base, layout
from .builtin import Builtin
from .info import ROOTFS, TemplateInfo, now_iso
from .tree_cache import TreeCache

TEMPLATE_ID = "code-interpreter-v1"
ALIASES = ("code-interpreter",)
NAMES = (TEMPLATE_ID, *ALIASES)
RECIPE_VERSION = 2  # bump when the Dockerfile below changes in a way the key does not see
PORT = 49999
PACKAGE = "sandhive_code_interpreter"  # the server's package name inside the template
SITE = "/usr/local/lib/python3.11/dist-packages"  # where pip installs as root on bookworm
# The data-science set a user expects, and bash_kernel. Pinned (each with a cp311 manylinux wheel or pure Python),
# so a rebuild is the same.
PIP_PACKAGES = (
    "jupyter_client==8.6.3",
    "ipykernel==6.29.5",
    "numpy==2.2.6",
    "pandas==2.2.3",
    "matplotlib==3.10.3",
    "seaborn==0.13.2",
    "plotly==7.1.0",
    "scipy==1.17.1",
    "scikit-learn==1.9.1",
    "bash_kernel==0.10.0",
)
# JavaScript and TypeScript: Deno's Jupyter kernel, from the npm registry (`deno` ships its binary as the exact-pinned
# optional dependency `@deno/linux-x64-glibc`: nothing is compiled, nothing else is fetched). Node.js (base's) stays
# for `npm`. Kernel spec name → its kernel.json; the names are ours, so a user's `ijsinstall` cannot replace them.
NPM_PACKAGES = ("deno@2.9.6",)
KERNEL_DIR = "/usr/local/share/jupyter/kernels"
DENO_KERNEL_ENV = {"NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1", "DENO_NO_PROMPT": "1"}
KERNEL_SPECS = {
    name: {"argv": ["/usr/local/bin/deno", "jupyter", "--kernel", "--conn", "{connection_file}"],
           "display_name": display, "language": language, "env": DENO_KERNEL_ENV,
           "interrupt_mode": "message"}  # Deno ends a SIGINT'd kernel; an interrupt_request stops the code only
    for name, display, language in (("deno-js", "JavaScript (Deno)", "javascript"),
                                    ("deno-ts", "TypeScript (Deno)", "typescript"))
}
START_CMD = f"python3 -m {PACKAGE}.server --port {PORT} --cwd /home/user"  # as `user`, E2B's default
READY_CMD = f"curl -sf http://127.0.0.1:{PORT}/health"
CPU_COUNT, MEMORY_MB, DISK_MB = 2, 1024, 4096
SOURCE_DIR = Path(__file__).resolve().parent.parent / "code_interpreter"

Log = layout.Log


def dockerfile() -> str:
    specs = " && ".join(f"mkdir -p {KERNEL_DIR}/{name} && printf '%s\\n' {shlex.quote(json.dumps(spec))} "
                        f"> {KERNEL_DIR}/{name}/kernel.json" for name, spec in KERNEL_SPECS.items())
    return f"""FROM base
USER root
RUN pip install --no-cache-dir --root-user-action=ignore --disable-pip-version-check {' '.join(PIP_PACKAGES)}
# bash_kernel's spec system-wide (sys.prefix is /usr: /usr/share/jupyter/kernels/bash)
RUN python3 -m bash_kernel.install --sys-prefix
# Deno from the npm registry (npm trusts the host's CA bundle through NPM_CONFIG_CAFILE, as pip through PIP_CERT)
RUN npm install --global --no-audit --no-fund --no-update-notifier {' '.join(NPM_PACKAGES)} && npm cache clean --force \
    && deno --version && {specs}
# matplotlib's font cache, built once here rather than at the first plot of every sandbox; its config and cache
# dirs (made by root here) are user's, or every kernel's first plot warns on stderr that they are not writable
RUN HOME=/home/user python3 -c 'import matplotlib.pyplot' && mkdir -p /home/user/.cache /home/user/.config \
    && chown -R 1000:1000 /home/user/.cache /home/user/.config
COPY {PACKAGE} {SITE}/{PACKAGE}
RUN python3 -c 'import {PACKAGE}.server, {PACKAGE}.charts, pandas, numpy, matplotlib, seaborn, plotly, scipy, sklearn' \
    && python3 -m jupyter_client.kernelspecapp list
USER user
WORKDIR /home/user
"""


def source_files() -> list[Path]:
    return sorted(p for p in SOURCE_DIR.glob("*.py"))


def recipe_key() -> str:
    """Everything the template is made of: the Dockerfile, the server's sources and base's recipe."""
    try:
        base_key = base.recipe_key(base.host_apt_sources())
    except BuildError:
        base_key = "unknown"
    spec = {"recipe": RECIPE_VERSION, "dockerfile": dockerfile(), "base": base_key, "start": START_CMD,
            "ready": READY_CMD, "sources": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in source_files()}}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def is_current(info: TemplateInfo) -> bool:
    return info.build.get("recipe") == recipe_key()


def plan(data_dir: Path, cache_dir: Path | None = None) -> str:
    """What `build` would do: "current" (nothing), "cache" (copy from the tree cache) or "build"."""
    built = layout.read_built(data_dir, TEMPLATE_ID)
    if built is not None and is_current(built):
        return "current"
    if TreeCache(cache_dir or default_cache_dir()).get(TEMPLATE_ID, recipe_key()) is not None:
        return "cache"
    return "build"


def build(data_dir: Path, cache_dir: Path | None = None, *, force: bool = False, log: Log = print,
          netns: str | None = None) -> TemplateInfo:
    """Build the template into `<data_dir>/templates/code-interpreter-v1` unless it is there and current.

    Blocking (minutes from PyPI, seconds from the tree cache). Needs `base` built in `data_dir` when it
    builds for real (the registry builds it first). `netns`: the build's network namespace (see
    `builder.build_template`). Raises `builder.TemplateBuildError` or `BuildError` on failure.
    """
    cache_dir = Path(cache_dir or default_cache_dir())
    key = recipe_key()
    built = layout.read_built(data_dir, TEMPLATE_ID)
    if built is not None and not force and built.build.get("recipe") == key:
        log(f"{TEMPLATE_ID}: built {built.created_at} in {built.build.get('seconds', '?')}s")
        return built
    cache = TreeCache(cache_dir)
    hit = None if force else cache.get(TEMPLATE_ID, key)
    if hit is not None:
        return _from_cache(data_dir, cache, hit, log)
    return _build_fresh(data_dir, cache_dir, key, cache, log, netns)


def _from_cache(data_dir: Path, cache: TreeCache, hit: tuple[Path, dict], log: Log) -> TemplateInfo:
    cached, record = hit
    steps = layout.Steps(TEMPLATE_ID, log)
    info = TemplateInfo.from_json(json.dumps(record["info"]))

    def copy(tmp: Path) -> TemplateInfo:
        with steps.step(f"copy the tree built {record.get('built_at', '?')} from the cache"):
            cache.copy_out(cached, tmp / ROOTFS)
        return replace(info, created_at=now_iso(),
                       build={**info.build, "from_cache": {"built_at": record.get("built_at"),
                                                           "seconds": record.get("seconds")},
                              "seconds": round(steps.elapsed(), 1)})

    return layout.build_into_place(data_dir, TEMPLATE_ID, copy, force=True)


def _build_fresh(data_dir: Path, cache_dir: Path, key: str, cache: TreeCache, log: Log,
                 netns: str | None) -> TemplateInfo:
    from . import builder  # buildah and its friends: only when building for real

    log(f"{TEMPLATE_ID}: building from PyPI ({', '.join(PIP_PACKAGES)}) and npm ({', '.join(NPM_PACKAGES)}); "
        "this takes a few minutes")
    with tempfile.TemporaryDirectory(prefix="sandhive-code-interpreter-") as tmp:
        context = Path(tmp)
        package = context / PACKAGE
        package.mkdir()
        for source in source_files():
            shutil.copyfile(source, package / source.name)
        request = builder.BuildRequest(template_id=TEMPLATE_ID, dockerfile=dockerfile(), context=context,
                                       aliases=ALIASES, cpu_count=CPU_COUNT, memory_mb=MEMORY_MB, disk_mb=DISK_MB,
                                       start_cmd=START_CMD, ready_cmd=READY_CMD)
        info = builder.build_template(data_dir, request, cache_dir=cache_dir, log=lambda m: log(f"{TEMPLATE_ID}: {m}"),
                                      netns=netns)
    info = replace(info, build={**info.build, "recipe": key, "builder": "sandhive.templates.code_interpreter",
                                "pip": list(PIP_PACKAGES), "npm": list(NPM_PACKAGES)})
    with layout.build_lock(data_dir, TEMPLATE_ID):
        info.write(layout.template_dir(data_dir, TEMPLATE_ID))
    try:
        record = {"built_at": info.build.get("built_at"), "seconds": info.build.get("seconds"),
                  "info": json.loads(info.to_json())}
        cache.put(TEMPLATE_ID, key, layout.template_dir(data_dir, TEMPLATE_ID) / ROOTFS, record)
    except (BuildError, OSError) as exc:  # the template is fine; only the next data dir's build is slower
        log(f"{TEMPLATE_ID}: warning: could not store the tree in the cache: {exc}")
    try:  # the tree cache is this template's cache: its image would only take space in buildah's storage
        builder.remove_image(data_dir, TEMPLATE_ID, cache_dir)
    except Exception as exc:  # noqa: BLE001 — best effort; the template is built
        log(f"{TEMPLATE_ID}: warning: could not remove the build's image: {exc}")
    return info


# ---- the built-in's build entry (`sandhive template build-builtin code-interpreter`, see builtin.py) --------------

def _build_builtin(data_dir: Path, cache_dir: Path | None, force: bool, log: Log) -> TemplateInfo:
    """Ahead of first use: `base` first when this is a real build (it starts FROM base), then this."""
    if force or plan(data_dir, cache_dir) == "build":
        base.build(data_dir, cache_dir, log=log)
    return build(data_dir, cache_dir, force=force, log=log)


BUILTIN = Builtin("code-interpreter", TEMPLATE_ID, "code_interpreter", "base + Jupyter (Python, bash, Deno JS/TS "
                  "kernels), the data-science stack and the port-49999 server (a few minutes from PyPI, seconds "
                  "from the tree cache)", _build_builtin)

if __name__ == "__main__":
    from .builtin import main

    sys.exit(main(BUILTIN))
