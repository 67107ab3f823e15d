"""The suite's own guard (tests/conftest.py): a test that leaves process-wide real state changed
fails, by name, and the next test starts clean."""

from __future__ import annotations

import resource
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")

_CASES = '''
import ctypes
import resource

libc = ctypes.CDLL(None, use_errno=True)


def test_leaks_an_rlimit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))


def test_leaks_mlockall():
    assert libc.mlockall(2) == 0  # MCL_FUTURE


def test_restores_what_it_changed():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_after_the_leaks():
    pass
'''


def test_a_leak_fails_the_test_that_leaked_and_is_undone(pytester: pytest.Pytester) -> None:
    import os
    here = os.path.dirname(__file__)
    with open(os.path.join(here, "conftest.py")) as f:
        pytester.makeconftest(f.read())
    pytester.makepyfile(test_leaks=_CASES)
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "-p", "no:randomly")
    out = r.stdout.str()
    r.assert_outcomes(passed=4, errors=2)
    assert "test_leaks.py::test_leaks_an_rlimit changed process-wide state" in out and "RLIMIT_NOFILE" in out
    assert "test_leaks.py::test_leaks_mlockall changed process-wide state" in out and "mlockall(MCL_FUTURE)" in out
    assert "test_restores_what_it_changed changed" not in out and "test_after_the_leaks changed" not in out
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before  # another process: ours untouched
