"""The real backend on small ranges: the model's call surface, Linux's errors, and the cleanup."""

from __future__ import annotations

import errno
import os

import pytest

from mmlab import (MADV_DONTNEED, MAP_ANONYMOUS, MAP_FIXED, MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE,
                   MAP_SHARED, MCL_CURRENT, MCL_FUTURE, MLOCK_ONFAULT, MREMAP_MAYMOVE, PAGE_SIZE, PROT_NONE,
                   PROT_READ, PROT_WRITE, SIGSEGV)
from mmlab.real.backend import OutsideRegion, RealFile, Region
from mmlab.real.procfs import read_maps, read_pagemap_present, read_vm_lck_kb

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def test_populate_touch_and_residency() -> None:
    with Region(16 * P, keep_reserved=False) as reg:
        mm = reg.mm
        a = mm.mmap(reg.base, 4 * P, RW, ANON | MAP_FIXED | MAP_POPULATE)
        assert a == reg.base
        assert mm.mincore(a, 4 * P) == b"\x01" * 4
        b = mm.mmap(reg.base + 8 * P, 4 * P, RW, ANON | MAP_FIXED)
        assert mm.mincore(b, 4 * P) == bytes(4)
        mm.touch(b + P + 17, write=True)
        assert mm.mincore(b, 4 * P) == b"\x00\x01\x00\x00"
        assert read_pagemap_present(b, b + 4 * P) == b"\x00\x01\x00\x00"
        [e] = [e for e in mm.maps(b, b + 4 * P)]
        assert (e.start, e.end, e.perms, e.rss_kb) == (b, b + 4 * P, "rw-p", 4)


def test_errors_are_linux_errno_and_change_nothing() -> None:
    with Region(16 * P, keep_reserved=False) as reg:
        mm = reg.mm
        a = mm.mmap(reg.base, 2 * P, RW, ANON | MAP_FIXED)
        before = read_maps(reg.base - P, reg.end + P)
        for call, code in [(lambda: mm.munmap(a + 1, P), errno.EINVAL),
                           (lambda: mm.mlock(reg.base + 4 * P, P), errno.ENOMEM),
                           (lambda: mm.mlock2(a, P, 0x80), errno.EINVAL),
                           (lambda: mm.mremap(a + 1, P, 2 * P, 0), errno.EINVAL),
                           (lambda: mm.mremap(reg.base + 6 * P, P, 2 * P, 0), errno.EFAULT),
                           (lambda: mm.madvise(a + 3, P, MADV_DONTNEED), errno.EINVAL),
                           (lambda: mm.mlockall(0), errno.EINVAL)]:
            with pytest.raises(OSError) as e:
                call()
            assert e.value.errno == code
        assert read_maps(reg.base - P, reg.end + P) == before


def test_touch_of_inaccessible_memory_raises_instead_of_killing_us() -> None:
    with Region(8 * P, keep_reserved=False) as reg:
        mm = reg.mm
        a = mm.mmap(reg.base, P, PROT_NONE, ANON | MAP_FIXED)
        with pytest.raises(SIGSEGV):
            mm.touch(a)
        with pytest.raises(SIGSEGV):
            mm.touch(reg.base + 3 * P)  # a hole
        r = mm.mmap(reg.base + 4 * P, P, PROT_READ, ANON | MAP_FIXED)
        with pytest.raises(SIGSEGV):
            mm.touch(r, write=True)
        mm.touch(r)
        assert mm.mincore(r, P) == b"\x01"


def test_calls_outside_the_region_are_refused_before_the_kernel_sees_them() -> None:
    with Region(4 * P) as reg:
        mm = reg.mm
        own = read_maps(0, 1 << 47)
        victim = next(e for e in own if e.perms.startswith("r") and not reg.base - P <= e.start < reg.end + P)
        for call in (lambda: mm.munmap(victim.start, P), lambda: mm.mprotect(victim.start, P, PROT_NONE),
                     lambda: mm.mmap(victim.start, P, RW, ANON | MAP_FIXED), lambda: mm.madvise(victim.start, P, 4),
                     lambda: mm.mremap(reg.base, P, P, MREMAP_MAYMOVE | 2, victim.start)):
            with pytest.raises(OutsideRegion):
                call()
        assert read_maps(victim.start, victim.end)[0] == victim


def test_region_is_undone_on_exception_also_mlockall(can_mlock: None) -> None:
    lck0 = read_vm_lck_kb()
    with pytest.raises(KeyboardInterrupt):
        with Region(8 * P, keep_reserved=False) as reg:
            base = reg.base
            reg.mm.mmap(base, 2 * P, RW, ANON | MAP_FIXED | MAP_LOCKED)
            moved = reg.mm.mremap(base, 2 * P, 64 * P, MREMAP_MAYMOVE)  # does not fit: moves out
            assert not base <= moved < base + 8 * P
            reg.mm.mlockall(MCL_CURRENT | MCL_FUTURE)
            assert read_vm_lck_kb() > lck0
            raise KeyboardInterrupt
    assert read_maps(base - P, base + 9 * P) == []
    assert read_maps(moved, moved + 64 * P) == []
    assert read_vm_lck_kb() == lck0


def test_mlock2_onfault_and_smaps_locked(can_mlock: None) -> None:
    with Region(8 * P, keep_reserved=False) as reg:
        mm = reg.mm
        a = mm.mmap(reg.base, 4 * P, RW, ANON | MAP_FIXED)
        mm.mlock2(a, 4 * P, MLOCK_ONFAULT)
        mm.touch(a, write=True)
        [e] = mm.maps(a, a + 4 * P)
        assert "lo" in e.vmflags and e.locked_kb == 4 and mm.mincore(a, 4 * P) == b"\x01\x00\x00\x00"
        mm.munlock(a, 4 * P)
        [e] = mm.maps(a, a + 4 * P)
        assert "lo" not in e.vmflags and e.locked_kb == 0


def test_file_mapping_cold_cache_and_remap_file_pages(tmp_path) -> None:
    with RealFile(str(tmp_path / "data"), 8 * P) as f, Region(16 * P, keep_reserved=False) as reg:
        mm = reg.mm
        f.drop_cache()
        a = mm.mmap(reg.base, 8 * P, PROT_READ, MAP_SHARED | MAP_FIXED, f)
        assert mm.mincore(a, 8 * P) == bytes(8)  # mincore of a file mapping: its page cache
        mm.munmap(a, 8 * P)
        a = mm.mmap(reg.base, 8 * P, PROT_READ, MAP_SHARED | MAP_FIXED | MAP_POPULATE, f)
        assert mm.mincore(a, 8 * P) == b"\x01" * 8
        try:
            mm.remap_file_pages(a, P, 0, 5, 0)
        except OSError as e:
            pytest.skip(f"remap_file_pages is not available on this kernel: {e}")
        first = mm.maps(a, a + P)[0]
        assert (first.start, first.end, first.offset) == (a, a + P, 5 * P)


def test_touch_beyond_a_grown_shmem_object_is_sigbus_not_a_crash() -> None:
    from mmlab import SIGBUS
    with Region(8 * P, keep_reserved=False) as reg:
        mm = reg.mm
        a = mm.mmap(reg.base, P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
        mm.mremap(a, P, 3 * P, 0)  # the vma grows, the shmem object stays one page
        mm.touch(a, write=True)
        with pytest.raises(SIGBUS):
            mm.touch(a + 2 * P)
