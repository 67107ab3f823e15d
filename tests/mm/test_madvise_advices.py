"""The advices of madvise() beyond DONTNEED and POPULATE (mm/madvise.c: madvise_vma_behavior(),
madvise_dontneed_free(), madvise_remove(), madvise_cold()/madvise_pageout(), madvise_willneed(),
madvise_update_vma()), each as measured on this machine's 6.18 first (the residency columns are
what mincore showed there after touching 4 pages and advising the middle 2):

    vma            FREE    REMOVE   WIPEONFORK  COLD/PAGEOUT  split by DONTFORK etc.
    private anon   ok 1111 EINVAL   ok          ok 1111       yes
    shared anon    EINVAL  ok 1001  EINVAL      ok 1111       yes
    shared file    EINVAL  ok 1111  EINVAL      ok 1111       yes (MERGEABLE: no)
    ro shared file EINVAL  EACCES   EINVAL      ok (PAGEOUT of clean pages: 1001)  yes (MERGEABLE: no)
    private file   EINVAL  EACCES   EINVAL      ok            yes
    memfd          EINVAL  ok 1001  EINVAL      ok            yes (MERGEABLE: no)
    VM_LOCKED      EINVAL  EINVAL   ok          EINVAL        yes

Profiles without the switch that added an advice refuse it with EINVAL.
"""

from __future__ import annotations

import errno

import pytest

from mmlab import (MADV_COLD, MADV_DODUMP, MADV_DOFORK, MADV_DONTDUMP, MADV_DONTFORK, MADV_DONTNEED,
                   MADV_DONTNEED_LOCKED, MADV_FREE, MADV_HUGEPAGE, MADV_KEEPONFORK, MADV_MERGEABLE,
                   MADV_NOHUGEPAGE, MADV_PAGEOUT, MADV_REMOVE, MADV_UNMERGEABLE, MADV_WILLNEED,
                   MADV_WIPEONFORK, MAP_ANONYMOUS, MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MM,
                   PAGE_SIZE, PROT_READ, PROT_WRITE, ZERO_COSTS, File)
from mm_helpers import errno_of, vmas_in

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def _kinds(mm: MM) -> dict[str, int]:
    """Four touched pages of each kind of vma the table above measured."""
    f = File("disk", 16 * P, cached=True)
    ro = File("ro", 16 * P, mode="r", cached=True)
    shm = File("memfd", 16 * P, tmpfs=True, cached=True)
    out = {
        "anon": mm.mmap(0, 4 * P, RW, ANON | MAP_POPULATE),
        "shanon": mm.mmap(0, 4 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE),
        "filesh": mm.mmap(0, 4 * P, RW, MAP_SHARED | MAP_POPULATE, f),
        "filesh_ro": mm.mmap(0, 4 * P, PROT_READ, MAP_SHARED | MAP_POPULATE, ro),
        "filepriv": mm.mmap(0, 4 * P, RW, MAP_PRIVATE | MAP_POPULATE, f, 8 * P),
        "memfd": mm.mmap(0, 4 * P, RW, MAP_SHARED | MAP_POPULATE, shm),
        "locked": mm.mmap(0, 4 * P, RW, ANON | MAP_LOCKED),
    }
    for a in out.values():
        for i in range(4):
            mm.touch(a + i * P, write=mm.vmas.vma_lookup(a).flags & 2 != 0)
    return out


def _advise(mm: MM, a: int, advice: int) -> str:
    try:
        mm.madvise(a + P, 2 * P, advice)
    except OSError as e:
        return errno.errorcode[e.errno]
    return "ok"


def _mc(mm: MM, a: int) -> str:
    return "".join(str(b) for b in mm.mincore(a, 4 * P))


MEASURED = {  # advice: {kind: (result, mincore after, vmas after)} -- 6.18 on this machine
    MADV_FREE: {"anon": ("ok", "1111", 1), "shanon": ("EINVAL", "1111", 1), "filesh": ("EINVAL", "1111", 1),
                "filesh_ro": ("EINVAL", "1111", 1), "filepriv": ("EINVAL", "1111", 1),
                "memfd": ("EINVAL", "1111", 1), "locked": ("EINVAL", "1111", 1)},
    MADV_REMOVE: {"anon": ("EINVAL", "1111", 1), "shanon": ("ok", "1001", 1), "filesh": ("ok", "1111", 1),
                  "filesh_ro": ("EACCES", "1111", 1), "filepriv": ("EACCES", "1111", 1),
                  "memfd": ("ok", "1001", 1), "locked": ("EINVAL", "1111", 1)},
    MADV_WIPEONFORK: {"anon": ("ok", "1111", 3), "shanon": ("EINVAL", "1111", 1), "filesh": ("EINVAL", "1111", 1),
                      "filesh_ro": ("EINVAL", "1111", 1), "filepriv": ("EINVAL", "1111", 1),
                      "memfd": ("EINVAL", "1111", 1), "locked": ("ok", "1111", 3)},
    MADV_MERGEABLE: {"anon": ("ok", "1111", 3), "shanon": ("ok", "1111", 1), "filesh": ("ok", "1111", 1),
                     "filesh_ro": ("ok", "1111", 1), "filepriv": ("ok", "1111", 3),
                     "memfd": ("ok", "1111", 1), "locked": ("ok", "1111", 3)},
    # PAGEOUT: the written pages are dirty (writeback only) or anonymous (no swap); the clean
    # read-only file's pages are reclaimed (tests/real/test_madvise_real.py checks it live)
    MADV_PAGEOUT: {k: ("EINVAL" if k == "locked" else "ok", "1001" if k == "filesh_ro" else "1111", 1) for k in
                   ("anon", "shanon", "filesh", "filesh_ro", "filepriv", "memfd", "locked")},
    MADV_COLD: {k: ("EINVAL" if k == "locked" else "ok", "1111", 1) for k in
                ("anon", "shanon", "filesh", "filesh_ro", "filepriv", "memfd", "locked")},
    MADV_DONTNEED_LOCKED: {"anon": ("ok", "1001", 1), "shanon": ("ok", "1111", 1), "filesh": ("ok", "1111", 1),
                           "filesh_ro": ("ok", "1111", 1), "filepriv": ("ok", "1111", 1),
                           "memfd": ("ok", "1111", 1), "locked": ("ok", "1001", 1)},
}


@pytest.mark.parametrize("advice", list(MEASURED), ids=lambda a: {
    MADV_FREE: "FREE", MADV_REMOVE: "REMOVE", MADV_WIPEONFORK: "WIPEONFORK", MADV_MERGEABLE: "MERGEABLE",
    MADV_PAGEOUT: "PAGEOUT", MADV_COLD: "COLD", MADV_DONTNEED_LOCKED: "DONTNEED_LOCKED"}[a])
def test_each_advice_on_each_kind_of_vma_as_measured(advice: int) -> None:
    """Result, residency and vma count per kind of vma, as the table measured on 6.18."""
    mm = MM("v6.18", ZERO_COSTS)
    kinds = _kinds(mm)
    for kind, a in kinds.items():
        got = (_advise(mm, a, advice), _mc(mm, a), len(vmas_in(mm, a, a + 4 * P)))
        want = MEASURED[advice][kind]
        assert got == want, f"{kind}: {got} != {want}"
    assert mm.check_invariants() == []


@pytest.mark.parametrize("advice,switch", [(MADV_FREE, "madv_free"), (MADV_WIPEONFORK, "madv_wipeonfork"),
                                           (MADV_KEEPONFORK, "madv_wipeonfork"), (MADV_COLD, "madv_cold_pageout"),
                                           (MADV_PAGEOUT, "madv_cold_pageout"),
                                           (MADV_DONTNEED_LOCKED, "madv_dontneed_locked")])
def test_advices_newer_than_the_profile_are_einval(advice: int, switch: str) -> None:
    """madvise_behavior_valid() of older kernels: MADV_FREE came in 4.5, WIPEONFORK 4.14,
    COLD/PAGEOUT 5.4, DONTNEED_LOCKED 5.18; the v3.x profiles refuse them, and v6.18 with the
    switch turned off does too."""
    for kernel, ok in (("v3.7", False), ("v3.9", False), ("v6.18", True), (f"v6.18+{switch}=off", False)):
        mm = MM(kernel, ZERO_COSTS)
        a = mm.mmap(0, 4 * P, RW, ANON | MAP_POPULATE)
        if ok:
            assert mm.madvise(a, P, advice) == 0
        else:
            assert errno_of(mm.madvise, a, P, advice) == errno.EINVAL


FLAG_ADVICES = [(MADV_DONTFORK, MADV_DOFORK, "dc"), (MADV_DONTDUMP, MADV_DODUMP, "dd"),
                (MADV_WIPEONFORK, MADV_KEEPONFORK, "wf"), (MADV_HUGEPAGE, MADV_NOHUGEPAGE, "hg"),
                (MADV_MERGEABLE, MADV_UNMERGEABLE, "mg"), (2, 0, "sr"), (1, 0, "rr")]


@pytest.mark.parametrize("on,off,mnemonic", FLAG_ADVICES, ids=[m for _, _, m in FLAG_ADVICES])
def test_flag_advices_split_set_vmflags_and_merge_back(on: int, off: int, mnemonic: str) -> None:
    """madvise_update_vma(): advising the middle page of a vma splits it in three and the middle
    one shows the flag in smaps VmFlags (measured: "rd wr mr mw me sr dc ac wf dd hg mg" after
    SEQUENTIAL, DONTFORK, WIPEONFORK, DONTDUMP, HUGEPAGE, MERGEABLE); the opposite advice merges
    the three back into one. The flags change nothing else: pages stay."""
    mm = MM("v6.18", ZERO_COSTS)
    a = mm.mmap(0, 4 * P, RW, ANON | MAP_POPULATE)
    assert mm.madvise(a + P, P, on) == 0
    vs = vmas_in(mm, a, a + 4 * P)
    assert [(v.start - a) // P for v in vs] == [0, 1, 2]
    [mid] = [s for s in mm.smaps() if s["start"] == a + P]
    assert mnemonic in str(mid["VmFlags"]).split()
    assert mm.mincore(a, 4 * P) == b"\x01" * 4
    assert mm.madvise(a, 4 * P, off) == 0
    assert len(vmas_in(mm, a, a + 4 * P)) == 1 and mm.check_invariants() == []


def test_flag_advice_split_at_max_map_count_is_eagain() -> None:
    """split_vma()'s -ENOMEM is returned as EAGAIN by madvise_vma_behavior()."""
    mm = MM("v6.18", ZERO_COSTS, max_map_count=3)
    a = mm.mmap(0, 4 * P, RW, ANON)
    assert mm.map_count == 2  # [stack] and a
    assert errno_of(mm.madvise, a + P, P, MADV_DONTDUMP) == errno.EAGAIN


def test_willneed_reads_the_file_range_into_the_page_cache() -> None:
    """madvise_willneed() -> vfs_fadvise(POSIX_FADV_WILLNEED): exactly the advised pages become
    cached (measured: pages 10..13 of a cold file after WILLNEED of 4 pages at 10), which mincore
    of any mapping of the file then shows."""
    mm = MM("v6.18", ZERO_COSTS)
    f = File("cold", 64 * P)
    a = mm.mmap(0, 64 * P, PROT_READ, MAP_PRIVATE, f)
    assert mm.madvise(a + 10 * P, 4 * P, MADV_WILLNEED) == 0
    m = mm.mincore(a, 64 * P)
    assert m.find(1) == 10 and m.rfind(1) == 13 and f.cached_pages() == 4


def test_remove_of_a_tmpfs_file_drops_its_pages_from_every_shared_mapping() -> None:
    """madvise_remove() punches a hole (vfs_fallocate(PUNCH_HOLE)): unmap_mapping_range() takes
    the pages out of every shared mapping of that file range, and shmem frees them."""
    mm = MM("v6.18", ZERO_COSTS)
    f = File("memfd", 8 * P, tmpfs=True, cached=True)
    a = mm.mmap(0, 8 * P, RW, MAP_SHARED | MAP_POPULATE, f)
    b = mm.mmap(0, 8 * P, PROT_READ, MAP_SHARED | MAP_POPULATE, f)
    assert mm.madvise(a + 2 * P, 2 * P, MADV_REMOVE) == 0
    assert mm.mincore(b, 8 * P) == b"\x01\x01\x00\x00\x01\x01\x01\x01"
    assert mm.mincore(a, 8 * P) == mm.mincore(b, 8 * P) and f.cached_pages() == 6


def test_dontneed_locked_zaps_and_unaccounts_nothing() -> None:
    """MADV_DONTNEED_LOCKED (5.18) zaps a VM_LOCKED range that MADV_DONTNEED refuses; the vma stays
    locked (VmLck unchanged), its pages are gone until touched."""
    mm = MM("v6.18", ZERO_COSTS)
    a = mm.mmap(0, 4 * P, RW, ANON | MAP_LOCKED)
    assert errno_of(mm.madvise, a, 4 * P, MADV_DONTNEED) == errno.EINVAL
    assert mm.madvise(a, 4 * P, MADV_DONTNEED_LOCKED) == 0
    assert mm.mincore(a, 4 * P) == bytes(4) and mm.vm_lck_kb() == 16 and mm.check_invariants() == []


def test_a_refusal_stops_the_walk_after_the_vmas_before_it() -> None:
    """madvise_walk_vmas() applies the advice vma by vma: DONTDUMP over [anon][shared file] then
    WIPEONFORK over the same range sets wf on the anon vma and stops at the file with EINVAL."""
    mm = MM("v6.18", ZERO_COSTS)
    f = File("disk", 4 * P, cached=True)
    a = mm.mmap(0, 4 * P, RW, ANON)
    mm.mmap(a + 2 * P, 2 * P, RW, MAP_SHARED | 0x10, f)
    assert errno_of(mm.madvise, a, 4 * P, MADV_WIPEONFORK) == errno.EINVAL
    flags = {s["start"] - a: str(s["VmFlags"]).split() for s in mm.smaps() if a <= s["start"] < a + 4 * P}
    assert "wf" in flags[0] and "wf" not in flags[2 * P]


def test_dontneed_of_a_file_mapping_leaves_the_page_cache_for_mincore() -> None:
    """mincore_page(): a file vma's page that is in the page cache is resident, pte or not --
    after MADV_DONTNEED, after munmap of another mapping that read it, and for pages read
    ahead but never mapped (measured: 256/256 after DONTNEED of a cached file's mapping)."""
    mm = MM("v6.18", ZERO_COSTS)
    f = File("disk", 8 * P)
    a = mm.mmap(0, 8 * P, PROT_READ, MAP_SHARED, f)
    mm.touch(a)  # the fault reads ahead: the whole (small) file is cached now
    b = mm.mmap(0, 8 * P, PROT_READ, MAP_PRIVATE, f)
    assert mm.mincore(b, 8 * P) == b"\x01" * 8  # no pte in b, all cached
    mm.madvise(a, 8 * P, MADV_DONTNEED)
    mm.munmap(b, 8 * P)
    assert mm.mincore(a, 8 * P) == b"\x01" * 8 and mm.pt.count_present(a, a + 8 * P) == 0
    f.drop_caches()
    assert mm.mincore(a, 8 * P) == bytes(8)


def test_populate_meets_a_sigbus_page_before_a_later_hole() -> None:
    """madvise_populate() faults in address order (found by the conformance suite: a page beyond
    EOF, then a hole): EFAULT from the SIGBUS page, not ENOMEM from the hole behind it."""
    from mmlab import MADV_POPULATE_READ, MAP_FIXED
    mm = MM("v6.18", ZERO_COSTS)
    ro = File("ro", 8 * P, mode="r", cached=True)
    a = mm.mmap(0, 4 * P, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)
    mm.munmap(a, 4 * P)
    mm.mmap(a, 2048, RW, MAP_PRIVATE | MAP_FIXED, ro, 8 * P)  # the page after EOF
    assert errno_of(mm.madvise, a, 2 * P, MADV_POPULATE_READ) == errno.EFAULT


def test_mincore_of_a_populated_file_mapping_shows_read_around_in_other_mappings() -> None:
    """mincore_page() (found by the conformance suite): MAP_POPULATE of one page of a small cold
    file reads the file into the page cache, and mincore of another mapping of it, never
    touched, reports those pages."""
    mm = MM("v6.18", ZERO_COSTS)
    f = File("cold", 8 * P)
    mm.mmap(0, P, PROT_READ, MAP_SHARED | MAP_POPULATE, f, 7 * P)
    b = mm.mmap(0, 8 * P, PROT_READ, MAP_SHARED, f)
    assert mm.mincore(b, 8 * P)[7] == 1 and mm.pt.count_present(b, b + 8 * P) == 0
    assert mm.mincore(b, 8 * P) == bytes(f.cache)


def test_pageout_reclaims_clean_shmem_and_file_pages_mapped_once() -> None:
    """madvise_pageout() -> reclaim_pages(): a clean page mapped only here leaves the page table
    and the cache -- a MAP_POPULATE'd, never written page of shared anonymous memory (found by
    fuzzing mmlab diff with every advice: real mincore 0, pte 0) or of a memfd; a written one, or
    one another mapping also maps, stays."""
    mm = MM("v6.18", ZERO_COSTS)
    sh = mm.mmap(0, 2 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE)
    mm.touch(sh + P, write=True)
    assert mm.madvise(sh, 2 * P, MADV_PAGEOUT) == 0 and mm.mincore(sh, 2 * P) == b"\x00\x01"
    f = File("memfd", 2 * P, tmpfs=True, cached=True)
    a = mm.mmap(0, 2 * P, PROT_READ, MAP_SHARED | MAP_POPULATE, f)
    b = mm.mmap(0, P, PROT_READ, MAP_SHARED | MAP_POPULATE, f, P)  # page 1 mapped twice
    assert mm.madvise(a, 2 * P, MADV_PAGEOUT) == 0
    assert mm.mincore(a, 2 * P) == b"\x00\x01" and f.cached_pages() == 1 and mm.mincore(b, P) == b"\x01"
