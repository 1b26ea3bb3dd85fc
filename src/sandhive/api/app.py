"""`create_app`: the control plane's ASGI application, and what happens at its start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

from fastapi import FastAPI

from ..node.node import Node
from ..store import Store
from ..templates.build_service import TemplateBuildService, Templates
from ..version import __version__
from .audit_routes import audit_router
from .dashboard.routes import install as install_dashboard
from .errors import InternalErrors, install_error_handlers
from .metrics_routes import metrics_router
from .openapi import build_openapi
from .pause_routes import pause_router
from .prometheus import Prometheus
from .request_guard import BodyLimits, RequestGuard
from .routes import health_router, node_router, sandbox_router, template_router
from .sandboxes import SandboxService
from .settings import Settings
from .snapshot_routes import snapshot_router
from .snapshots import SnapshotService
from .team_metrics import TeamSeries
from .template_routes import template_build_router
from .timers import run_expiry
from .tokens import load_secret
from .unsupported import served, unsupported_router
from .volume_routes import volume_router

DESCRIPTION = "Self-hosted sandboxes for AI agents. The REST API of E2B, so the official e2b SDKs work unchanged."


def create_app(settings: Settings, node: Node | None, templates: Templates | None) -> FastAPI:
    """The API over `node` (None: control plane only, creates answer 500) and `templates`.

    The app owns the node from here on: its lifespan reconciles the node with the store at start,
    runs the expiry timer, and closes the node (and with it the runtime) at stop; sandboxes keep running
    across restarts. Serve it on the event loop the node's runtime was prepared on.
    `app.state.resolve_sandbox(id)` answers a running sandbox's host address for the edge proxy.
    """
    service = SandboxService(settings, Store.open(settings.data_dir, settings.database_url), node, templates)
    builds = TemplateBuildService(settings, service.store, templates, node,
                                  load_secret=load_secret)
    service.catalog = builds.catalog  # sandbox creates resolve names as the team sees them
    builds.audit_record = service.audit.record
    snapshots = SnapshotService(service)
    service.snapshots = builds.snapshots = snapshots  # a snapshot is a template: create from it, delete it
    if node is not None:
        node.history.interval = settings.metrics_interval_seconds  # its sampler starts with the node
    teams = TeamSeries(service.quota.counts, lambda: service.started, settings.metrics_interval_seconds)
    prometheus = Prometheus(service, builds.build_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        await service.start()
        await snapshots.start()
        await builds.start()
        timer = asyncio.create_task(run_expiry(service, settings.expiry_interval_seconds))
        teams.start()
        try:
            yield
        finally:
            await teams.stop()
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
            await builds.close()
            await dashboard.close()
            await service.close()
            # what the server started beside the app (the egress filter and judge): closed here, in the lifespan,
            # because uvicorn ends the process with the signal it caught once the lifespan is over
            for close in reversed(application.state.closers):
                await close()

    app = FastAPI(title="Sandhive", version=__version__, description=DESCRIPTION, docs_url=None, redoc_url=None,
                  lifespan=lifespan, generate_unique_id_function=lambda route: route.name)
    app.state.service = service
    app.state.builds = builds  # `sandhive serve --template-registry` sets where builds push, or which nodes build
    app.state.closers = []  # async callables the lifespan awaits last (sandhive serve's egress filter)
    app.state.prometheus = prometheus  # `sandhive serve --metrics-listen` serves it on a listener of its own
    app.state.resolve_sandbox = service.pauses.resolve  # a paused sandbox with auto-resume wakes on traffic
    # What the edge proxy reports of envd traffic (proxy/audit.py); None: `--no-audit`, the proxy parses nothing.
    app.state.envd_audit = service.audit.envd_sink if settings.audit else None
    install_error_handlers(app)
    # Metrics before sandboxes: /sandboxes/metrics is not a sandbox id for /sandboxes/{sandboxID}.
    routers = [metrics_router(service, teams, prometheus), health_router(service), sandbox_router(service),
               template_build_router(builds, service.store), template_router(service), node_router(service),
               pause_router(service), snapshot_router(snapshots, builds.delete), volume_router(service.volumes),
               audit_router(service)]
    # E2B's routes that have no real one answer "use of X is not enabled"; first, so that a static path such
    # as /v2/templates is not taken for a template id.
    app.include_router(unsupported_router(service, served(route for r in routers for route in r.routes)))
    for router in routers:
        app.include_router(router)
    dashboard = install_dashboard(app, service, builds)  # /dashboard: pages for people (docs/dashboard.md)
    # Before any route reads a body: the key from the headers, and bounded body sizes (request_guard.py).
    app.add_middleware(RequestGuard, routes=app.router.routes, store=service.store,
                       limits=BodyLimits(settings.max_json_body_bytes, settings.max_upload_body_bytes,
                                         settings.body_timeout_seconds))
    app.add_middleware(InternalErrors)  # outermost: whatever else raised is a generic 500 with a logged id
    app.openapi = partial(build_openapi, app)  # type: ignore[method-assign]  # FastAPI's documented override
    return app


def render_openapi() -> str:
    """The OpenAPI document as committed (docs/openapi.json): a server with no backend describes the same API
    as one with a backend."""
    with tempfile.TemporaryDirectory() as tmp:  # the store is never connected to: only its empty file appears
        app = create_app(Settings(data_dir=Path(tmp)), node=None, templates=None)
        return json.dumps(app.openapi(), indent=2) + "\n"
