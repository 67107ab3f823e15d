"""mmap(MAP_DROPPABLE) (6.11, ``map_droppable``; mm/mmap.c do_mmap()'s MAP_DROPPABLE case), as
measured on this machine's 6.18: anonymous only (without MAP_ANONYMOUS and fd -1: EBADF, with a
file: EINVAL), MAP_LOCKED or MAP_GROWSDOWN: EINVAL; smaps VmFlags "rd wr mr mw me nr wf dd dp";
mlock() succeeds and locks nothing (VmLck 0 kB, no "lo") but populates; MADV_KEEPONFORK and
MADV_DODUMP: EINVAL; MADV_MERGEABLE leaves it unmergeable; it does not merge with plain
anonymous memory. The v3.x profiles have no such map type (EINVAL)."""

from __future__ import annotations

import errno

import pytest

from mmlab import (MADV_DODUMP, MADV_FREE, MADV_GUARD_INSTALL, MADV_KEEPONFORK, MADV_MERGEABLE, MADV_WIPEONFORK,
                   MAP_ANONYMOUS, MAP_DROPPABLE, MAP_FIXED, MAP_GROWSDOWN, MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE,
                   MM, PAGE_SIZE, PROT_READ, PROT_WRITE, ZERO_COSTS, File)
from mm_helpers import errno_of, vmas_in

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE


def _flags(mm: MM, a: int) -> list[str]:
    return next(str(s["VmFlags"]).split() for s in mm.smaps() if s["start"] <= a < s["end"])


def test_droppable_mapping_flags_and_refusals(mm: MM) -> None:
    a = mm.mmap(0, 4 * P, RW, MAP_DROPPABLE | MAP_ANONYMOUS)
    assert _flags(mm, a) == "rd wr mr mw me nr wf dd dp".split()
    assert vmas_in(mm, a, a + 4 * P)[0].perms == "rw-p"
    assert errno_of(mm.mmap, 0, P, RW, MAP_DROPPABLE, None) == errno.EBADF
    assert errno_of(mm.mmap, 0, P, RW, MAP_DROPPABLE, File("f", P, cached=True)) == errno.EINVAL
    assert errno_of(mm.mmap, 0, P, RW, MAP_DROPPABLE | MAP_ANONYMOUS | MAP_LOCKED) == errno.EINVAL
    assert errno_of(mm.mmap, 0, P, RW, MAP_DROPPABLE | MAP_ANONYMOUS | MAP_GROWSDOWN) == errno.EINVAL
    assert mm.mmap(0, P, RW, MAP_DROPPABLE | MAP_ANONYMOUS | MAP_POPULATE)


def test_mlock_of_droppable_memory_populates_and_locks_nothing(mm: MM) -> None:
    a = mm.mmap(0, 4 * P, RW, MAP_DROPPABLE | MAP_ANONYMOUS)
    assert mm.mlock(a, 4 * P) == 0
    assert mm.vm_lck_kb() == 0 and "lo" not in _flags(mm, a) and mm.mincore(a, 4 * P) == b"\x01" * 4
    assert mm.check_invariants() == []


def test_droppable_advices(mm: MM) -> None:
    a = mm.mmap(0, 4 * P, RW, MAP_DROPPABLE | MAP_ANONYMOUS)
    assert errno_of(mm.madvise, a, P, MADV_KEEPONFORK) == errno.EINVAL
    assert errno_of(mm.madvise, a, P, MADV_DODUMP) == errno.EINVAL
    for advice in (MADV_WIPEONFORK, MADV_MERGEABLE, MADV_GUARD_INSTALL, MADV_FREE):
        assert mm.madvise(a, P, advice) == 0
    assert "mg" not in _flags(mm, a) and len(vmas_in(mm, a, a + 4 * P)) == 1


def test_droppable_does_not_merge_with_plain_anonymous_memory(mm: MM) -> None:
    a = mm.mmap(0, 4 * P, RW, MAP_DROPPABLE | MAP_ANONYMOUS)
    mm.mmap(a + 2 * P, 2 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    assert [(v.end - v.start) // P for v in vmas_in(mm, a, a + 4 * P)] == [2, 2]


@pytest.mark.parametrize("kernel", ["v3.7", "v3.9", "v6.18+map_droppable=off"])
def test_kernels_before_6_11_have_no_droppable_map_type(kernel: str) -> None:
    m = MM(kernel, ZERO_COSTS)
    assert errno_of(m.mmap, 0, P, RW, MAP_DROPPABLE | MAP_ANONYMOUS) == errno.EINVAL
