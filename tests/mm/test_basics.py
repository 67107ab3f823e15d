"""The core calls: mmap, munmap, populate and the lock record, on every profile."""

from __future__ import annotations

import errno

import pytest

from mmlab import (MAP_ANONYMOUS, MAP_FIXED, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MM, PAGE_SIZE,
                   PROT_NONE, PROT_READ, PROT_WRITE, SIGSEGV, ZERO_COSTS, File)

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def test_mmap_populate_makes_every_page_present(kmm: MM) -> None:
    a = kmm.mmap(0, 1 << 20, RW, ANON | MAP_POPULATE)
    assert kmm.mincore(a, 1 << 20) == b"\x01" * 256
    assert kmm.check_invariants() == []


def test_mmap_without_populate_is_lazy_and_touch_faults(kmm: MM) -> None:
    a = kmm.mmap(0, 4 * PAGE_SIZE, RW, ANON)
    assert kmm.mincore(a, 4 * PAGE_SIZE) == bytes(4)
    kmm.touch(a + PAGE_SIZE, write=True)
    assert kmm.mincore(a, 4 * PAGE_SIZE) == b"\x00\x01\x00\x00"


def test_munmap_then_touch_is_sigsegv(kmm: MM) -> None:
    a = kmm.mmap(0, 2 * PAGE_SIZE, RW, ANON | MAP_POPULATE)
    kmm.munmap(a, PAGE_SIZE)
    with pytest.raises(SIGSEGV):
        kmm.touch(a)
    kmm.touch(a + PAGE_SIZE)
    assert kmm.check_invariants() == []


def test_prot_none_access_is_sigsegv(kmm: MM) -> None:
    a = kmm.mmap(0, PAGE_SIZE, PROT_NONE, ANON)
    with pytest.raises(SIGSEGV):
        kmm.touch(a)


@pytest.mark.parametrize("args,code", [
    ((0, 0, RW, ANON), errno.EINVAL),
    ((0, PAGE_SIZE, RW, MAP_ANONYMOUS), errno.EINVAL),
    ((0x1001, PAGE_SIZE, RW, ANON | MAP_FIXED), errno.EINVAL),
    ((0, PAGE_SIZE, RW, MAP_PRIVATE), errno.EBADF),
])
def test_mmap_bad_input_changes_nothing(kmm: MM, args: tuple, code: int) -> None:
    kmm.mmap(0, 1 << 16, RW, ANON | MAP_POPULATE)
    before = kmm.snapshot()
    with pytest.raises(OSError) as e:
        kmm.mmap(*args)
    assert e.value.errno == code
    assert kmm.snapshot() == before


def test_lock_record_v37_populates_inside_one_write_hold() -> None:
    mm = MM("v3.7", ZERO_COSTS)
    mm.mmap(0, 8 << 20, RW, ANON | MAP_POPULATE)
    recs = [r for r in mm.mmap_sem.history if r.call == "mmap"]
    assert [r.mode for r in recs] == ["W"]


@pytest.mark.parametrize("kernel", ["v3.9", "v6.18"])
def test_lock_record_v39_populates_under_read_after_the_write_hold(kernel: str) -> None:
    mm = MM(kernel, ZERO_COSTS)
    mm.mmap(0, 8 << 20, RW, ANON | MAP_POPULATE)
    recs = [r for r in mm.mmap_sem.history if r.call == "mmap"]
    assert [r.mode for r in recs] == ["W", "R"]
    assert recs[1].acq_ns >= recs[0].rel_ns


def test_cold_file_populate_drops_the_read_lock_at_each_disk_read() -> None:
    mm = MM("v3.9", ZERO_COSTS)
    f = File("data", 32 << 20)
    mm.mmap(0, 32 << 20, PROT_READ, MAP_SHARED | MAP_POPULATE, f)
    reads = [r for r in mm.mmap_sem.history if r.call == "mmap" and r.mode == "R"]
    # one read hold per read-ahead window (8 MiB = 4 windows), plus the first take
    assert f.disk_reads == 4
    assert len(reads) == f.disk_reads + 1
    assert mm.pt.nr_present == (32 << 20) // PAGE_SIZE


def test_cold_file_populate_v37_holds_the_write_lock_throughout() -> None:
    mm = MM("v3.7", ZERO_COSTS)
    f = File("data", 32 << 20)
    mm.mmap(0, 32 << 20, PROT_READ, MAP_SHARED | MAP_POPULATE, f)
    recs = [r for r in mm.mmap_sem.history if r.call == "mmap"]
    assert [r.mode for r in recs] == ["W"] and f.disk_reads == 4
