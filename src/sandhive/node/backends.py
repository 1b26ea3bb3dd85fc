"""Which isolation backend a server runs: a registry of backends (name → probe + factory) and `auto`.

`auto` tries the backends strongest first — microvm, gvisor, container — and takes the first whose probe
passes and whose runtime then prepares on this host (prepare is the real proof: gVisor's platform probe,
the firewall, the system image). Every skip is logged with its reason, and the result says why it chose
what it chose, so `GET /health` and the server's log can tell a user what isolation they get.

One server runs one backend. A template may ask for a backend (`TemplateImage.backend`); a server that
runs another refuses it with `BackendMismatch` rather than silently giving weaker isolation.

The microvm hook: the `microvm` backend lives in the package `sandhive.node.microvm` (being written
separately). It joins by exposing there

    MicroVMRuntime(data_dir: Path)   # the runtime class, with prepare() like the others
    async def probe() -> str | None  # None when it can run here with real hardware virtualisation (KVM),
                                     # else why not (e.g. "/dev/kvm is PVM: guest kernels do not boot")

Until both exist, `microvm` is reported as not built, and `auto` skips it. `auto` never chooses a microvm
backend without real KVM (an emulated one is for explicit `--backend microvm` only).
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NodeError
from .errors import BackendUnavailable
from .runtime import Runtime, TemplateImage

log = logging.getLogger("sandhive.node.backends")

MICROVM_MODULE = "sandhive.node.microvm"
AUTO = "auto"
NONE = "none"


class BackendMismatch(NodeError):
    """A template asks for a backend this server does not run (400: the user picks another server or template)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message, "template_backend_mismatch")


@dataclass(frozen=True)
class Backend:
    """One backend: what it isolates with, why it cannot run here (None: it may), and how to make it."""

    name: str
    isolation: str
    probe: Callable[[], Awaitable[str | None]]
    make: Callable[[Path], Runtime]
    # The probe when the backend is asked for by name, if laxer than `auto`'s (microvm: TCG will do).
    by_name: Callable[[], Awaitable[str | None]] | None = None


@dataclass
class Selection:
    """The runtime a server runs, prepared, and why: one line per backend considered, in order."""

    runtime: Runtime
    name: str
    reasons: list[str] = field(default_factory=list)


def _needs_root() -> str | None:
    return None if os.geteuid() == 0 else "needs root (namespaces, cgroups, mounts)"


async def _probe_container() -> str | None:
    binary = os.environ.get("SANDHIVE_OCI_RUNTIME") or "runc"
    if shutil.which(binary) is None:
        return f"{binary} is not installed (make debian-packages)"
    return _needs_root()


async def _probe_gvisor() -> str | None:
    """Cheap checks only; the platform probe (`runsc do /bin/true`) is part of GVisorRuntime.prepare()."""
    if shutil.which("runsc") is None:
        return "runsc is not installed (make debian-packages installs it from bookworm-backports)"
    return _needs_root()


def _microvm_module():  # noqa: ANN202 — a module or None
    try:
        return importlib.import_module(MICROVM_MODULE)
    except ImportError:
        return None


async def _probe_microvm() -> str | None:
    module = _microvm_module()
    probe = getattr(module, "probe", None)
    if module is None or probe is None or not hasattr(module, "MicroVMRuntime"):
        return "not built in this installation (sandhive.node.microvm has no MicroVMRuntime and probe yet)"
    return await probe()


async def _probe_microvm_by_name() -> str | None:
    """Asked for by name, microvm runs under TCG emulation where KVM does not work (slow: dev and tests)."""
    module = _microvm_module()
    if module is None or not hasattr(module, "probe_any_accelerator"):
        return "not built in this installation"
    return await module.probe_any_accelerator()


def _make_container(data_dir: Path) -> Runtime:
    from .container import ContainerRuntime

    return ContainerRuntime(data_dir)


def _make_gvisor(data_dir: Path) -> Runtime:
    from .gvisor import GVisorRuntime

    return GVisorRuntime(data_dir)


def _make_microvm(data_dir: Path) -> Runtime:
    module = _microvm_module()
    if module is None or not hasattr(module, "MicroVMRuntime"):
        raise BackendUnavailable("the microvm backend is not built in this installation")
    return module.MicroVMRuntime(data_dir)


BACKENDS: dict[str, Backend] = {  # strongest isolation first: the order `auto` tries them in
    "microvm": Backend("microvm", "hardware virtualisation (a guest kernel per sandbox)", _probe_microvm,
                       _make_microvm, by_name=_probe_microvm_by_name),
    "gvisor": Backend("gvisor", "gVisor's user-space kernel serves the sandbox's system calls", _probe_gvisor,
                      _make_gvisor),
    "container": Backend("container", "namespaces, seccomp and cgroups on the shared host kernel",
                         _probe_container, _make_container),
}
CHOICES = (AUTO, *BACKENDS, NONE)


async def _prepared(backend: Backend, data_dir: Path) -> Runtime:
    runtime = backend.make(data_dir)
    try:
        await runtime.prepare()
    except BaseException:
        await runtime.close()
        raise
    return runtime


async def select(requested: str, data_dir: Path) -> Selection:
    """The prepared runtime for `requested` (a backend name or `auto`). Raises BackendUnavailable saying why."""
    if requested == AUTO:
        return await _auto(data_dir)
    backend = BACKENDS.get(requested)
    if backend is None:
        raise BackendUnavailable(f"unknown backend {requested!r}; choose one of {', '.join(CHOICES)}")
    reason = await (backend.by_name or backend.probe)()
    if reason is not None:
        raise BackendUnavailable(f"the {requested} backend cannot run on this host: {reason}")
    try:
        runtime = await _prepared(backend, data_dir)
    except Exception as exc:
        raise BackendUnavailable(f"the {requested} backend cannot run on this host: {exc}") from exc
    return Selection(runtime, requested, [f"{requested}: chosen (asked for by name)"])


async def _auto(data_dir: Path) -> Selection:
    reasons: list[str] = []
    for backend in BACKENDS.values():
        why = await backend.probe()
        if why is None:
            try:
                runtime = await _prepared(backend, data_dir)
            except Exception as exc:
                why = f"did not prepare: {exc}"
            else:
                reasons.append(f"{backend.name}: chosen — {backend.isolation}")
                log.debug("backend auto: %s", "; ".join(reasons))
                return Selection(runtime, backend.name, reasons)
        reasons.append(f"{backend.name}: skipped — {why}")
        log.debug("backend auto: %s skipped: %s", backend.name, why)
    raise BackendUnavailable("no sandbox backend can run on this host: " + "; ".join(reasons))


def check_template(template: TemplateImage, backend: str) -> None:
    """Refuse a template that asks for a backend other than the server's (one server runs one backend)."""
    wanted = template.backend
    if wanted and wanted != backend:
        known = "" if wanted in BACKENDS else f" (not a backend Sandhive knows: {', '.join(BACKENDS)})"
        raise BackendMismatch(f"template '{template.template_id}' asks for the {wanted} backend{known}, but this "
                              f"server runs {backend}; start a server with `sandhive serve --backend {wanted}` "
                              "for it, or build the template without a backend")
