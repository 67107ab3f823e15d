"""Conformance of mremap (mm/mremap.c): section 7 of kernel-semantics.md, items 51-55, on every
profile; plus what the model adds: provenance and lineage across a move, MREMAP_DONTUNMAP (5.7,
``mremap_dontunmap``), and where the populate of a VM_LOCKED growth runs (patch 6).

Skipped, because it does not apply to a model: #51's msync of the grown range (no msync).
"""

from __future__ import annotations

import errno

import pytest

from mmlab import (MAP_ANONYMOUS, MAP_FIXED, MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED,
                   MM, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, PAGE_SIZE,
                   PROT_READ, PROT_WRITE, SIGSEGV, TASK_SIZE, VM_LOCKED, ZERO_COSTS, File)
from mmlab.mm.pagetable import PTE_MLOCKED, PTE_POPULATE
from mm_helpers import errno_of, free_range, vma_at

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
P = PAGE_SIZE


def test_51_maymove_grows_a_shared_file_mapping(kmm: MM) -> None:
    """#51 LTP mremap01: MREMAP_MAYMOVE growing a 1000-page shared file mapping to 2000 pages
    succeeds, and the whole new range is writable."""
    f = File("mremap01", 2000 * P)
    a = kmm.mmap(0, 1000 * P, RW, MAP_SHARED, f)
    kmm.mmap(a + 1000 * P, P, PROT_READ, ANON | MAP_FIXED)  # no room to grow in place
    b = kmm.mremap(a, 1000 * P, 2000 * P, MREMAP_MAYMOVE)
    assert b != a
    for i in range(2000):
        kmm.touch(b + i * P, write=True)
    assert kmm.mincore(b, 2000 * P) == b"\x01" * 2000
    assert kmm.file_page(b + 1999 * P) == (f, 1999)
    assert kmm.check_invariants() == []


def test_52_errors(kmm: MM) -> None:
    """#52 LTP mremap02-04: an unaligned old_address is EINVAL; an unmapped one EFAULT; growing
    without MREMAP_MAYMOVE when in-place expansion is impossible ENOMEM."""
    a = kmm.mmap(0, 4 * P, RW, ANON)
    kmm.mmap(a + 4 * P, P, PROT_READ, ANON | MAP_FIXED)
    before = kmm.snapshot()
    assert errno_of(kmm.mremap, a + 1, P, 2 * P) == errno.EINVAL
    assert errno_of(kmm.mremap, free_range(kmm, P), P, 2 * P) == errno.EFAULT
    assert errno_of(kmm.mremap, a, 4 * P, 8 * P) == errno.ENOMEM
    assert kmm.snapshot() == before


def test_53_fixed_errors_and_replacement(kmm: MM) -> None:
    """#53 LTP mremap05, KS mremap_test: MREMAP_FIXED without MAYMOVE, an unaligned new_addr, and
    overlapping old and new ranges are EINVAL; FIXED|MAYMOVE moves the contents and replaces
    whatever was mapped at the destination."""
    a = kmm.mmap(0, 4 * P, RW, ANON | MAP_POPULATE)
    dst = kmm.mmap(0, 8 * P, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)
    before = kmm.snapshot()
    assert errno_of(kmm.mremap, a, 4 * P, 4 * P, MREMAP_FIXED, dst) == errno.EINVAL
    assert errno_of(kmm.mremap, a, 4 * P, 4 * P, MREMAP_FIXED | MREMAP_MAYMOVE, dst + 1) == errno.EINVAL
    assert errno_of(kmm.mremap, a, 4 * P, 4 * P, MREMAP_FIXED | MREMAP_MAYMOVE, a + 2 * P) == errno.EINVAL
    assert kmm.snapshot() == before
    prov = [kmm.pt.provenance(a + i * P) for i in range(4)]
    old_id = vma_at(kmm, dst).vm_id
    assert kmm.mremap(a, 4 * P, 4 * P, MREMAP_FIXED | MREMAP_MAYMOVE, dst + 2 * P) == dst + 2 * P
    assert [kmm.pt.provenance(dst + (2 + i) * P) for i in range(4)] == prov  # contents moved
    moved = vma_at(kmm, dst + 2 * P)
    assert moved.perms == "rw-p" and moved.vm_id != old_id
    assert vma_at(kmm, dst).perms == "r--p" and vma_at(kmm, dst + 6 * P).perms == "r--p"
    with pytest.raises(SIGSEGV):
        kmm.touch(a)
    assert kmm.check_invariants() == []


def test_54_in_place_growth_merges(kmm: MM) -> None:
    """#54 KS mremap_test mremap_expand_merge: in-place growth into a hole merges with the
    adjacent compatible vma into one vma."""
    a = kmm.mmap(0, 3 * P, RW, ANON)
    kmm.munmap(a + P, P)
    assert kmm.mremap(a, P, 2 * P, 0) == a
    assert len([v for v in kmm.maps() if v.start < a + 3 * P and v.end > a]) == 1
    assert kmm.check_invariants() == []


def test_54_in_place_growth_merges_file_offset(kmm: MM) -> None:
    """#54 KS mremap_test mremap_expand_merge_offset: the same for a file mapping whose offsets
    line up."""
    f = File("merge", 8 * P)
    a = kmm.mmap(0, 3 * P, RW, MAP_SHARED, f)
    kmm.munmap(a + P, P)
    assert kmm.mremap(a, P, 2 * P, 0) == a
    v = [v for v in kmm.maps() if v.start < a + 3 * P and v.end > a]
    assert len(v) == 1 and v[0].pgoff == 0 and v[0].end == a + 3 * P


@pytest.mark.parametrize("how", ["in-place", "move"])
def test_55_locked_growth_populates_the_tail(kmm: MM, how: str) -> None:
    """#55 code: patch 6, 2025 populate_expand: growing a VM_LOCKED vma populates the new tail
    [new_addr+old_len, new_addr+new_len): under the write lock in v3.7, after it is dropped
    (a read hold after the write hold) from v3.9 on."""
    a = free_range(kmm, 16 * P)
    kmm.mmap(a, 4 * P, RW, ANON | MAP_LOCKED)
    if how == "move":
        kmm.mmap(a + 4 * P, P, PROT_READ, ANON | MAP_FIXED)
    kmm.mmap_sem.history.clear()
    b = kmm.mremap(a, 4 * P, 12 * P, MREMAP_MAYMOVE)
    assert (b == a) == (how == "in-place")
    assert kmm.mincore(b, 12 * P) == b"\x01" * 12
    assert all(kmm.pt.get(b + i * P) & PTE_MLOCKED for i in range(12))
    assert kmm.locked_vm == 12
    modes = [r.mode for r in kmm.mmap_sem.history if r.call == "mremap"]
    assert modes == (["W", "R"] if kmm.kernel.mremap_populate_after_unlock else ["W"])
    st, _, call = kmm.pt.provenance(b + 11 * P)
    assert st & PTE_POPULATE and call == kmm.call_history[-1].call_id


def test_55_locked_growth_over_the_limit_is_eagain(kmm: MM) -> None:
    """#55 vma_to_resize(): growing a VM_LOCKED vma beyond RLIMIT_MEMLOCK (no CAP_IPC_LOCK) is
    EAGAIN."""
    mm = MM(kmm.kernel, ZERO_COSTS, cap_ipc_lock=False, rlimit_memlock=8 * P)
    a = free_range(mm, 16 * P)
    mm.mmap(a, 4 * P, RW, ANON | MAP_LOCKED)
    before = mm.snapshot()
    assert errno_of(mm.mremap, a, 4 * P, 12 * P, MREMAP_MAYMOVE) == errno.EAGAIN
    assert mm.snapshot() == before
    assert mm.mremap(a, 4 * P, 8 * P, 0) == a


# ---------------------------------------------------------------- beyond section 7
def test_shrink_unmaps_the_tail(kmm: MM) -> None:
    """A shrinking mremap unmaps the tail; from 4.20 the zap runs after downgrade_write()."""
    a = kmm.mmap(0, 8 * P, RW, ANON | MAP_POPULATE | MAP_LOCKED)
    kmm.mmap_sem.history.clear()
    assert kmm.mremap(a, 8 * P, 3 * P) == a
    assert vma_at(kmm, a).end == a + 3 * P and kmm.locked_vm == 3
    with pytest.raises(SIGSEGV):
        kmm.touch(a + 3 * P)
    recs = [r for r in kmm.mmap_sem.history if r.call == "mremap"]
    if kmm.kernel.munmap_downgrade:
        assert [(r.mode, r.how) for r in recs] == [("W", ""), ("R", "downgrade")]
    else:
        assert [r.mode for r in recs] == ["W"]
    assert kmm.check_invariants() == []


def test_move_is_a_replacement_at_the_destination(kmm: MM) -> None:
    """The moved mapping keeps its pages (with their provenance) but is a new mapping where it
    lands: a new vm_id and a new origin, the mremap call's."""
    a = kmm.mmap(0, 4 * P, RW, ANON | MAP_POPULATE)
    kmm.mmap(a + 4 * P, P, PROT_READ, ANON | MAP_FIXED)
    old = vma_at(kmm, a)
    o_old = kmm.origins.at(a)
    b = kmm.mremap(a, 4 * P, 8 * P, MREMAP_MAYMOVE)
    new = vma_at(kmm, b)
    o_new = kmm.origins.at(b)
    assert new.vm_id != old.vm_id and o_new is not None and o_new.oid != o_old.oid
    assert o_new.kind == "mremap" and o_new.call_id == kmm.call_history[-1].call_id
    assert kmm.mincore(b, 8 * P) == b"\x01" * 4 + bytes(4)  # not locked: the tail stays empty
    assert kmm.origins.at(a) is None


def test_dontunmap(kmm: MM) -> None:
    """MREMAP_DONTUNMAP (5.7): the pages move, the old vma stays mapped, empty and unlocked.
    Before 5.7 the flag is unknown: EINVAL. It never allows a size change."""
    a = kmm.mmap(0, 4 * P, RW, ANON | MAP_LOCKED)
    if not kmm.kernel.mremap_dontunmap:
        assert errno_of(kmm.mremap, a, 4 * P, 4 * P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP) == errno.EINVAL
        return
    assert errno_of(kmm.mremap, a, 4 * P, 8 * P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP) == errno.EINVAL
    assert errno_of(kmm.mremap, a, 4 * P, 4 * P, MREMAP_DONTUNMAP) == errno.EINVAL
    b = kmm.mremap(a, 4 * P, 4 * P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP)
    assert b != a
    assert kmm.mincore(a, 4 * P) == bytes(4) and kmm.mincore(b, 4 * P) == b"\x01" * 4
    assert not vma_at(kmm, a).flags & VM_LOCKED and vma_at(kmm, b).flags & VM_LOCKED
    assert kmm.locked_vm == 4 and kmm.check_invariants() == []
    kmm.touch(a, write=True)  # still mapped: a fresh page


def test_fixed_beyond_task_size_is_einval(kmm: MM) -> None:
    """mremap_to(): a destination beyond TASK_SIZE is EINVAL."""
    a = kmm.mmap(0, 2 * P, RW, ANON)
    assert errno_of(kmm.mremap, a, 2 * P, 2 * P, MREMAP_FIXED | MREMAP_MAYMOVE, TASK_SIZE - P) == errno.EINVAL


def test_old_range_past_its_vma_is_efault(kmm: MM) -> None:
    """vma_to_resize(): an old range running past its vma (we can't remap across vma boundaries)
    is EFAULT."""
    a = kmm.mmap(0, 4 * P, RW, ANON)
    kmm.mmap(a + 4 * P, 4 * P, PROT_READ, ANON | MAP_FIXED)
    assert errno_of(kmm.mremap, a, 8 * P, 12 * P, MREMAP_MAYMOVE) == errno.EFAULT


def test_duplicating_a_shared_mapping(kmm: MM) -> None:
    """old_len 0 duplicates a shared mapping (the old one stays); for a private one it is
    EINVAL."""
    f = File("dup", 4 * P)
    a = kmm.mmap(0, 4 * P, RW, MAP_SHARED, f)
    b = kmm.mremap(a, 0, 4 * P, MREMAP_MAYMOVE)
    assert b != a and kmm.file_page(b + P) == (f, 1) and kmm.file_page(a + P) == (f, 1)
    c = kmm.mmap(0, 4 * P, RW, ANON)
    assert errno_of(kmm.mremap, c, 0, 4 * P, MREMAP_MAYMOVE) == errno.EINVAL
    assert kmm.check_invariants() == []


# ---------------------------------------------------------------------------- 6.17: multi-vma moves
def _two_vmas_and_a_hole(mm: MM) -> int:
    """[2 pages rw, touched][hole][2 pages r--], as the 6.18 measurement had them."""
    from mmlab import PROT_READ as R
    a = free_range(mm, 8 * P)
    mm.mmap(a, 2 * P, RW, ANON | MAP_FIXED | MAP_POPULATE)
    mm.mmap(a + 3 * P, 2 * P, R, ANON | MAP_FIXED)
    return a


def _layout(mm: MM, a: int, n: int) -> list[tuple[int, int, str]]:
    return [((v.start - a) // P, (v.end - a) // P, v.perms) for v in mm.maps() if v.end > a and v.start < a + n * P]


def test_fixed_move_of_several_vmas_keeps_the_holes(kmm: MM) -> None:
    """remap_move() (6.17, ``mremap_move_multi_vma``; selftests mremap_test "move_multiple_vmas"):
    MREMAP_FIXED without a size change over [vma][hole][vma] moves both, the hole stays between
    them, the pages go along (measured on 6.18: [0,2) rw-p, [3,5) r--p, mincore 11.00, the old
    range empty). Before 6.17 the range runs past its vma: EFAULT."""
    a = _two_vmas_and_a_hole(kmm)
    b = free_range(kmm, 8 * P)
    if not kmm.kernel.mremap_move_multi_vma:
        assert errno_of(kmm.mremap, a, 5 * P, 5 * P, MREMAP_FIXED | MREMAP_MAYMOVE, b) == errno.EFAULT
        return
    assert kmm.mremap(a, 5 * P, 5 * P, MREMAP_FIXED | MREMAP_MAYMOVE, b) == b
    assert _layout(kmm, b, 5) == [(0, 2, "rw-p"), (3, 5, "r--p")] and _layout(kmm, a, 5) == []
    assert kmm.mincore(b, 2 * P) == b"\x01\x01" and kmm.mincore(b + 3 * P, 2 * P) == bytes(2)
    assert kmm.check_invariants() == []


def test_multi_vma_moves_need_fixed_no_resize_and_a_vma_at_start(mm: MM) -> None:
    """Measured on 6.18: a resize (grow or shrink) over several vmas is EFAULT, and so is a range
    starting in a hole; a partial first vma and a trailing hole are fine; MREMAP_DONTUNMAP with
    MREMAP_FIXED moves them all and leaves the old vmas."""
    a = _two_vmas_and_a_hole(mm)
    b = free_range(mm, 8 * P)
    assert errno_of(mm.mremap, a, 5 * P, 6 * P, MREMAP_FIXED | MREMAP_MAYMOVE, b) == errno.EFAULT
    assert errno_of(mm.mremap, a, 5 * P, 4 * P, MREMAP_FIXED | MREMAP_MAYMOVE, b) == errno.EFAULT
    assert errno_of(mm.mremap, a - P, 6 * P, 6 * P, MREMAP_FIXED | MREMAP_MAYMOVE, b) == errno.EFAULT
    assert mm.mremap(a + P, 5 * P, 5 * P, MREMAP_FIXED | MREMAP_MAYMOVE, b) == b  # ends in a hole
    assert _layout(mm, b, 5) == [(0, 1, "rw-p"), (2, 4, "r--p")] and _layout(mm, a, 5) == [(0, 1, "rw-p")]
    c = _two_vmas_and_a_hole(mm)
    d = free_range(mm, 8 * P)
    assert mm.mremap(c, 5 * P, 5 * P, MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP, d) == d
    assert _layout(mm, d, 5) == [(0, 2, "rw-p"), (3, 5, "r--p")] and len(_layout(mm, c, 5)) == 2


def test_dontunmap_fixed_move_of_two_file_vmas(mm: MM) -> None:
    """Found by the conformance suite: mremap(MAYMOVE|FIXED|DONTUNMAP) of 3 pages over two vmas
    of one disk file at different offsets moves both (6.18: ok; the model said EFAULT)."""
    f = File("disk", 16 * P, cached=True)
    a = free_range(mm, 12 * P)
    mm.mmap(a + 6 * P, P, RW, MAP_SHARED | MAP_FIXED, f, 0)
    mm.mmap(a + 7 * P, 2 * P, RW, MAP_SHARED | MAP_FIXED, f, 5 * P)
    assert mm.mremap(a + 6 * P, 3 * P, 3 * P, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, a) == a
    assert [(v.start - a) // P for v in mm.maps() if a <= v.start < a + 12 * P] == [0, 1, 6, 7]
    assert mm.file_page(a) == (f, 0) and mm.file_page(a + P) == (f, 5)


def test_a_moved_anonymous_vma_merges_only_if_never_faulted(mm: MM) -> None:
    """copy_vma(): an anonymous vma without an anon_vma takes the pgoff of where it lands, so it
    merges there (mmlab diff seed 1 case 222, 6.18: moving the first page of a 6-page PROT_NONE
    mapping onto its second leaves one vma); a faulted one keeps its pgoff and stays apart."""
    from mmlab import PROT_NONE
    for touched in (False, True):
        a = free_range(mm, 8 * P)
        mm.mmap(a, 6 * P, PROT_NONE if not touched else RW, ANON | MAP_FIXED)
        if touched:
            mm.touch(a, write=True)
        assert mm.mremap(a, P, P, MREMAP_MAYMOVE | MREMAP_FIXED, a + P) == a + P
        n = len([v for v in mm.maps() if a <= v.start < a + 8 * P])
        assert n == (2 if touched else 1), touched


def test_shared_anonymous_memory_grown_by_mremap_sigbuses_past_its_object(mm: MM) -> None:
    """shmem_zero_setup() makes a shmem object of the mapping's size; mremap() grows the vma,
    not the object, so shmem_fault() beyond it is SIGBUS and mlock's populate fails there
    (found by fuzzing mmlab diff, 6.18: a 1-page MAP_SHARED|MAP_ANONYMOUS mapping grown to 4
    pages: mlock of page 2 ENOMEM, a load of page 2 SIGBUS)."""
    from mmlab import SIGBUS
    a = mm.mmap(0, P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE)
    b = mm.mremap(a, P, 4 * P, MREMAP_MAYMOVE)
    assert errno_of(mm.mlock, b + P, P) == errno.ENOMEM
    with pytest.raises(SIGBUS):
        mm.touch(b + 2 * P)
    mm.touch(b)  # the object's own page is fine
    assert mm.mincore(b, 4 * P) == b"\x01\x00\x00\x00"
