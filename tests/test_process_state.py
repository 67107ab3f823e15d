"""The suite's own guard (tests/conftest.py): a test that leaves process-wide real state changed
fails, by name, and the next test starts clean. One inner pytest run (a subprocess) of planted
tests with the suite's conftest."""

from __future__ import annotations

import os
import resource
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")

_CASES = '''
import ctypes
import resource

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def test_leaks_an_rlimit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))


def test_leaks_mlockall():
    assert libc.mlockall(2) == 0  # MCL_FUTURE


def test_restores_what_it_changed():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_leaves_a_page_locked():
    a = libc.mmap(None, 4096, 3, 0x22, -1, 0)  # PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS
    assert libc.mlock(a, 4096) == 0, ctypes.get_errno()


def test_after_the_leaks():
    pass
'''


def test_a_leak_fails_the_test_that_leaked_and_is_undone(pytester: pytest.Pytester) -> None:
    with open(os.path.join(os.path.dirname(__file__), "conftest.py")) as f:
        pytester.makeconftest(f.read())
    pytester.makepyfile(test_leaks=_CASES)
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "-p", "no:xdist")
    out = r.stdout.str()
    r.assert_outcomes(passed=5, errors=3)  # every test passes; three fail their teardown check
    assert "test_leaks.py::test_leaks_an_rlimit changed process-wide state" in out and "RLIMIT_NOFILE" in out
    assert "test_leaks.py::test_leaks_mlockall changed process-wide state" in out and "mlockall(MCL_FUTURE)" in out
    assert "test_leaks.py::test_leaves_a_page_locked changed process-wide state" in out and "pages locked" in out
    # the leaks were undone: the tests after them start clean
    assert "test_restores_what_it_changed changed" not in out and "test_after_the_leaks changed" not in out
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before  # another process: ours untouched
