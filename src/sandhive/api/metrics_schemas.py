"""The JSON shapes of E2B's metrics routes (E2B's OpenAPI: SandboxesWithMetrics, TeamMetric, MaxTeamMetric)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel

from .schemas import SandboxMetric

MAX_BATCH_IDS = 100  # `GET /sandboxes/metrics?sandbox_ids=`: E2B's maxItems


class SandboxesWithMetrics(BaseModel):
    """The latest sample of each asked-for sandbox the caller's team owns, by sandbox id."""

    sandboxes: dict[str, SandboxMetric]


class TeamMetric(BaseModel):
    timestamp: datetime
    timestampUnix: int
    concurrentSandboxes: int  # the team's running sandboxes at that time
    sandboxStartRate: float  # sandboxes the team created per second in the interval before it


class TeamMetricName(StrEnum):
    concurrent_sandboxes = "concurrent_sandboxes"
    sandbox_start_rate = "sandbox_start_rate"


class MaxTeamMetric(BaseModel):
    timestamp: datetime  # when the maximum was reached (the first time, if reached more than once)
    timestampUnix: int
    value: float
