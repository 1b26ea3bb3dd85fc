"""The skip allowlist (tests/skips.py): the reasons the suite really uses pass, anything else does not."""

from __future__ import annotations

import pytest

from tests.skips import skip_allowed


@pytest.mark.parametrize("reason", [
    "Skipped: envd tests need root (a private mount namespace with a sandbox user)",
    "the container backend needs root",
    "runsc (gVisor) is not installed (make debian-packages)",
    "tmux is not installed (Debian: apt-get install tmux)",
    "util-linux unshare is missing",
    "sandhive.node.gvisor cannot be imported (No module named 'x')",
    "runsc runs on no platform here (kvm: hangs)",
    "no OCI backend can run here: the container backend needs root",
    "cannot create a user namespace here: unshare: Operation not permitted",
    "pushing to the test's LAN registry from the BUILD range hangs (known gap, issue 12)",
    "runsc always sets no_new_privs (it ignores the bundle's noNewPrivileges): sudo cannot work under gVisor",
    "RNDADDENTROPY/RNDRESEEDCRNG need root in the initial user namespace",
    "no KVM that boots guests",
])
def test_the_suites_own_reasons_are_allowed(reason: str) -> None:
    assert skip_allowed(reason)


@pytest.mark.parametrize("reason", [
    "Skipped: flaky",
    "TODO",
    "server did not start",
    "",
    "rooted in nothing",  # "root" inside another word is not the "needs root" reason
    "issue 12",  # a gap must be written as "(known gap, issue N)"
])
def test_other_reasons_are_not(reason: str) -> None:
    assert not skip_allowed(reason)


def test_an_unexpected_skip_fails_the_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("pytest_plugins = []\nfrom tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile("""
        import pytest
        def test_known():
            pytest.skip("tmux is not installed")
        def test_unknown():
            pytest.skip("the fixture broke")
        @pytest.mark.skipif(True, reason="flaky")
        def test_marked():
            pass
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=0, skipped=1, failed=1, errors=1)  # a skipif mark skips at setup
    result.stdout.fnmatch_lines(["*unexpected skip*the fixture broke*"])
