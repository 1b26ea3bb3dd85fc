"""How envd sizes the per-user process cap (no root, no sandbox: the limit files are faked)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandhive.envd import process_limits


@pytest.fixture
def limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    memory, pids = tmp_path / "memory", tmp_path / "pids"
    monkeypatch.setattr(process_limits, "MEMORY_LIMIT_FILES", (str(memory),))
    monkeypatch.setattr(process_limits, "PIDS_LIMIT_FILES", (str(pids),))
    monkeypatch.setattr(process_limits, "under_gvisor", lambda: False)
    monkeypatch.delenv(process_limits.MAX_PROCESSES_ENV, raising=False)
    process_limits.user_max_processes.cache_clear()
    yield memory, pids
    process_limits.user_max_processes.cache_clear()


def test_cap_follows_memory_below_the_pid_limit(limits: tuple[Path, Path]) -> None:
    memory, pids = limits
    memory.write_text(str(512 << 20))
    pids.write_text("4096")
    assert process_limits.user_max_processes() == 512


def test_cap_keeps_pids_for_envd(limits: tuple[Path, Path]) -> None:
    memory, pids = limits
    memory.write_text(str(8 << 30))
    pids.write_text("4096")
    assert process_limits.user_max_processes() == 4096 - process_limits.PIDS_RESERVE


def test_gvisor_budgets_more_per_task(limits: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    memory, pids = limits
    memory.write_text(str(512 << 20))
    pids.write_text("max")
    monkeypatch.setattr(process_limits, "under_gvisor", lambda: True)
    assert process_limits.user_max_processes() == 128


def test_small_sandboxes_get_a_floor_and_the_operator_an_override(limits: tuple[Path, Path],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    memory, pids = limits
    memory.write_text(str(16 << 20))
    assert process_limits.user_max_processes() == process_limits.MIN_PROCESSES
    process_limits.user_max_processes.cache_clear()
    monkeypatch.setenv(process_limits.MAX_PROCESSES_ENV, "0")
    assert process_limits.user_max_processes() is None
