"""The host-wide buildah storage as tests see it: its working containers, and the ones a test's build leaked.

The test groups run side by side (`make test`), and their builds share the one storage: a container that
appeared during a test may be another group's live build. So a leak is counted with no build running on the
host (`working_containers.idle`), after the orphans a killed build marked are removed as the product does.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from sandhive.images.system_image import default_cache_dir
from sandhive.templates import builder, working_containers

IDLE_TIMEOUT_S = 600  # the longest build another group runs (a cold built-in template) ends in this


def containers() -> set[str]:
    with builder.storage_session() as buildah:
        return set(buildah.quiet("containers", "--quiet").split())


def no_build_running() -> AbstractContextManager[None]:
    """While held, no build runs on the host: the working containers, build cgroups and build network
    namespaces present are leaks."""
    return working_containers.idle(default_cache_dir(), timeout=IDLE_TIMEOUT_S)


def leaked_since(before: set[str]) -> set[str]:
    """Working containers that appeared since `before` and outlived every build."""
    with no_build_running():
        return containers() - before
