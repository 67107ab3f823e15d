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
