"""MADV_GUARD_INSTALL / MADV_GUARD_REMOVE (6.13, ``madv_guard``; mm/madvise.c
madvise_guard_install()/madvise_guard_remove(), tools/testing/selftests/mm/guard-regions.c), as
measured on this machine's 6.18 (6 touched pages, guards on pages 1-2):

    install -> mincore 100111, touch page 1: SIGSEGV, page 3: ok
    MADV_DONTNEED, MADV_FREE, mprotect keep the guard; mremap moves it; MADV_GUARD_REMOVE,
    munmap and a MAP_FIXED mapping over it clear it
    MADV_POPULATE_WRITE/READ over it: EFAULT, the pages before it populated
    mlock over it: ENOMEM, VM_LOCKED set; mlock2(MLOCK_ONFAULT): ok
    install on a VM_LOCKED vma: EINVAL; remove on one: ok; a hole: ENOMEM
    a shared file vma: guard SIGSEGVs, mincore still shows the page cache (1111)
"""

from __future__ import annotations

import errno

import pytest

from mmlab import (MADV_DONTNEED, MADV_FREE, MADV_GUARD_INSTALL, MADV_GUARD_REMOVE, MADV_POPULATE_READ,
                   MADV_POPULATE_WRITE, MAP_ANONYMOUS, MAP_FIXED, MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE,
                   MAP_SHARED, MLOCK_ONFAULT, MM, MREMAP_FIXED, MREMAP_MAYMOVE, PAGE_SIZE, PROT_READ,
                   PROT_WRITE, SIGSEGV, ZERO_COSTS, File)
from mm_helpers import errno_of, free_range

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def _guarded(mm: MM) -> int:
    a = mm.mmap(0, 6 * P, RW, ANON | MAP_POPULATE)
    assert mm.madvise(a + P, 2 * P, MADV_GUARD_INSTALL) == 0
    return a


def _segv(mm: MM, addr: int, write: bool = False) -> bool:
    try:
        mm.touch(addr, write)
    except SIGSEGV:
        return True
    return False


def test_install_zaps_and_every_access_segfaults(mm: MM) -> None:
    a = _guarded(mm)
    assert mm.mincore(a, 6 * P) == b"\x01\x00\x00\x01\x01\x01"
    assert _segv(mm, a + P) and _segv(mm, a + 2 * P, write=True) and not _segv(mm, a + 3 * P)
    assert mm.mincore(a, 6 * P) == b"\x01\x00\x00\x01\x01\x01" and mm.check_invariants() == []


@pytest.mark.parametrize("how", ["dontneed", "free", "mprotect"])
def test_zaps_and_protection_changes_keep_the_guard(mm: MM, how: str) -> None:
    a = _guarded(mm)
    {"dontneed": lambda: mm.madvise(a, 6 * P, MADV_DONTNEED), "free": lambda: mm.madvise(a, 6 * P, MADV_FREE),
     "mprotect": lambda: mm.mprotect(a, 6 * P, PROT_READ)}[how]()
    assert _segv(mm, a + P)


def test_mremap_moves_the_guard_with_the_page_tables(mm: MM) -> None:
    a = _guarded(mm)
    b = free_range(mm, 6 * P)
    assert mm.mremap(a, 6 * P, 6 * P, MREMAP_FIXED | MREMAP_MAYMOVE, b) == b
    assert _segv(mm, b + P) and not _segv(mm, b + 3 * P)
    assert mm.mincore(b, 6 * P) == b"\x01\x00\x00\x01\x01\x01"


@pytest.mark.parametrize("how", ["remove", "munmap", "map-fixed"])
def test_remove_unmap_and_map_fixed_clear_the_guard(mm: MM, how: str) -> None:
    a = _guarded(mm)
    if how == "remove":
        assert mm.madvise(a, 6 * P, MADV_GUARD_REMOVE) == 0
    elif how == "munmap":
        mm.munmap(a, 6 * P)
        mm.mmap(a, 6 * P, RW, ANON | MAP_FIXED)
    else:
        mm.mmap(a, 6 * P, RW, ANON | MAP_FIXED)
    assert not _segv(mm, a + P) and mm.guards == []


def test_populate_stops_at_the_guard_with_efault(mm: MM) -> None:
    a = _guarded(mm)
    mm.madvise(a, 6 * P, MADV_DONTNEED)
    for advice in (MADV_POPULATE_WRITE, MADV_POPULATE_READ):
        assert errno_of(mm.madvise, a, 6 * P, advice) == errno.EFAULT
        assert mm.mincore(a, 6 * P) == b"\x01" + bytes(5)


def test_mlock_over_a_guard_locks_then_fails_to_populate(mm: MM) -> None:
    """do_mlock(): the lock is applied, __mm_populate() meets the guard (-EFAULT), mlock reports
    ENOMEM; mlock2(MLOCK_ONFAULT) does not populate and succeeds."""
    a = _guarded(mm)
    mm.madvise(a, 6 * P, MADV_DONTNEED)
    assert errno_of(mm.mlock, a, 6 * P) == errno.ENOMEM
    assert mm.vm_lck_kb() == 24 and mm.mincore(a, 6 * P) == b"\x01" + bytes(5)
    mm.munlock(a, 6 * P)
    assert mm.mlock2(a, 6 * P, MLOCK_ONFAULT) == 0


def test_locked_vmas_refuse_install_but_allow_remove(mm: MM) -> None:
    a = mm.mmap(0, 4 * P, RW, ANON | MAP_LOCKED)
    assert errno_of(mm.madvise, a, 4 * P, MADV_GUARD_INSTALL) == errno.EINVAL
    assert mm.madvise(a, 4 * P, MADV_GUARD_REMOVE) == 0
    assert mm.mincore(a, 4 * P) == b"\x01" * 4


def test_a_hole_is_enomem_after_guarding_the_mapped_parts(mm: MM) -> None:
    a = mm.mmap(0, 3 * P, RW, ANON | MAP_POPULATE)
    mm.munmap(a + P, P)
    assert errno_of(mm.madvise, a, 3 * P, MADV_GUARD_INSTALL) == errno.ENOMEM
    assert _segv(mm, a) and _segv(mm, a + 2 * P)


def test_a_file_guard_segfaults_while_mincore_shows_the_page_cache(mm: MM) -> None:
    """6.15 lets file-backed vmas have guards; mincore_pte_range() treats the marker as none and
    asks the page cache."""
    f = File("disk", 4 * P, cached=True)
    a = mm.mmap(0, 4 * P, RW, MAP_SHARED | MAP_POPULATE, f)
    assert mm.madvise(a, P, MADV_GUARD_INSTALL) == 0
    assert _segv(mm, a) and mm.mincore(a, 4 * P) == b"\x01" * 4 and mm.pt.count_present(a, a + 4 * P) == 3


@pytest.mark.parametrize("kernel", ["v3.7", "v3.9", "v6.18+madv_guard=off"])
def test_kernels_without_guards_refuse_the_advices(kernel: str) -> None:
    mm = MM(kernel, ZERO_COSTS)
    a = mm.mmap(0, 2 * P, RW, ANON)
    assert errno_of(mm.madvise, a, P, MADV_GUARD_INSTALL) == errno.EINVAL
    assert errno_of(mm.madvise, a, P, MADV_GUARD_REMOVE) == errno.EINVAL


def test_install_marks_the_whole_vma_maybe_guard_sticky_and_mergeable(mm: MM) -> None:
    """VM_MAYBE_GUARD (smaps "gu", measured on 6.18): set on the whole vma at install, without a
    split; it stays after MADV_GUARD_REMOVE, does not stop merges, and a merged vma keeps it."""
    def flags(a: int) -> list[str]:
        return next(str(s["VmFlags"]).split() for s in mm.smaps() if s["start"] <= a < s["end"])
    a = free_range(mm, 8 * P)
    mm.mmap(a, 2 * P, RW, ANON | MAP_FIXED)
    assert mm.madvise(a, P, MADV_GUARD_INSTALL) == 0
    assert flags(a) == "rd wr mr mw me gu ac".split() and len([v for v in mm.maps() if a <= v.start < a + 8 * P]) == 1
    mm.mmap(a + 2 * P, 2 * P, RW, ANON | MAP_FIXED)
    [v] = [v for v in mm.maps() if a <= v.start < a + 8 * P]
    assert (v.start, v.end) == (a, a + 4 * P) and "gu" in flags(a + 3 * P)
    assert mm.madvise(a, P, MADV_GUARD_REMOVE) == 0 and "gu" in flags(a)
