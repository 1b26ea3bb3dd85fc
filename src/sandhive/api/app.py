"""`create_app`: the control plane's ASGI application, and what happens at its start and stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import partial

from fastapi import FastAPI

from .. import __version__
from ..node.node import Node
from ..store import Store
from ..templates.build_service import TemplateBuildService, Templates
from .errors import install_error_handlers
from .openapi import build_openapi
from .request_guard import BodyLimits, RequestGuard
from .routes import health_router, node_router, sandbox_router, template_router
from .sandboxes import SandboxService
from .settings import Settings
from .template_routes import template_build_router
from .timers import run_expiry
from .tokens import load_seed

DESCRIPTION = "Self-hosted sandboxes for AI agents. The REST API of E2B, so the official e2b SDKs work unchanged."


def create_app(settings: Settings, node: Node | None, templates: Templates | None) -> FastAPI:
    """The API over `node` (None: control plane only, creates answer 500) and `templates`.

    The app owns the node from here on: its lifespan reconciles the node with the store at start,
    runs the expiry timer, and closes the node at stop (sandboxes keep running across restarts).
    `app.state.resolve_sandbox(id)` answers a running sandbox's host address for the edge proxy.
    """
    service = SandboxService(settings, Store.open(settings.data_dir, settings.database_url), node, templates)
    builds = TemplateBuildService(settings, service.store, templates, node,
                                  load_seed=load_seed)
    service.catalog = builds.catalog  # sandbox creates resolve names as the team sees them

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        await builds.start()
        timer = asyncio.create_task(run_expiry(service, settings.expiry_interval_seconds))
        try:
            yield
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
            await builds.close()
            await service.close()

    app = FastAPI(title="Sandhive", version=__version__, description=DESCRIPTION, docs_url=None, redoc_url=None,
                  lifespan=lifespan, generate_unique_id_function=lambda route: route.name)
    app.state.service = service
    app.state.resolve_sandbox = service.directory.resolve
    install_error_handlers(app)
    app.include_router(health_router(service))
    app.include_router(sandbox_router(service))
    app.include_router(template_build_router(builds, service.store))
    app.include_router(template_router(service))
    app.include_router(node_router(service))
    # Before any route reads a body: the key from the headers, and bounded body sizes (request_guard.py).
    app.add_middleware(RequestGuard, routes=app.router.routes, store=service.store,
                       limits=BodyLimits(settings.max_json_body_bytes, settings.max_upload_body_bytes,
                                         settings.body_timeout_seconds))
    app.openapi = partial(build_openapi, app)  # type: ignore[method-assign]  # FastAPI's documented override
    return app
