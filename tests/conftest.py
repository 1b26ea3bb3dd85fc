"""Suite-wide hooks: a skip whose reason is not on the known list (tests/skips.py) fails the test."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from tests.skips import skip_allowed

pytest_plugins = ["pytester"]  # tests/unit/test_skip_policy.py runs this hook in a pytest of its own


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not skip_allowed(reason):
        report.outcome = "failed"
        report.longrepr = (f"unexpected skip: {reason!r} matches no known reason in tests/skips.py "
                           "(fix the rig, or add the reason there with the skip that needs it)")


OTHER_BACKENDS = ("gvisor", "microvm")  # the parameter values of live-server suites besides "container"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`one_backend` modules test what sits above the runtime (the SDK, the CLI, the proxy): their cases for the
    other backends would repeat the container's through the same code, so they are deselected (not skipped),
    which keeps the serial suite inside CI's time. Each backend's own behaviour is tested in its suites.

    `backends(NAME, ...)` keeps only those backends' cases of a suite parametrized over backends: what a
    backend does not offer by design (e.g. memory snapshots on gvisor, docs/persistence.md) has its documented
    error tested elsewhere, not a case that could only fail."""
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        marker = item.get_closest_marker("backends")
        if marker is not None:
            wanted = set(marker.args)
            drop = any(v in ("container", *OTHER_BACKENDS) and v not in wanted for v in params.values())
        else:
            drop = bool(item.get_closest_marker("one_backend")) and any(v in OTHER_BACKENDS for v in params.values())
        (dropped if drop else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
