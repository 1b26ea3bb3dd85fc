"""Metrics routes: E2B's sandbox and team metrics (a team's own only), and Prometheus' `GET /metrics` (admin keys).

- `GET /sandboxes/metrics?sandbox_ids=a,b` (≤ 100): the latest sample of each listed sandbox of the caller's team.
  An id of another team, or of no sandbox, is simply absent from the answer, as an unknown one is in E2B's: the
  caller cannot tell another team's sandbox from none.
- `GET /teams/{teamID}/metrics?start&end` and `.../metrics/max?metric=`: concurrent sandboxes and start rate of the
  caller's own team (api/team_metrics.py), named by its id or its slug; any other team answers 403, as E2B's does.
- `GET /metrics`: the operator's scrape, for admin keys only (403 for a team's key). `sandhive serve
  --metrics-listen ADDR` serves the same page without a key on a listener of its own (`metrics_app`).

No `from __future__ import annotations` here: FastAPI reads the parameter annotations at runtime.
"""

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from ..errors import UserError
from ..store import Caller as StoreCaller
from .auth import caller_of_key, team_of_key
from .metrics_schemas import MAX_BATCH_IDS, MaxTeamMetric, SandboxesWithMetrics, TeamMetric, TeamMetricName
from .prometheus import CONTENT_TYPE, Prometheus
from .routes import errors
from .sandboxes import SandboxService, metric_of
from .schemas import ErrorBody
from .team_metrics import TeamSeries

FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "Not the caller's team, or not an admin key"}}
PAGE: dict[int | str, dict[str, Any]] = {
    200: {"description": "Prometheus' text exposition format",
          "content": {"text/plain": {"schema": {"type": "string"}}}}}
Seconds = Query(ge=0, description="Unix timestamp in seconds (inclusive)")


def _window(start: int | None, end: int | None) -> None:
    if start is not None and end is not None and start > end:
        raise UserError(400, f"start ({start}) is after end ({end})")


def metrics_router(service: SandboxService, teams: TeamSeries, prometheus: Prometheus) -> APIRouter:
    router = APIRouter(tags=["metrics"])
    Team = Annotated[str, Depends(team_of_key(service.store))]  # noqa: N806 — a type alias, read as one
    Caller = Annotated[StoreCaller, Depends(caller_of_key(service.store))]  # noqa: N806 — a type alias

    @router.get("/sandboxes/metrics", responses=errors(400, 401, 500))
    async def sandboxes_metrics(team: Team, sandbox_ids: Annotated[str, Query(
            description=f"Comma-separated sandbox ids (at most {MAX_BATCH_IDS})")]) -> SandboxesWithMetrics:
        """The latest metrics sample of each listed sandbox of your team (other ids are left out)."""
        ids = list(dict.fromkeys(i.strip() for i in sandbox_ids.split(",") if i.strip()))
        if not ids:
            raise UserError(400, "sandbox_ids must name at least one sandbox")
        if len(ids) > MAX_BATCH_IDS:
            raise UserError(400, f"sandbox_ids names {len(ids)} sandboxes; at most {MAX_BATCH_IDS} are allowed")
        owned = await asyncio.to_thread(_owned_ids, service, team, ids)
        out: dict[str, Any] = {}
        if service.node is not None:
            await service.node.history.first_sample(owned)
            for sandbox_id in owned:
                sample = service.node.history.latest(sandbox_id)
                if sample is not None:
                    out[sandbox_id] = metric_of(sample)
        return SandboxesWithMetrics(sandboxes=out)

    async def own_team(team: str, team_id: str) -> None:
        """The caller's team, named by its id or its slug (the `team-slug/` of its template names)."""
        if team_id != team and team_id != await asyncio.to_thread(service.store.team_slug_of, team):
            raise UserError(403, "You can only read your own team's metrics")

    @router.get("/teams/{teamID}/metrics", responses={**errors(400, 401, 500), **FORBIDDEN})
    async def team_metrics(team: Team, team_id: Annotated[str, Path(alias="teamID")],
                           start: Annotated[int | None, Seconds] = None,
                           end: Annotated[int | None, Seconds] = None) -> list[TeamMetric]:
        """Your team's concurrent sandboxes and start rate (creates per second), one point per sampling interval."""
        await own_team(team, team_id)
        _window(start, end)
        return [TeamMetric(timestamp=datetime.fromtimestamp(p.time, UTC), timestampUnix=int(p.time),
                           concurrentSandboxes=p.concurrent, sandboxStartRate=p.start_rate)
                for p in teams.points(team, start, end)]

    @router.get("/teams/{teamID}/metrics/max", responses={**errors(400, 401, 500), **FORBIDDEN})
    async def team_metrics_max(team: Team, team_id: Annotated[str, Path(alias="teamID")],
                               metric: TeamMetricName, start: Annotated[int | None, Seconds] = None,
                               end: Annotated[int | None, Seconds] = None) -> MaxTeamMetric:
        """The largest value of `metric` in the interval and when it was first reached (0 now when there is no
        point in it)."""
        await own_team(team, team_id)
        _window(start, end)
        points = teams.points(team, start, end)
        if not points:
            now = datetime.now(UTC)
            return MaxTeamMetric(timestamp=now, timestampUnix=int(now.timestamp()), value=0.0)
        top = max(points, key=lambda p: p.value(metric))  # max() keeps the first of equal values
        return MaxTeamMetric(timestamp=datetime.fromtimestamp(top.time, UTC), timestampUnix=int(top.time),
                             value=float(top.value(metric)))

    @router.get("/metrics", responses={**PAGE, **errors(401), **FORBIDDEN}, response_class=Response,
                tags=["sandhive"])
    async def prometheus_metrics(caller: Caller) -> Response:
        """The server's metrics in Prometheus' text format (admin keys only; see docs/metrics.md)."""
        if not caller.admin:
            raise UserError(403, "GET /metrics needs an admin key (sandhive keys create --admin)")
        return Response(await prometheus.render(), media_type=CONTENT_TYPE)

    return router


def _owned_ids(service: SandboxService, team: str, ids: list[str]) -> list[str]:
    owned = []
    for sandbox_id in ids:
        record = service.store.get_sandbox(sandbox_id)
        if record is not None and record.team_id == team and record.state != "killed":
            owned.append(sandbox_id)
    return owned


def metrics_app(prometheus: Prometheus) -> Starlette:
    """`GET /metrics` and nothing else, without a key: for `--metrics-listen` on a private network."""

    async def scrape(_: Request) -> Response:
        return Response(await prometheus.render(), media_type=CONTENT_TYPE)

    return Starlette(routes=[Route("/metrics", scrape, methods=["GET"])])
