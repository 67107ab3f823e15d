"""Placement on the real kernel and in the model, side by side: whether a hint is taken, and
whether a hint-less mapping is 2 MiB aligned (__thp_get_unmapped_area(): a disk-file mapping
holding a whole aligned 2 MiB searches for len + 2 MiB; tmpfs does not; a hint-less private
anonymous mapping of a 2 MiB multiple is aligned; a hint ending inside the stack guard gap of a
MAP_GROWSDOWN vma is not taken). Nothing is touched: the mappings cost address space only."""

from __future__ import annotations

import os

import pytest

from mmlab import (MAP_ANONYMOUS, MAP_FIXED, MAP_GROWSDOWN, MAP_PRIVATE, MAP_SHARED, MM, PAGE_SIZE, PROT_READ,
                   PROT_WRITE, ZERO_COSTS, File)
from mmlab.real.backend import RealFile, Region

P = PAGE_SIZE
M2 = 2 << 20
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def _tight(mm, base: int, length: int) -> int:
    """A hint 64 KiB past a 2 MiB boundary with a one-page mapping 4 KiB after the range."""
    h = ((base + M2 - 1) & ~(M2 - 1)) + 16 * P
    mm.mmap(h + length + P, P, PROT_READ, ANON | MAP_FIXED)
    return h


@pytest.mark.parametrize("kind", ["disk", "tmpfs"])
def test_a_tight_hint_for_a_large_file_mapping(kind: str, tmp_path) -> None:
    length = 4 << 20
    path = str(tmp_path / "f") if kind == "disk" else f"/dev/shm/mmlab-place-{os.getpid()}"
    with RealFile(path, length, mode="r") as rf, Region(length + 8 * M2, keep_reserved=False) as reg:
        h = _tight(reg.mm, reg.base, length)
        real = reg.mm.mmap(h, length, PROT_READ, MAP_SHARED, rf)
        real_taken, real_aligned = real == h, real % M2 == 0
    mm = MM("v6.18", ZERO_COSTS)
    f = File("f", length, mode="r", tmpfs=kind == "tmpfs")
    base = mm.mmap(0, length + 8 * M2, PROT_READ, ANON)
    mm.munmap(base, length + 8 * M2)
    h = _tight(mm, base, length)
    model = mm.mmap(h, length, PROT_READ, MAP_SHARED, f)
    assert real_taken is (kind == "tmpfs") and (model == h) is real_taken
    if not real_taken:  # placed elsewhere, 2 MiB aligned (file offset 0), on both
        assert real_aligned and model % M2 == 0


def test_hintless_anonymous_alignment_agrees() -> None:
    """A 2 MiB multiple is aligned every time; lengths that are not are placed where the gap
    ends, unpadded: of 3 MiB and 3 MiB + 4 KiB mapped in turn at the same gap, at most one can
    start on a 2 MiB boundary (a single odd length lands aligned by chance when the gap's end
    happens to sit 1 MiB past a boundary, which depends on what the process mapped before)."""
    from mmlab.real.libc import libc
    L = libc()

    def aligned(mmap, munmap) -> list[bool]:
        out = []
        for length in (M2, 4 << 20, 3 << 20, (3 << 20) + P):
            a = mmap(0, length, PROT_READ | PROT_WRITE, ANON)
            out.append(a % M2 == 0)
            munmap(a, length)
        return out

    real = aligned(L.mmap, L.munmap)
    mm = MM("v6.18", ZERO_COSTS)
    mm.mmap(0, 3 * P, PROT_READ, ANON)
    model = aligned(mm.mmap, mm.munmap)
    for got in (real, model):
        assert got[:2] == [True, True] and not all(got[2:]), (real, model)


def test_the_stack_guard_gap_agrees() -> None:
    def taken(mm, base: int) -> list[bool]:
        top = base + 600 * P
        s = mm.mmap(top - 4 * P, 4 * P, PROT_READ | PROT_WRITE, ANON | MAP_FIXED | MAP_GROWSDOWN)
        out = []
        for below in (255, 256):
            h = s - below * P - P
            a = mm.mmap(h, P, PROT_READ, ANON)
            out.append(a == h)
            mm.munmap(a, P)
        return out
    with Region(600 * P, keep_reserved=False) as reg:
        real = taken(reg.mm, reg.base)
    mm = MM("v6.18", ZERO_COSTS)
    base = mm.mmap(0, 600 * P, PROT_READ, ANON)
    mm.munmap(base, 600 * P)
    assert taken(mm, base) == real == [False, True]
