"""Who removes the working containers of killed builds (`templates.working_containers`): never a build while
another runs, always the last one to end; `idle` waits for running builds."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sandhive.templates import working_containers


@pytest.fixture
def sweeps(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The sweeps that found the storage marked (each clears the mark, as the real one does)."""
    done: list[Path] = []

    def remove_orphans(cache_dir: Path) -> None:
        mark = cache_dir / working_containers.MARK_NAME
        if mark.exists():
            done.append(cache_dir)
            mark.unlink()

    monkeypatch.setattr(working_containers, "_remove_orphans", remove_orphans)
    return done


def test_a_failed_build_sweeps_only_when_it_is_the_last_one(tmp_path: Path, sweeps: list[Path]) -> None:
    with working_containers.in_use(tmp_path):
        pass  # the process's first build marks (a crashed server leaves no mark) and, alone, sweeps
    assert sweeps == [tmp_path.resolve()]
    with working_containers.in_use(tmp_path):  # another build runs on
        with pytest.raises(RuntimeError), working_containers.in_use(tmp_path):
            raise RuntimeError("killed mid-step")
        assert len(sweeps) == 1 and (tmp_path / working_containers.MARK_NAME).exists()
    assert len(sweeps) == 2 and not (tmp_path / working_containers.MARK_NAME).exists()


def test_a_clean_build_alone_does_not_sweep_an_unmarked_storage(tmp_path: Path, sweeps: list[Path]) -> None:
    with working_containers.in_use(tmp_path):
        pass
    with working_containers.in_use(tmp_path):
        pass
    assert len(sweeps) == 1  # the first one only


def test_idle_waits_for_running_builds(tmp_path: Path, sweeps: list[Path]) -> None:
    with (working_containers.in_use(tmp_path), pytest.raises(TimeoutError, match="still running"),
          working_containers.idle(tmp_path, timeout=0.3)):
        pass
    events: list[str] = []
    running = threading.Event()

    def build() -> None:
        with working_containers.in_use(tmp_path):
            running.set()
            threading.Event().wait(0.5)
            events.append("build ended")

    thread = threading.Thread(target=build)
    thread.start()
    running.wait(5)
    with working_containers.idle(tmp_path, timeout=5):
        events.append("idle")
    assert events == ["build ended", "idle"]
    thread.join()


async def test_the_async_face_sweeps_the_same_way(tmp_path: Path, sweeps: list[Path]) -> None:
    with pytest.raises(RuntimeError):
        async with working_containers.in_use_async(tmp_path):
            raise RuntimeError("server stopped")
    assert sweeps == [tmp_path.resolve()]
