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
    """MADV_DONTNEED of shared anonymous memory takes the ptes but leaves the pages in the shmem
    object, which mincore reports; the model keeps that object's pages too, so no excuse is needed."""
    with Region(8 * P, keep_reserved=False) as reg:
        mm = reg.mm
        a = mm.mmap(reg.base, 2 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE)
        mm.madvise(a, 2 * P, MADV_DONTNEED)
        assert mm.mincore(a, 2 * P) == b"\x01\x01"  # still in the shmem object
        assert read_pagemap_present(a, a + 2 * P) == bytes(2)  # but no pte
    ops = [D.op("mmap", off=0, len=2 * P, prot=RW, flags=MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE,
                hint=0), D.op("madvise", off=0, len=2 * P, advice=MADV_DONTNEED)]
    assert D.run_case(ops, known=[]).agree


def test_file_fault_around_is_modelled() -> None:
    """A read fault on a cold file mapping maps the cached pages around it on this kernel
    (do_fault_around()); the v6.18 model does the same, so the diff agrees with no excuse."""
    ops = [D.op("mmap", off=0, len=4 * P, prot=PROT_READ, flags=MAP_SHARED | MAP_FIXED, hint=0, file=1, foff=0),
           D.op("touch", off=P, write=0)]
    with Region(8 * P, keep_reserved=False) as reg, D.RealFiles(D.file_dir()) as files:
        a = reg.mm.mmap(reg.base, 4 * P, PROT_READ, MAP_SHARED | MAP_FIXED, files.disk.fd, 0)
        reg.mm.touch(a + P)
        assert reg.mm.mincore(a, 4 * P) == b"\x01" * 4  # read-around cached the whole file
        assert sum(read_pagemap_present(a, a + 4 * P)) > 1  # and more than one pte is there
    r = D.run_case(ops, known=[])
    assert r.agree and not r.explained


def test_diff_compares_which_file_and_offset() -> None:
    """A file vma's layout entry names the file and the page offset on both sides."""
    ops = [D.op("mmap", off=2 * P, len=2 * P, prot=PROT_READ, flags=MAP_PRIVATE | MAP_FIXED, hint=0, file=3, foff=3 * P),
           D.op("remap_file_pages", off=2 * P, len=P, prot=0, pgoff=1)]
    r = D.run_case(ops)
    assert r.agree
    with Region(8 * P, keep_reserved=False) as reg, D.RealFiles(D.file_dir()) as files:
        side = D.RealSide(reg, files)
        side.run(ops[0])
        obs = D.observe(side, ("ok", 0))
        assert (2, 4, "r--p", "memfd", 3) in obs.layout
