"""Race rounds on real threads: which profiles populate a replacement, and which never do.

Few rounds at a reduced time scale. A test that must find FORBIDDEN runs rounds until it does (up
to a cap) and also checks the racer really hit the populate window; a test that must never see
it runs a fixed number of rounds. Every round's seed derives from the test's printed seed.
"""

from __future__ import annotations

import pytest

from mmlab.clock import DEFAULT_COSTS
from mmlab.harness.oracle import FORBIDDEN, INTERESTING
from mmlab.harness.populators import POPULATORS
from mmlab.harness.race import Aim, calibrate, round_seed, run_round
from mmlab.harness.racers import DEFAULT_RACERS, RACERS

COSTS = DEFAULT_COSTS.scaled(0.5)
SIZE = 32 << 20
CAP = 24  # rounds to find a FORBIDDEN outcome that must appear
FIXED = 6  # rounds where none may appear, and rounds to count window hits

_aims: dict[tuple[str, str], Aim] = {}


def _rounds(kernel: str, populator: str, racer: str, seed: int, n: int, stop_on: str = ""):
    pop = POPULATORS[populator]
    key = (kernel, populator)
    if key not in _aims:
        _aims[key] = Aim(calibrate(kernel, pop, SIZE, COSTS))
    aim = _aims[key]
    out = []
    for i in range(n):
        r = run_round(kernel, pop, RACERS[racer], seed=round_seed(seed, kernel, populator, racer, i), size=SIZE,
                      window_ns=aim.window_ns, costs=COSTS)
        aim.update(r.populate_ns)
        out.append(r)
        if stop_on and r.outcome == stop_on:
            break
    return out


def _summary(rs) -> str:
    return ", ".join(f"{r.seed}:{r.outcome}{'/hit' if r.window_hit else ''}" for r in rs)


@pytest.mark.parametrize("kernel", ["v3.9", "v6.18"])
@pytest.mark.parametrize("racer", [r for r in DEFAULT_RACERS if RACERS[r].replaces])
def test_file_populate_populates_replacements(kernel: str, racer: str, seed: int) -> None:
    rs = _rounds(kernel, "populate-file", racer, seed, CAP, stop_on=FORBIDDEN)
    assert rs[-1].outcome == FORBIDDEN, _summary(rs)
    assert rs[-1].verdict.wrong_pages > 0
    assert any(f.kind == "replacement-populated" for f in rs[-1].verdict.findings)
    # the racer does hit the window, often (a wide margin: the box is loaded and shared)
    hits = _rounds(kernel, "populate-file", racer, seed + 1, 9)
    assert sum(r.window_hit for r in hits) >= 3, _summary(hits)


@pytest.mark.parametrize("racer", DEFAULT_RACERS)
@pytest.mark.parametrize("populator", ["populate-file", "populate-anon"])
def test_v37_write_lock_excludes_the_racer(populator: str, racer: str, seed: int) -> None:
    rs = _rounds("v3.7", populator, racer, seed, FIXED)
    assert all(r.outcome != FORBIDDEN for r in rs), _summary(rs)
    assert not any(r.window_hit for r in rs)  # the populate runs inside the write hold
    assert any(r.overlap for r in rs), _summary(rs)  # yet the racer did run during the call


@pytest.mark.parametrize("racer", DEFAULT_RACERS)
def test_v39rc1_vm_populate_never_forbidden(racer: str, seed: int) -> None:
    rs = _rounds("v3.9-rc1", "populate-file", racer, seed, FIXED)
    assert all(r.outcome != FORBIDDEN for r in rs), _summary(rs)
    assert all(r.outcome != INTERESTING for r in rs), _summary(rs)  # these replacements never asked
    assert any(r.window_hit for r in rs), _summary(rs)


def test_v39rc1_replacement_that_asked_is_interesting(seed: int) -> None:
    rs = _rounds("v3.9-rc1", "populate-file", "mmap-fixed-populate", seed, CAP, stop_on=INTERESTING)
    assert rs[-1].outcome == INTERESTING, _summary(rs)
    assert all(r.outcome != FORBIDDEN for r in rs), _summary(rs)


def test_flipping_vm_populate_off_brings_forbidden_back(seed: int) -> None:
    rs = _rounds("v3.9-rc1+vm_populate=off", "populate-file", "mmap-fixed", seed, CAP, stop_on=FORBIDDEN)
    assert rs[-1].outcome == FORBIDDEN, _summary(rs)


@pytest.mark.parametrize("racer", list(DEFAULT_RACERS) + ["mmap-fixed-populate"])
@pytest.mark.parametrize("populator", ["populate-file", "populate-anon"])
def test_bounded_never_populates_another_mapping(populator: str, racer: str, seed: int) -> None:
    rs = _rounds("bounded", populator, racer, seed, FIXED)
    assert all(r.outcome not in (FORBIDDEN, INTERESTING) for r in rs), _summary(rs)
    assert any(r.window_hit for r in rs), _summary(rs)  # it yields, so racers do get in


@pytest.mark.parametrize("kernel", ["v3.7", "v3.9-rc1", "v3.9", "v6.18", "bounded"])
def test_mprotect_is_a_control(kernel: str, seed: int) -> None:
    rs = _rounds(kernel, "populate-file", "mprotect", seed, FIXED)
    assert all(r.outcome != FORBIDDEN for r in rs), _summary(rs)
