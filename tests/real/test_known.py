"""Every documented difference of mmlab/real/known.py: the real kernel really behaves so, the
model really does not, and the difference excuses that case -- and nothing else."""

from __future__ import annotations

import errno

import pytest

from mmlab import (MADV_DONTNEED, MADV_POPULATE_WRITE, MAP_ANONYMOUS, MAP_FIXED, MAP_POPULATE, MAP_PRIVATE,
                   MAP_SHARED, PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE)
from mmlab.real import diff as D
from mmlab.real.backend import Region
from mmlab.real.known import KNOWN, by_name
from mmlab.real.procfs import read_pagemap_present

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
FIXED_ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED


def test_every_difference_has_a_name_a_reason_and_one_mechanism() -> None:
    names = [k.name for k in KNOWN]
    assert len(names) == len(set(names))
    for k in KNOWN:
        assert k.reason and k.short
        assert (k.explains_obs is None) != (k.model_action is None)


def test_partial_apply_before_hole_real_kernel_locks_the_prefix(can_mlock: None) -> None:
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
    assert m.mm.locked_vm == 0  # the model changed nothing
    ops = [D.op("mmap", off=0, len=2 * P, prot=RW, flags=FIXED_ANON, hint=0), D.op("mlock", off=0, len=4 * P)]
    assert D.run_case(ops).explained == [(1, "partial-apply-before-hole")]
    assert not D.run_case(ops, known=[k for k in KNOWN if k.name != "partial-apply-before-hole"]).agree


def test_partial_apply_does_not_excuse_a_failure_with_nothing_mapped_at_the_start(can_mlock: None) -> None:
    ops = [D.op("mmap", off=2 * P, len=P, prot=RW, flags=FIXED_ANON, hint=0), D.op("mlock", off=0, len=4 * P)]
    r = D.run_case(ops)
    assert r.agree and r.explained == []  # Linux changes nothing either: no excuse needed


def test_madvise_dontneed_real_kernel_zaps_before_the_hole() -> None:
    with Region(8 * P, keep_reserved=False) as reg:
        mm = reg.mm
        mm.mmap(reg.base, 2 * P, RW, FIXED_ANON | MAP_POPULATE)
        with pytest.raises(OSError) as e:
            mm.madvise(reg.base, 4 * P, MADV_DONTNEED)
        assert e.value.errno == errno.ENOMEM
        assert mm.mincore(reg.base, 2 * P) == bytes(2)
    ops = [D.op("mmap", off=0, len=2 * P, prot=RW, flags=FIXED_ANON | MAP_POPULATE, hint=0),
           D.op("madvise", off=0, len=4 * P, advice=MADV_DONTNEED)]
    assert D.run_case(ops).explained == [(1, "madvise-applies-around-holes")]
    assert not D.run_case(ops, known=[]).agree


def test_madvise_populate_real_kernel_populates_up_to_the_first_refusal() -> None:
    ops = [D.op("mmap", off=0, len=2 * P, prot=RW, flags=FIXED_ANON, hint=0),
           D.op("mmap", off=2 * P, len=P, prot=PROT_NONE, flags=FIXED_ANON, hint=0),
           D.op("madvise", off=0, len=3 * P, advice=MADV_POPULATE_WRITE)]
    r = D.run_case(ops)
    assert r.agree and (2, "madvise-applies-around-holes") in r.explained
    bad = D.run_case(ops, known=[])
    assert not bad.agree and bad.mismatch.real.result == ("errno", errno.EINVAL)


def test_shmem_mincore_reports_page_cache_not_ptes() -> None:
    with Region(8 * P, keep_reserved=False) as reg:
        mm = reg.mm
        a = mm.mmap(reg.base, 2 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE)
        mm.madvise(a, 2 * P, MADV_DONTNEED)
        assert mm.mincore(a, 2 * P) == b"\x01\x01"  # still in the shmem object
        assert read_pagemap_present(a, a + 2 * P) == bytes(2)  # but no pte
    ops = [D.op("mmap", off=0, len=2 * P, prot=RW, flags=MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE,
                hint=0), D.op("madvise", off=0, len=2 * P, advice=MADV_DONTNEED)]
    assert (1, "shmem-mincore-page-cache") in D.run_case(ops).explained
    assert not D.run_case(ops, known=[]).agree


def test_shmem_mincore_does_not_excuse_private_memory() -> None:
    k = by_name("shmem-mincore-page-cache")
    real = D.Obs(("ok", 0), ((0, 1, "rw-p"),), (b"\x01",), ((), 0), (b"\x00",))
    model = D.Obs(("ok", 0), ((0, 1, "rw-p"),), (b"\x00",), ((), 0))
    assert not k.explains_obs("mincore", D.op("munlockall"), real, model)
    shared = D.Obs(("ok", 0), ((0, 1, "rw-s"),), (b"\x01",), ((), 0), (b"\x00",))
    assert k.explains_obs("mincore", D.op("munlockall"), shared, D.Obs(("ok", 0), ((0, 1, "rw-s"),), (b"\x00",), ((), 0)))
    present = D.Obs(("ok", 0), ((0, 1, "rw-s"),), (b"\x01",), ((), 0), (b"\x01",))
    assert not k.explains_obs("mincore", D.op("munlockall"), present,
                              D.Obs(("ok", 0), ((0, 1, "rw-s"),), (b"\x00",), ((), 0)))
