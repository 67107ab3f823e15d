"""Conformance of remap_file_pages (mm/fremap.c, and its 4.0+ emulation): section 7 of
kernel-semantics.md, items 59-61, on every profile, and the v3.7 rules the series' patch 2 fixed.

A tmpfs file (``File(tmpfs=True)``, LTP's /dev/shm case) gets a truly VM_NONLINEAR vma in v3.x; a
regular file (LTP's tmp file) gets linear vmas from mmap_region() -- the "emulated" path of v3.x,
and what every file gets from 4.0 on.
"""

from __future__ import annotations

import errno
import threading

import pytest

from mmlab import (MAP_ANONYMOUS, MAP_FIXED, MAP_LOCKED, MAP_NONBLOCK, MAP_PRIVATE, MAP_SHARED, MM,
                   PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE, VM_LOCKED, VM_NONLINEAR, ZERO_COSTS,
                   File)
from mmlab.clock import hooks
from mmlab.mm.pagetable import PTE_MLOCKED, PTE_PRESENT
from mm_helpers import errno_of, vmas_in

RW = PROT_READ | PROT_WRITE
P = PAGE_SIZE


@pytest.mark.parametrize("tmpfs", [True, False], ids=["dev-shm", "tmp-file"])
def test_59_nonlinear_remaps_read_back(kmm: MM, tmpfs: bool) -> None:
    """#59 LTP remap_file_pages01: remapping a shared file mapping in reverse order, 2 pages at a
    time, makes every page read back the expected file offset -- nonlinear in v3.x on /dev/shm,
    linear vmas otherwise and always from 4.0 (the emulation)."""
    chunks, cp = 8, 2
    f = File("remap01", chunks * cp * P, tmpfs=tmpfs)
    a = kmm.mmap(0, chunks * cp * P, RW, MAP_SHARED, f)
    for i in range(chunks):
        kmm.remap_file_pages(a + i * cp * P, cp * P, 0, (chunks - 1 - i) * cp, 0)
    for i in range(chunks):
        for j in range(cp):
            addr = a + (i * cp + j) * P
            assert kmm.file_page(addr) == (f, (chunks - 1 - i) * cp + j)
            kmm.touch(addr)
    assert kmm.mincore(a, chunks * cp * P) == b"\x01" * (chunks * cp)  # blocking: populated
    nonlinear = tmpfs and not kmm.kernel.fremap_emulated
    vs = vmas_in(kmm, a, a + chunks * cp * P)
    if nonlinear:
        assert len(vs) == 1 and vs[0].flags & VM_NONLINEAR
    else:
        assert len(vs) == chunks and not any(v.flags & VM_NONLINEAR for v in vs)
    assert kmm.check_invariants() == []


def test_60_einval(kmm: MM) -> None:
    """#60 LTP remap_file_pages02: EINVAL when start is in a MAP_PRIVATE mapping, start is not
    mapped, size runs past the vma, or prot is not 0."""
    f = File("remap02", 8 * P)
    priv = kmm.mmap(0, 4 * P, RW, MAP_PRIVATE, f)
    a = kmm.mmap(0, 4 * P, RW, MAP_SHARED, f)
    hole = kmm.mmap(0, P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    kmm.munmap(hole, P)
    before = kmm.snapshot()
    assert errno_of(kmm.remap_file_pages, priv, P, 0, 1, 0) == errno.EINVAL
    assert errno_of(kmm.remap_file_pages, hole, P, 0, 1, 0) == errno.EINVAL
    assert errno_of(kmm.remap_file_pages, a, 8 * P, 0, 1, 0) == errno.EINVAL
    assert errno_of(kmm.remap_file_pages, a, P, PROT_READ, 1, 0) == errno.EINVAL
    assert errno_of(kmm.remap_file_pages, a, 0, 0, 1, 0) == errno.EINVAL
    assert kmm.snapshot() == before


@pytest.mark.parametrize("locked", [False, True], ids=["unlocked", "VM_LOCKED"])
@pytest.mark.parametrize("nonblock", [False, True], ids=["blocking", "MAP_NONBLOCK"])
@pytest.mark.parametrize("tmpfs", [True, False], ids=["nonlinear", "emulated"])
def test_61_populate_rule(kmm: MM, locked: bool, nonblock: bool, tmpfs: bool) -> None:
    """#61 code, patch 2: remap_file_pages populates unless MAP_NONBLOCK, and always if the vma
    is VM_LOCKED (then the pages are mlocked too). v3.7 got it wrong both ways: its nonlinear
    path ignored VM_LOCKED under MAP_NONBLOCK, its emulated path ignored everything but
    VM_LOCKED."""
    f = File("remap", 16 * P, tmpfs=tmpfs)
    a = kmm.mmap(0, 8 * P, RW, MAP_SHARED | (MAP_LOCKED if locked else 0), f, 8 * P)
    kmm.remap_file_pages(a, 8 * P, 0, 0, MAP_NONBLOCK if nonblock else 0)
    k = kmm.kernel
    if k.fremap_fixes or k.fremap_emulated:
        want = locked or not nonblock
    elif tmpfs:
        want = not nonblock
    else:
        want = locked
    # populated: the ptes (mincore would show the page cache, which read-around filled too)
    assert bytes(1 if kmm.pt.get(a + i * P) & PTE_PRESENT else 0 for i in range(8)) == \
        (b"\x01" * 8 if want else bytes(8))
    if want and locked:
        assert all(kmm.pt.get(a + i * P) & PTE_MLOCKED for i in range(8))
    assert kmm.locked_vm == (8 if locked else 0)
    assert kmm.check_invariants() == []


def test_remap_to_the_same_offsets(kmm: MM) -> None:
    """A remap to the offsets already mapped: v3.x leaves at once ("don't need a nonlinear
    mapping, exit success") -- without populating in v3.7, while patch 4 populates at its exit
    label all the same (except with VM_POPULATE, which that early exit never set); the 4.0
    emulation maps afresh and populates."""
    f = File("same", 8 * P, tmpfs=True)
    a = kmm.mmap(0, 8 * P, RW, MAP_SHARED, f)
    kmm.remap_file_pages(a, 8 * P, 0, 0, 0)
    k = kmm.kernel
    want = (k.fremap_populate_after_unlock and not k.vm_populate) or k.fremap_emulated
    # populated: the ptes (mincore would show the page cache, which read-around filled too)
    assert bytes(1 if kmm.pt.get(a + i * P) & PTE_PRESENT else 0 for i in range(8)) == \
        (b"\x01" * 8 if want else bytes(8))


def test_lock_record_per_profile(kmm: MM) -> None:
    """Where a blocking remap of an unlocked vma populates, in the lock record: v3.7 upgrades to
    the write lock to set VM_NONLINEAR, then downgrades and populates under that read hold
    without dropping it at the disk wait; from patch 4 on the populate runs after the unlock,
    dropping the read lock for every disk read."""
    f = File("cold", 16 * P, tmpfs=True)
    a = kmm.mmap(0, 8 * P, RW, MAP_SHARED, f, 8 * P)
    kmm.mmap_sem.history.clear()
    kmm.remap_file_pages(a, 8 * P, 0, 0, 0)
    recs = [(r.mode, r.how) for r in kmm.mmap_sem.history if r.call == "remap_file_pages"]
    assert recs[:2] == [("R", ""), ("W", "")]
    if kmm.kernel.fremap_populate_after_unlock:
        assert recs[2] == ("R", "populate") and ("R", "retake") in recs[3:]
    else:
        assert recs[2:] == [("R", "downgrade")]
    assert kmm.mincore(a, 8 * P) == b"\x01" * 8 and f.disk_reads >= 1


@pytest.mark.parametrize("kernel", ["v3.7", "v3.9-rc1", "v3.9"])
def test_v37_munlock_under_the_read_lock(kernel: str) -> None:
    """Bug 1 of patch 2: on an already nonlinear VM_LOCKED vma, v3.7 runs
    munlock_vma_pages_range() -- which clears VM_LOCKED for a moment -- holding only the read
    lock. A fault racing with it (another reader) maps a page that is never mlocked although its
    vma is VM_LOCKED. With patch 2 the munlock takes the write lock, and the racer waits."""
    mm = MM(kernel, ZERO_COSTS)
    f = File("shm", 16 * P, tmpfs=True, cached=True)
    a = mm.mmap(0, 8 * P, RW, MAP_SHARED, f)
    mm.remap_file_pages(a, 2 * P, 0, 6, 0)  # now VM_NONLINEAR; only [a, a+2P) is populated
    # Lock the vma without populating the rest: mlock of PROT_NONE sets VM_LOCKED, then fails.
    mm.mprotect(a, 8 * P, PROT_NONE)
    assert errno_of(mm.mlock, a, 8 * P) == errno.ENOMEM
    mm.mprotect(a, 8 * P, RW)
    racer_page = a + 5 * P
    assert vmas_in(mm, a, a + 8 * P)[0].flags & VM_LOCKED  # one nonlinear vma, locked
    assert not mm.pt.present(racer_page)
    racer = threading.Thread(target=lambda: mm.touch(racer_page))
    fixed = mm.kernel.fremap_fixes
    fired = []

    def hook(kind: str, obj: object) -> None:
        if kind == "fremap_munlock" and not fired:
            fired.append(1)
            racer.start()
            if not fixed:
                racer.join(5)  # two readers: it runs now, inside the window

    mm.mmap_sem.history.clear()
    hooks.schedule_point = hook
    try:
        mm.remap_file_pages(a, 2 * P, 0, 0, 0)
    finally:
        hooks.schedule_point = None
    racer.join(5)
    assert fired and not racer.is_alive()
    modes = [r.mode for r in mm.mmap_sem.history if r.call == "remap_file_pages"]
    assert ("W" in modes) == fixed
    assert mm.pt.present(racer_page)
    assert bool(mm.pt.get(racer_page) & PTE_MLOCKED) == fixed
    assert vmas_in(mm, racer_page, racer_page + P)[0].flags & VM_LOCKED


@pytest.mark.parametrize("kernel", ["v6.18", "bounded"])
def test_emulation_rechecks_under_the_write_lock(kernel: str) -> None:
    """The 4.0+ syscall looks the vma up under the read lock, drops it, and takes the write lock:
    if the vma changed meanwhile (here: another thread's mprotect), it fails with EINVAL."""
    mm = MM(kernel, ZERO_COSTS)
    f = File("f", 8 * P)
    a = mm.mmap(0, 8 * P, RW, MAP_SHARED, f)
    done = []

    def hook(kind: str, obj: object) -> None:
        if kind == "lock_released" and not done:
            _, rec = obj  # type: ignore[misc]
            if rec.call == "remap_file_pages" and rec.mode == "R":
                done.append(1)
                t = threading.Thread(target=lambda: mm.mprotect(a, 8 * P, PROT_READ))
                t.start()
                t.join(5)

    hooks.schedule_point = hook
    try:
        assert errno_of(mm.remap_file_pages, a, 2 * P, 0, 4, 0) == errno.EINVAL
    finally:
        hooks.schedule_point = None
    assert done and mm.file_page(a) == (f, 0)


def test_emulation_spans_matching_vmas(kmm: MM) -> None:
    """From 4.0 the range may span several vmas of the same file and flags; v3.x wants it inside
    one vma (EINVAL)."""
    f = File("span", 16 * P)
    a = kmm.mmap(0, 4 * P, RW, MAP_SHARED, f)
    kmm.mmap(a + 2 * P, 2 * P, RW, MAP_SHARED | MAP_FIXED, f, 8 * P)  # a second, unmergeable vma
    assert len(vmas_in(kmm, a, a + 4 * P)) == 2
    if kmm.kernel.fremap_emulated:
        kmm.remap_file_pages(a, 4 * P, 0, 12, 0)
        assert [kmm.file_page(a + i * P)[1] for i in range(4)] == [12, 13, 14, 15]
        assert len(vmas_in(kmm, a, a + 4 * P)) == 1
    else:
        assert errno_of(kmm.remap_file_pages, a, 4 * P, 0, 12, 0) == errno.EINVAL


def test_emulated_remap_is_a_replacement(kmm: MM) -> None:
    """Where the remap is emulated (regular files in v3.x, every file from 4.0) the remapped
    range is a new mapping: a new vm_id and a new origin."""
    f = File("repl", 16 * P)
    a = kmm.mmap(0, 8 * P, RW, MAP_SHARED, f)
    old_id = vmas_in(kmm, a, a + P)[0].vm_id
    old_origin = kmm.origins.at(a).oid
    kmm.remap_file_pages(a, 2 * P, 0, 10, MAP_NONBLOCK)
    assert vmas_in(kmm, a, a + P)[0].vm_id != old_id
    assert kmm.origins.at(a).oid != old_origin
    assert kmm.origins.at(a + 2 * P).oid == old_origin
