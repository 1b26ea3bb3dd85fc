"""The running-sandbox quota protects one host by default: 20 per team, 429 + Retry-After beyond."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandhive.api.quota import TeamQuota
from sandhive.api.settings import Settings
from sandhive.errors import UserError


def test_default_quota_is_20_per_team() -> None:
    assert Settings(data_dir=Path("/nonexistent")).max_sandboxes_per_team == 20


def test_quota_answers_429_with_retry_after_in_e2b_shape() -> None:
    quota = TeamQuota(Settings(data_dir=Path("/nonexistent")).max_sandboxes_per_team)
    for n in range(20):
        with quota.slot("team-a"):
            quota.add("team-a", f"sbx{n}")
    with pytest.raises(UserError) as refused, quota.slot("team-a"):
        pass
    assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "10"}
    assert "20 running sandboxes" in refused.value.message
    with quota.slot("team-b"):  # another team is not affected
        pass
