"""The root conftest's backend selection: `one_backend` keeps a suite's container cases, `backends(...)` keeps
the named backends' cases, and an unmarked test keeps every case (tests/conftest.py)."""

from __future__ import annotations

import pytest


def test_markers_keep_the_cases_of_the_backends_they_name(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("pytest_plugins = []\n"
                          "from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n")
    pytester.makeini("[pytest]\nmarkers =\n    one_backend: x\n    backends: x\n")
    pytester.makepyfile("""
        import pytest
        @pytest.fixture(params=["container", "gvisor"])
        def live(request):
            return request.param
        def test_everywhere(live):
            pass
        @pytest.mark.one_backend
        def test_above_the_runtime(live):
            pass
        @pytest.mark.backends("container")
        def test_container_only(live):
            pass
        @pytest.mark.backends("gvisor")
        def test_gvisor_only(live):
            pass
        @pytest.mark.backends("gvisor")
        def test_not_parametrized():
            pass
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:asyncio", "-v")
    result.assert_outcomes(passed=6, deselected=3)
    result.stdout.fnmatch_lines_random([
        "*test_everywhere?container? PASSED*", "*test_everywhere?gvisor? PASSED*",
        "*test_above_the_runtime?container? PASSED*", "*test_container_only?container? PASSED*",
        "*test_gvisor_only?gvisor? PASSED*", "*test_not_parametrized PASSED*",
    ])
