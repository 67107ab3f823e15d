"""Calls that change state before they fail, on the real kernel and in the model: once excused by
name in mmlab/real/known.py ("partial-apply-before-hole", "madvise-applies-around-holes"), now
modelled, so `mmlab diff` agrees with no excuse at all.

* apply_vma_lock_flags() (mlock, mlock2, munlock) and do_mprotect_pkey() change each vma as they
  walk; a hole stops them with ENOMEM, the vmas before it changed (and mlock does not populate
  them: do_mlock() returns before __mm_populate());
* madvise_walk_vmas() applies the advice to every mapped part and reports ENOMEM for the holes
  at the end; madvise_populate() faults pages in up to the first refusal.
"""

from __future__ import annotations

import errno

import pytest

from mmlab import (MADV_DONTNEED, MADV_POPULATE_WRITE, MAP_ANONYMOUS, MAP_FIXED, MAP_POPULATE, MAP_PRIVATE,
                   PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE)
from mmlab.real import diff as D
from mmlab.real.backend import Region

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
FIXED_ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED


def test_mlock_over_a_hole_locks_the_prefix_unpopulated_on_both(can_mlock: None) -> None:
    with Region(8 * P, keep_reserved=False) as reg:
        mm = reg.mm
        mm.mmap(reg.base, 2 * P, RW, FIXED_ANON)
        with pytest.raises(OSError) as e:
            mm.mlock(reg.base, 4 * P)
        assert e.value.errno == errno.ENOMEM
        [v] = mm.maps(reg.base, reg.base + 2 * P)
        assert "lo" in v.vmflags and mm.mincore(reg.base, 2 * P) == bytes(2)  # locked, not populated
    m = D.ModelSide()
    m.mm.mmap(m.base, 2 * P, RW, FIXED_ANON)
    with pytest.raises(OSError):
        m.mm.mlock(m.base, 4 * P)
    assert m.mm.locked_vm == 2 and m.mm.mincore(m.base, 2 * P) == bytes(2)
    ops = [D.op("mmap", off=0, len=2 * P, prot=RW, flags=FIXED_ANON, hint=0), D.op("mlock", off=0, len=4 * P)]
    r = D.run_case(ops, known=[])
    assert r.agree and r.explained == []


@pytest.mark.parametrize("call", ["mprotect", "munlock", "mlock2"])
def test_walks_over_a_hole_agree_without_excuses(can_mlock: None, call: str) -> None:
    a = {"mprotect": dict(prot=PROT_READ), "munlock": {}, "mlock2": dict(flags=1)}[call]
    ops = [D.op("mmap", off=0, len=2 * P, prot=RW, flags=FIXED_ANON | MAP_POPULATE, hint=0),
           D.op("mlock", off=0, len=2 * P),
           D.op("mmap", off=3 * P, len=2 * P, prot=RW, flags=FIXED_ANON, hint=0),
           D.op(call, off=P, len=4 * P, **a)]
    r = D.run_case(ops, known=[])
    assert r.agree, r.mismatch


def test_madvise_dontneed_zaps_around_the_hole_on_both() -> None:
    with Region(8 * P, keep_reserved=False) as reg:
        mm = reg.mm
        mm.mmap(reg.base, 2 * P, RW, FIXED_ANON | MAP_POPULATE)
        with pytest.raises(OSError) as e:
            mm.madvise(reg.base, 4 * P, MADV_DONTNEED)
        assert e.value.errno == errno.ENOMEM
        assert mm.mincore(reg.base, 2 * P) == bytes(2)
    ops = [D.op("mmap", off=0, len=2 * P, prot=RW, flags=FIXED_ANON | MAP_POPULATE, hint=0),
           D.op("mmap", off=3 * P, len=P, prot=RW, flags=FIXED_ANON | MAP_POPULATE, hint=0),
           D.op("madvise", off=0, len=5 * P, advice=MADV_DONTNEED)]
    r = D.run_case(ops, known=[])
    assert r.agree and r.explained == []


def test_madvise_populate_stops_at_the_first_refusal_on_both() -> None:
    ops = [D.op("mmap", off=0, len=2 * P, prot=RW, flags=FIXED_ANON, hint=0),
           D.op("mmap", off=2 * P, len=P, prot=PROT_NONE, flags=FIXED_ANON, hint=0),
           D.op("madvise", off=0, len=3 * P, advice=MADV_POPULATE_WRITE)]
    r = D.run_case(ops, known=[])
    assert r.agree and r.explained == []
    m = D.ModelSide()
    m.mm.mmap(m.base, 2 * P, RW, FIXED_ANON)
    m.mm.mmap(m.base + 2 * P, P, PROT_NONE, FIXED_ANON)
    with pytest.raises(OSError) as e:
        m.mm.madvise(m.base, 3 * P, MADV_POPULATE_WRITE)
    assert e.value.errno == errno.EINVAL and m.mm.mincore(m.base, 3 * P) == b"\x01\x01\x00"
