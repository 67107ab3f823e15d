"""madvise and mincore (mm/madvise.c, mm/mincore.c): section 7 item 62 (MADV_POPULATE_READ and
MADV_POPULATE_WRITE, 5.14: the profiles with ``populate_skips_inaccessible``) and DONTNEED."""

from __future__ import annotations

import errno

from mmlab import (MADV_DONTNEED, MADV_POPULATE_READ, MADV_POPULATE_WRITE, MAP_ANONYMOUS,
                   MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE, MM, PAGE_SIZE, PROT_READ, PROT_WRITE)
from mm_helpers import errno_of

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
P = PAGE_SIZE


def test_62_madv_populate(kmm: MM) -> None:
    """#62 KS madv_populate: MADV_POPULATE_READ on PROT_READ succeeds while MADV_POPULATE_WRITE
    is EINVAL; the reverse for PROT_WRITE; a range with a hole is ENOMEM; after success every
    page is present. Before 5.14 both advices are unknown: EINVAL."""
    r = kmm.mmap(0, 4 * P, PROT_READ, ANON)
    w = kmm.mmap(0, 4 * P, PROT_WRITE, ANON)
    if not kmm.kernel.populate_skips_inaccessible:
        assert errno_of(kmm.madvise, r, 4 * P, MADV_POPULATE_READ) == errno.EINVAL
        return
    assert errno_of(kmm.madvise, r, 4 * P, MADV_POPULATE_WRITE) == errno.EINVAL
    assert errno_of(kmm.madvise, w, 4 * P, MADV_POPULATE_READ) == errno.EINVAL
    assert kmm.madvise(r, 4 * P, MADV_POPULATE_READ) == 0
    assert kmm.madvise(w, 4 * P, MADV_POPULATE_WRITE) == 0
    assert kmm.mincore(r, 4 * P) == kmm.mincore(w, 4 * P) == b"\x01" * 4
    h = kmm.mmap(0, 3 * P, RW, ANON)
    kmm.munmap(h + P, P)
    assert errno_of(kmm.madvise, h, 3 * P, MADV_POPULATE_WRITE) == errno.ENOMEM


def test_dontneed_zaps_and_refuses_locked(kmm: MM) -> None:
    """MADV_DONTNEED drops the pages of the range (the next access faults a fresh page in); on a
    VM_LOCKED vma it is EINVAL."""
    a = kmm.mmap(0, 4 * P, RW, ANON | MAP_POPULATE)
    kmm.madvise(a + P, 2 * P, MADV_DONTNEED)
    assert kmm.mincore(a, 4 * P) == b"\x01\x00\x00\x01"
    kmm.touch(a + P, write=True)
    b = kmm.mmap(0, 2 * P, RW, ANON | MAP_LOCKED)
    before = kmm.snapshot()
    assert errno_of(kmm.madvise, b, 2 * P, MADV_DONTNEED) == errno.EINVAL
    assert kmm.snapshot() == before
    assert kmm.check_invariants() == []


def test_mincore_errors(kmm: MM) -> None:
    """mincore: an unaligned start is EINVAL, an unmapped page ENOMEM."""
    a = kmm.mmap(0, 2 * P, RW, ANON)
    assert errno_of(kmm.mincore, a + 1, P) == errno.EINVAL
    kmm.munmap(a + P, P)
    assert errno_of(kmm.mincore, a, 2 * P) == errno.ENOMEM
