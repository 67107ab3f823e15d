"""Test cases of LTP's syscall tests and of the kernel's mm selftests, translated (see README).

Each case runs on this machine's kernel first, in a forked child: a case the real kernel does
not pass is a bug of the translation. Then it runs on the model, on v6.18 and on every older
profile the case names because the behaviour changed there. Cases that fail on the model for a
model bug are marked strict xfail (``MODEL_BUGS``): the real kernel must still pass them, and the
mark must go when the model is fixed.
"""

from __future__ import annotations

import pytest

import ltp_cases  # noqa: F401  (registers the cases)
import selftest_cases  # noqa: F401
from conformance_env import CASES, REAL_PROFILE, Case, ModelFailure, run_model, run_real

# case name -> the model bug that makes it fail on the model (see /work/notes/conformance.md)
MODEL_BUGS: dict[str, str] = {}


def _params() -> list:
    out = []
    for c in CASES:
        for p in c.profiles:
            marks = []
            if c.name in MODEL_BUGS and p == REAL_PROFILE:
                marks.append(pytest.mark.xfail(strict=True, raises=ModelFailure, reason=MODEL_BUGS[c.name]))
            out.append(pytest.param(c, p, id=c.name if len(c.profiles) == 1 else f"{c.name} [{p}]", marks=marks))
    return out


@pytest.mark.parametrize("c, profile", _params())
def test_case(c: Case, profile: str) -> None:
    if profile == REAL_PROFILE:
        run_real(c)
    run_model(c, profile)


def test_enough_cases() -> None:
    assert len(CASES) >= 100
    assert len({c.name for c in CASES}) == len(CASES)
