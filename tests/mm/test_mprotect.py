"""mprotect (mm/mprotect.c) on every profile. Section 7 has no mprotect item of its own (#57 uses
it and is in test_mmap.py); these pin down do_mprotect_pkey()'s errno rules and vma handling."""

from __future__ import annotations

import errno

import pytest

from mmlab import (MAP_ANONYMOUS, MAP_FIXED, MAP_GROWSDOWN, MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE,
                   MAP_SHARED, MM, PAGE_SIZE, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, SIGSEGV,
                   ZERO_COSTS, File)
from mmlab.flags import PROT_GROWSDOWN, PROT_GROWSUP
from mmlab.mm.pagetable import PTE_WRITTEN
from mm_helpers import errno_of, vmas_in

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
P = PAGE_SIZE


def test_split_and_merge(kmm: MM) -> None:
    """mprotect of the middle page splits the vma in three; restoring it merges them back."""
    a = kmm.mmap(0, 3 * P, RW, ANON)
    kmm.mprotect(a + P, P, PROT_READ)
    assert [v.perms for v in vmas_in(kmm, a, a + 3 * P)] == ["rw-p", "r--p", "rw-p"]
    kmm.mprotect(a + P, P, RW)
    assert len(vmas_in(kmm, a, a + 3 * P)) == 1
    assert kmm.check_invariants() == []


def test_over_several_vmas(kmm: MM) -> None:
    """One call walks every vma of the range."""
    a = kmm.mmap(0, 4 * P, RW, ANON)
    kmm.mmap(a + 4 * P, 4 * P, PROT_READ, ANON | MAP_FIXED)
    kmm.mprotect(a + 2 * P, 4 * P, PROT_EXEC)
    assert [(v.end - v.start) // P for v in vmas_in(kmm, a, a + 8 * P)] == [2, 4, 2]
    assert vmas_in(kmm, a + 2 * P, a + 3 * P)[0].perms == "--xp"


def test_present_pages_stay_and_protection_applies(kmm: MM) -> None:
    """PROT_NONE keeps the pages (still resident) but an access is SIGSEGV; PROT_READ lets
    reads in and a write is still SIGSEGV."""
    a = kmm.mmap(0, 2 * P, RW, ANON | MAP_POPULATE)
    kmm.mprotect(a, 2 * P, PROT_NONE)
    assert kmm.mincore(a, 2 * P) == b"\x01\x01"
    with pytest.raises(SIGSEGV):
        kmm.touch(a)
    kmm.mprotect(a, 2 * P, PROT_READ)
    kmm.touch(a)
    with pytest.raises(SIGSEGV):
        kmm.touch(a, write=True)


def test_eacces_without_vm_may(kmm: MM) -> None:
    """PROT_WRITE on a shared mapping of a file opened read-only is EACCES (no VM_MAYWRITE); a
    private one may become writable (COW)."""
    f = File("ro", 4 * P, mode="r")
    s = kmm.mmap(0, 4 * P, PROT_READ, MAP_SHARED, f)
    p = kmm.mmap(0, 4 * P, PROT_READ, MAP_PRIVATE, f)
    before = kmm.snapshot()
    assert errno_of(kmm.mprotect, s, 4 * P, RW) == errno.EACCES
    assert kmm.snapshot() == before
    kmm.mprotect(p, 4 * P, RW)
    kmm.touch(p, write=True)


def test_errors_change_nothing(kmm: MM) -> None:
    """EINVAL for an unaligned start, unknown prot bits, both GROWS flags, PROT_GROWSUP, and
    PROT_GROWSDOWN on a vma that does not grow down; ENOMEM for no vma at start; none of them
    changes anything (do_mprotect_pkey() checks them before the vma walk)."""
    a = kmm.mmap(0, 4 * P, RW, ANON)
    kmm.munmap(a + 2 * P, P)
    before = kmm.snapshot()
    assert errno_of(kmm.mprotect, a + 1, P, PROT_READ) == errno.EINVAL
    assert errno_of(kmm.mprotect, a, P, 0x40) == errno.EINVAL
    assert errno_of(kmm.mprotect, a, P, PROT_READ | PROT_GROWSDOWN | PROT_GROWSUP) == errno.EINVAL
    assert errno_of(kmm.mprotect, a, P, PROT_READ | PROT_GROWSUP) == errno.EINVAL
    assert errno_of(kmm.mprotect, a, P, PROT_READ | PROT_GROWSDOWN) == errno.EINVAL
    assert errno_of(kmm.mprotect, a + 2 * P, P, PROT_READ) == errno.ENOMEM
    assert kmm.snapshot() == before


def test_a_hole_stops_the_walk_after_the_vmas_before_it(kmm: MM) -> None:
    """do_mprotect_pkey() changes each vma as it walks: over [vma][hole][vma] the first vma gets
    the new protection, the walk meets the hole and returns ENOMEM, the vma after it keeps its
    own (LTP mprotect01 ENOMEM case; measured on 6.18: r--p, hole, rw-p)."""
    a = kmm.mmap(0, 4 * P, RW, ANON)
    kmm.munmap(a + 2 * P, P)
    assert errno_of(kmm.mprotect, a, 4 * P, PROT_READ) == errno.ENOMEM
    assert [(v.perms, (v.end - v.start) // P) for v in vmas_in(kmm, a, a + 4 * P)] == \
        [("r--p", 2), ("rw-p", 1)]
    assert kmm.check_invariants() == []


def test_eacces_stops_the_walk_after_the_vmas_before_it(kmm: MM) -> None:
    """A vma that may not get the protection (PROT_WRITE on a shared mapping of a read-only
    file) stops the walk with EACCES; the vma before it already has it (measured on 6.18)."""
    ro = File("ro", 2 * P, mode="r", cached=True)
    a = kmm.mmap(0, 4 * P, PROT_READ, ANON)
    kmm.mmap(a + 2 * P, 2 * P, PROT_READ, MAP_SHARED | MAP_FIXED, ro)
    assert errno_of(kmm.mprotect, a, 4 * P, RW) == errno.EACCES
    assert [(v.perms, (v.end - v.start) // P) for v in vmas_in(kmm, a, a + 4 * P)] == \
        [("rw-p", 2), ("r--s", 2)]


def test_zero_length_is_a_noop(kmm: MM) -> None:
    """A zero length succeeds without looking at the range (after the alignment check)."""
    assert kmm.mprotect(0x10000000, 0, PROT_READ) == 0
    assert errno_of(kmm.mprotect, 0x10000001, 0, PROT_READ) == errno.EINVAL


def test_growsdown_applies_from_the_vma_start(kmm: MM) -> None:
    """PROT_GROWSDOWN extends the change down to the start of a VM_GROWSDOWN vma."""
    a = kmm.mmap(0, 8 * P, RW, ANON | MAP_GROWSDOWN)
    kmm.mprotect(a + 4 * P, P, PROT_READ | PROT_GROWSDOWN)
    assert [(v.perms, (v.end - v.start) // P) for v in vmas_in(kmm, a, a + 8 * P)] == \
        [("r--p", 5), ("rw-p", 3)]


def test_split_at_max_map_count(kmm: MM) -> None:
    """A split beyond max_map_count is ENOMEM: every split_vma() checks it."""
    mm = MM(kmm.kernel, ZERO_COSTS, max_map_count=4, layout="bare")
    a = mm.mmap(0, 4 * P, RW, ANON)
    mm.mmap(0, 4 * P, PROT_READ, ANON)
    mm.mmap(0, 4 * P, PROT_EXEC, ANON)
    before = mm.snapshot()
    assert errno_of(mm.mprotect, a + P, P, PROT_READ) == errno.ENOMEM  # two splits: 3 + 2 > 4
    assert mm.snapshot() == before
    mm.mprotect(a + 3 * P, P, PROT_READ)  # one split: 3 + 1 == 4
    assert mm.map_count == 4 and mm.check_invariants() == []


def test_locked_private_becoming_writable(kmm: MM) -> None:
    """From 4.9 (``mprotect_populates_locked``) a private VM_LOCKED vma that becomes writable has
    its COW broken at once, under the write lock; before, at the first write."""
    f = File("f", 4 * P, cached=True)
    a = kmm.mmap(0, 4 * P, PROT_READ, MAP_PRIVATE | MAP_LOCKED, f)
    assert kmm.mincore(a, 4 * P) == b"\x01" * 4
    assert not any(kmm.pt.get(a + i * P) & PTE_WRITTEN for i in range(4))
    kmm.mmap_sem.history.clear()
    kmm.mprotect(a, 4 * P, RW)
    written = all(kmm.pt.get(a + i * P) & PTE_WRITTEN for i in range(4))
    assert written == kmm.kernel.mprotect_populates_locked
    assert [r.mode for r in kmm.mmap_sem.history if r.call == "mprotect"] == ["W"]
    assert kmm.check_invariants() == []


@pytest.mark.parametrize("touch", [False, True])
def test_a_touched_page_keeps_vm_account_and_no_longer_merges_back(touch: bool) -> None:
    """mprotect_fixup(): making private memory writable charges it (VM_ACCOUNT, smaps "ac"); going
    back to read-only gives the charge back only while the vma has no anon_vma. Measured on 6.18:
    a PROT_NONE mapping whose last page went PROT_READ|PROT_WRITE and back merges into one vma if
    the page was never touched, and stays two vmas if it was (as it does when MAP_LOCKED populated
    it)."""
    mm = MM("v6.18", ZERO_COSTS)
    a = mm.mmap(0, 6 * P, PROT_NONE, ANON)
    mm.mprotect(a + 5 * P, P, RW)
    assert "ac" in next(s for s in mm.smaps() if s["start"] == a + 5 * P)["VmFlags"].split()
    if touch:
        mm.touch(a + 5 * P, write=True)
    mm.mprotect(a + 5 * P, P, PROT_NONE)
    assert len(vmas_in(mm, a, a + 6 * P)) == (2 if touch else 1)
