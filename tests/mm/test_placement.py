"""Where mappings land: __get_unmapped_area() with THP alignment (mm/mmap.c, mm/huge_memory.c
__thp_get_unmapped_area()) and the stack guard gap (vm_start_gap(), expand_downwards()), as
measured on this machine's 6.18:

* a mapping of a file on the disk's ext4 (file_operations.get_unmapped_area =
  thp_get_unmapped_area) whose range holds a whole aligned 2 MiB of the file searches for
  len + 2 MiB: hint-less it lands 2 MiB aligned (address and offset agree modulo 2 MiB); hinted
  at a free range 64 KiB past a 2 MiB boundary with another mapping 4 KiB after the range's end
  it lands elsewhere, aligned; with room for len + 2 MiB at the hint it takes the hint. 1 MiB
  mappings are not aligned. tmpfs, memfd and shared anonymous memory (shmem, huge=never) are
  not aligned at all;
* a hint-less private anonymous mapping whose length is a multiple of 2 MiB is 2 MiB aligned
  (3 MiB, 2 MiB + 4 KiB are not); a hinted one takes its hint; an mremap move too;
* a hint that ends less than 256 pages below a MAP_GROWSDOWN vma is not taken; a stack does not
  grow to within 256 pages of the vma below it.

The v3.x profiles (switches ``thp_get_unmapped_area``, ``thp_align_anon`` off,
``stack_guard_gap`` 1) place as before.
"""

from __future__ import annotations

import pytest

from mmlab import (MAP_ANONYMOUS, MAP_FIXED, MAP_GROWSDOWN, MAP_PRIVATE, MAP_SHARED, MM, MREMAP_MAYMOVE,
                   PAGE_SIZE, PROT_READ, PROT_WRITE, SIGSEGV, ZERO_COSTS, File)
from mm_helpers import free_range

P = PAGE_SIZE
M2 = 2 << 20
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def _tight_hint(mm: MM, length: int) -> int:
    """A free range 64 KiB past a 2 MiB boundary, with a mapping 4 KiB after its end."""
    base = (free_range(mm, length + 8 * M2) + M2 - 1) & ~(M2 - 1)
    h = base + 16 * P
    mm.mmap(h + length + P, P, PROT_READ, ANON | MAP_FIXED)
    return h


@pytest.mark.parametrize("kernel,aligned", [("v6.18", True), ("v6.18+thp_get_unmapped_area=off", False),
                                            ("v3.9", False)])
def test_a_large_disk_file_mapping_skips_a_tight_hint_and_aligns(kernel: str, aligned: bool) -> None:
    """The issue's measurement: 64 MiB read-only shared mapping of a disk file, tight hint."""
    mm = MM(kernel, ZERO_COSTS)
    f = File("disk", 64 << 20, mode="r")
    h = _tight_hint(mm, 64 << 20)
    a = mm.mmap(h, 64 << 20, PROT_READ, MAP_SHARED, f)
    if aligned:
        assert a != h and a % M2 == 0
    else:
        assert a == h


@pytest.mark.parametrize("length,off,aligned", [(64 << 20, 0, True), (2 << 20, 0, True), (3 << 20, 0, True),
                                                (1 << 20, 0, False), (8 << 20, P, True)])
def test_hintless_disk_file_mappings_align_file_offset_and_address(length: int, off: int, aligned: bool) -> None:
    mm = MM("v6.18", ZERO_COSTS)
    f = File("disk", 64 << 20, mode="r")
    for flags in (MAP_SHARED, MAP_PRIVATE):
        below = mm.mmap(0, 3 * P, RW, ANON)  # the next top-down address is not aligned
        a = mm.mmap(0, length, PROT_READ, flags, f, off)
        if aligned:
            assert (a - off) % M2 == 0 and a + length < below
        else:
            assert a + length == below  # packed right below, as without THP


def test_a_roomy_hint_is_taken_and_tmpfs_is_never_aligned() -> None:
    mm = MM("v6.18", ZERO_COSTS)
    disk = File("disk", 4 << 20, mode="r")
    shm = File("memfd", 4 << 20, tmpfs=True)
    h = (free_range(mm, 16 * M2) + M2 - 1 & ~(M2 - 1)) + 16 * P
    assert mm.mmap(h, 4 << 20, PROT_READ, MAP_SHARED, disk) == h  # room for len + 2 MiB at the hint
    h2 = _tight_hint(mm, 4 << 20)
    assert mm.mmap(h2, 4 << 20, PROT_READ, MAP_SHARED, shm) == h2  # shmem: the hint fits, taken
    offs = {mm.mmap(0, 4 << 20, PROT_READ, MAP_SHARED, shm) % M2 for _ in range(3)}
    offs |= {mm.mmap(0, 4 << 20, RW, MAP_SHARED | MAP_ANONYMOUS) % M2 for _ in range(3)}
    assert offs != {0}  # packed top-down below each other, not aligned


@pytest.mark.parametrize("kernel,aligned", [("v6.18", True), ("v6.18+thp_align_anon=off", False),
                                            ("v3.7", False)])
def test_hintless_anonymous_mappings_of_2mib_multiples_are_aligned(kernel: str, aligned: bool) -> None:
    mm = MM(kernel, ZERO_COSTS)
    mm.mmap(0, 5 * P, RW, ANON)  # leave mmap's next free address unaligned
    for length in (M2, 2 * M2):
        a = mm.mmap(0, length, RW, ANON)
        assert (a % M2 == 0) is aligned
        mm.mmap(0, 3 * P, RW, ANON)
    a = mm.mmap(0, 3 << 20, RW, ANON)
    b = mm.mmap(0, M2 + P, RW, ANON)
    assert a % M2 and b % M2  # not 2 MiB multiples: never aligned
    h = _tight_hint(mm, M2)
    assert mm.mmap(h, M2, RW, ANON) == h  # a hinted anonymous mapping takes its hint


def test_an_mremap_move_of_a_2mib_multiple_is_aligned() -> None:
    """mremap's get_unmapped_area() is __get_unmapped_area() too (measured: 1 MiB grown to 2 MiB
    lands aligned, to 3 MiB does not)."""
    mm = MM("v6.18", ZERO_COSTS)
    for new, aligned in ((M2, True), (3 << 20, False)):
        a = mm.mmap(0, 1 << 20, RW, ANON)
        mm.mmap(a + (1 << 20), P, PROT_READ, ANON | MAP_FIXED)  # no room to grow in place
        r = mm.mremap(a, 1 << 20, new, MREMAP_MAYMOVE)
        assert r != a and (r % M2 == 0) is aligned


@pytest.mark.parametrize("kernel,gap", [("v6.18", 256), ("v3.9", 0)])
def test_hints_keep_the_stack_guard_gap_below_a_growsdown_vma(kernel: str, gap: int) -> None:
    """vm_start_gap(): a hint ending fewer than stack_guard_gap pages below a VM_GROWSDOWN vma is
    not taken (measured on 6.18: 1, 2, 255 moved; 256, 257 taken)."""
    mm = MM(kernel, ZERO_COSTS)
    top = free_range(mm, 600 * P) + 600 * P
    s = mm.mmap(top - 4 * P, 4 * P, RW, ANON | MAP_FIXED | MAP_GROWSDOWN)
    for below in (1, 2, 255, 256, 257):
        h = s - below * P - P
        a = mm.mmap(h, P, PROT_READ, ANON)
        assert (a == h) is (below >= gap), below
        mm.munmap(a, P)


def test_hintless_search_keeps_the_stack_guard_gap() -> None:
    mm = MM("v6.18", ZERO_COSTS)
    s = mm.mmap(0, 4 * P, RW, ANON | MAP_GROWSDOWN)
    a = mm.mmap(0, P, PROT_READ, ANON)
    assert s - (a + P) >= 256 * P


@pytest.mark.parametrize("kernel,gap", [("v6.18", 256), ("v3.9", 1)])
def test_stack_growth_keeps_the_guard_gap_from_the_vma_below(kernel: str, gap: int) -> None:
    """expand_downwards(): growth to within stack_guard_gap of an accessible vma below is
    SIGSEGV (measured on 6.18: 255 free pages between the new start and the vma below: SIGSEGV,
    256: ok)."""
    for dist in (gap - 1, gap):
        mm = MM(kernel, ZERO_COSTS)
        top = free_range(mm, 600 * P) + 600 * P
        s = mm.mmap(top - 4 * P, 4 * P, RW, ANON | MAP_FIXED | MAP_GROWSDOWN)
        new_start = s - P
        mm.mmap(new_start - dist * P - P, P, PROT_READ, ANON | MAP_FIXED)
        try:
            mm.touch(new_start, write=True)
            grew = True
        except SIGSEGV:
            grew = False
        assert grew is (dist >= gap), dist
