"""`--template-registry`, `--template-registry-insecure` and `--template-cache`: templates across hosts (issue 17).

Shared by `sandhive serve` (a control plane's builds, and an embedded node's) and `sandhive node` (its builds for
control planes, and its pulls on first use). See templates/oci_registry.py and templates/pull.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import fail

if TYPE_CHECKING:
    from ..templates.oci_registry import TemplateRegistryRef

RegistryOption = Annotated[str | None, typer.Option(
    "--template-registry", metavar="HOST:PORT[/prefix]", envvar="SANDHIVE_REGISTRY",
    help="OCI registry templates are pushed to after each build and pulled from by nodes that lack them "
         "(as <registry>/<prefix>/templates/<template-id>).")]
TemplateRegistryInsecure = Annotated[bool, typer.Option(
    "--template-registry-insecure", envvar="SANDHIVE_REGISTRY_INSECURE",
    help="Talk plain HTTP to --template-registry: only for a registry on loopback or a private network.")]
TemplateCache = Annotated[Path | None, typer.Option(
    "--template-cache", metavar="DIR",
    help="Where pulled template images are cached by digest (default: <data-dir>/template-cache); several "
         "data dirs on one host may share one.")]


def registry_ref(value: str | None, insecure: bool) -> TemplateRegistryRef | None:
    if value is None:
        if insecure:
            fail("--template-registry-insecure needs --template-registry")
        return None
    from ..templates.oci_registry import TemplateRegistryRef

    try:
        return TemplateRegistryRef.parse(value, insecure)
    except ValueError as exc:
        fail(f"--template-registry: {exc}")
