"""Conformance of mlock, mlock2, munlock, mlockall and munlockall (mm/mlock.c): section 7 of
kernel-semantics.md, items 15-46, on every profile. mlock2(), MLOCK_ONFAULT and MCL_ONFAULT
exist from 4.4 (``mlock_onfault``): on older profiles mlock2 is ENOSYS and MCL_ONFAULT EINVAL.

Skipped, because they do not apply to a model:
* #32's first half (population failing with ENOMEM makes mlock EAGAIN): the model never runs out
  of memory. Its second half (-EFAULT from gup becomes ENOMEM) is tested.
* #44 (msync(MS_INVALIDATE) on a locked page is EBUSY): msync is not modelled.
* #19's other ranges (vdso, vvar, the executable): the model's process has only [stack] and the
  brk area; every range it has is locked and unlocked.
"""

from __future__ import annotations

import errno
import random

import pytest

from mmlab import (MAP_ANONYMOUS, MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MCL_CURRENT,
                   MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT, MM, PAGE_SIZE, PROT_NONE, PROT_READ,
                   PROT_WRITE, VM_LOCKED, VM_LOCKONFAULT, File)
from mm_helpers import errno_of, nonroot, vmas_in

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
P = PAGE_SIZE
KiB, MiB = 1 << 10, 1 << 20
VM_NOHUGEPAGE = 0x40000000  # what s390 KVM keeps in def_flags


def smaps_at(mm: MM, addr: int) -> dict:
    return next(s for s in mm.smaps() if s["start"] <= addr < s["end"])


def needs_onfault(mm: MM) -> bool:
    """True when the profile has mlock2/ONFAULT; otherwise asserts it refuses them."""
    if mm.kernel.mlock_onfault:
        return True
    a = mm.mmap(0, P, RW, ANON)
    assert errno_of(mm.mlock2, a, P, 0) == errno.ENOSYS
    assert errno_of(mm.mlockall, MCL_CURRENT | MCL_ONFAULT) == errno.EINVAL
    return False


# ---------------------------------------------------------------- mlock, mlock2
@pytest.mark.parametrize("size", [1, KiB, MiB, 10 * MiB])
def test_15_mlock_unaligned_buffers(kmm: MM, size: int) -> None:
    """#15 LTP mlock01, do_mlock: mlock on unaligned malloc buffers of 1 B, 1 KiB, 1 MiB and
    10 MiB succeeds: the start rounds down and the length up."""
    base = kmm.mmap(0, 12 * MiB, RW, ANON)
    buf = base + 16  # malloc's header
    assert kmm.mlock(buf, size) == 0
    pages = (16 + size + P - 1) // P
    assert kmm.locked_vm == pages
    assert kmm.mincore(base, pages * P) == b"\x01" * pages


def test_16_mlock_unmapped_is_enomem(kmm: MM) -> None:
    """#16 LTP mlock02, POSIX mlock: mlock over an unmapped range is ENOMEM."""
    a = kmm.mmap(0, 4 * P, RW, ANON)
    kmm.munmap(a, 4 * P)
    assert errno_of(kmm.mlock, a, 4 * P) == errno.ENOMEM


def test_17_mlock_over_the_limit_is_enomem(kmm: MM) -> None:
    """#17 LTP mlock02: non-root with RLIMIT_MEMLOCK of len-1 bytes, locking 1 page, is ENOMEM."""
    mm = nonroot(kmm.kernel.name, P - 1)
    a = mm.mmap(0, P, RW, ANON)
    before = mm.snapshot()
    assert errno_of(mm.mlock, a, P) == errno.ENOMEM
    assert mm.snapshot() == before


def test_18_no_rlimit_no_cap_is_eperm(kmm: MM) -> None:
    """#18 LTP mlock02, mlock202: non-root with RLIMIT_MEMLOCK 0 gets EPERM (mlock2: ENOSYS
    before 4.4)."""
    mm = nonroot(kmm.kernel.name, 0)
    a = mm.mmap(0, P, RW, ANON)
    assert errno_of(mm.mlock, a, P) == errno.EPERM
    want = errno.EPERM if mm.kernel.mlock_onfault else errno.ENOSYS
    assert errno_of(mm.mlock2, a, P, 0) == want


def test_19_mlock_munlock_everything_keeps_the_stack(kmm: MM) -> None:
    """#19 LTP mlock03: mlock then munlock over every /proc/self/maps range must not shrink
    [stack]."""
    kmm.brk(kmm.brk(0) + 4 * P)
    kmm.mmap(0, 4 * P, RW, ANON)
    stack = next(v for v in kmm.maps() if v.name == "[stack]")
    for v in kmm.maps():
        kmm.mlock(v.start, v.end - v.start)
        kmm.munlock(v.start, v.end - v.start)
    after = next(v for v in kmm.maps() if v.name == "[stack]")
    assert (after.start, after.end) == (stack.start, stack.end)
    assert kmm.locked_vm == 0 and kmm.check_invariants() == []


def test_20_mlock_write_only_shared_file(kmm: MM) -> None:
    """#20 LTP mlock04: mlock of a PROT_WRITE-only MAP_SHARED file mapping succeeds (any
    protection other than PROT_NONE)."""
    f = File("mlock04", 4 * P)
    a = kmm.mmap(0, 4 * P, PROT_WRITE, MAP_SHARED, f)
    assert kmm.mlock(a, 4 * P) == 0
    assert kmm.mincore(a, 4 * P) == b"\x01" * 4


def test_21_smaps_rss_equals_locked(kmm: MM) -> None:
    """#21 LTP mlock05: after mlock of a 1 MiB anonymous PROT_WRITE mapping, smaps shows
    Rss == Locked == 1 MiB."""
    a = kmm.mmap(0, MiB, PROT_WRITE, ANON)
    kmm.mlock(a, MiB)
    s = smaps_at(kmm, a)
    assert s["Rss"] == s["Locked"] == 1024


@pytest.mark.parametrize("delta,extra", [(0, 0), (1, 1), (-1, 0)])
def test_22_mlock2_counts_pages(kmm: MM, delta: int, extra: int) -> None:
    """#22 LTP mlock201: mlock2(addr, n pages, 0) raises VmLck by n pages and mincore shows n
    present; one byte more counts one more page, one byte less does not."""
    if not needs_onfault(kmm):
        return
    n = 4
    a = kmm.mmap(0, 8 * P, RW, ANON)
    kmm.mlock2(a, n * P + delta, 0)
    assert kmm.vm_lck_kb() == (n + extra) * 4
    assert sum(kmm.mincore(a, 8 * P)) == n + extra


@pytest.mark.parametrize("touched", [4, 0])
def test_23_mlock2_onfault_locks_but_does_not_populate(kmm: MM, touched: int) -> None:
    """#23 LTP mlock201: mlock2(MLOCK_ONFAULT) raises VmLck by the whole range, but only the
    pre-touched pages are present (8 pages, 4 touched: 4 present; none touched: 0)."""
    if not needs_onfault(kmm):
        return
    a = kmm.mmap(0, 8 * P, RW, ANON)
    for i in range(touched):
        kmm.touch(a + i * P, write=True)
    kmm.mlock2(a, 8 * P, MLOCK_ONFAULT)
    assert kmm.vm_lck_kb() == 32
    assert sum(kmm.mincore(a, 8 * P)) == touched


def test_24_mlock2_errors(kmm: MM) -> None:
    """#24 LTP mlock202: mlock2 with an unknown flag (-1) is EINVAL, an unmapped address ENOMEM,
    above RLIMIT_MEMLOCK (non-root) ENOMEM."""
    if not needs_onfault(kmm):
        return
    a = kmm.mmap(0, 4 * P, RW, ANON)
    assert errno_of(kmm.mlock2, a, P, -1) == errno.EINVAL
    kmm.munmap(a, 4 * P)
    assert errno_of(kmm.mlock2, a, P, 0) == errno.ENOMEM
    mm = nonroot(kmm.kernel.name, P)
    b = mm.mmap(0, 4 * P, RW, ANON)
    assert errno_of(mm.mlock2, b, 2 * P, 0) == errno.ENOMEM


def test_25_relocking_does_not_count_twice(kmm: MM) -> None:
    """#25 LTP mlock203: locking an already-locked page again (ONFAULT, then 0) does not raise
    VmLck."""
    if not needs_onfault(kmm):
        return
    a = kmm.mmap(0, 4 * P, RW, ANON)
    kmm.mlock2(a, 4 * P, MLOCK_ONFAULT)
    assert kmm.vm_lck_kb() == 16
    kmm.mlock2(a, 4 * P, 0)
    assert kmm.vm_lck_kb() == 16
    assert kmm.mincore(a, 4 * P) == b"\x01" * 4


def test_26_mlock2_lo_and_rss(kmm: MM) -> None:
    """#26 KS mlock2-tests test_mlock_lock: after mlock2(0) on 2 pages VmFlags has `lo` and
    Rss == Size; after munlock `lo` is gone."""
    if not needs_onfault(kmm):
        return
    a = kmm.mmap(0, 2 * P, RW, ANON)
    kmm.mlock2(a, 2 * P, 0)
    s = smaps_at(kmm, a)
    assert "lo" in s["VmFlags"].split() and s["Rss"] == s["Size"] == 8
    kmm.munlock(a, 2 * P)
    assert "lo" not in smaps_at(kmm, a)["VmFlags"].split()


def test_27_mlock2_onfault_lo_lf(kmm: MM) -> None:
    """#27 KS test_mlock_onfault: mlock2(MLOCK_ONFAULT) and touching 1 page: `lo` is set and
    Rss < Size; after munlock no vma is lock-on-fault."""
    if not needs_onfault(kmm):
        return
    a = kmm.mmap(0, 2 * P, RW, ANON)
    kmm.mlock2(a, 2 * P, MLOCK_ONFAULT)
    kmm.touch(a, write=True)
    s = smaps_at(kmm, a)
    assert {"lo", "lf"} <= set(s["VmFlags"].split()) and s["Rss"] < s["Size"]
    kmm.munlock(a, 2 * P)
    assert not any(v.flags & (VM_LOCKED | VM_LOCKONFAULT) for v in kmm.maps())


def test_28_onfault_over_a_present_page(kmm: MM) -> None:
    """#28 KS test_lock_onfault_of_present: MLOCK_ONFAULT over a range with one present page
    marks the vma `lo`, with Rss < Size."""
    if not needs_onfault(kmm):
        return
    a = kmm.mmap(0, 2 * P, RW, ANON)
    kmm.touch(a, write=True)
    kmm.mlock2(a, 2 * P, MLOCK_ONFAULT)
    s = smaps_at(kmm, a)
    assert "lo" in s["VmFlags"].split() and s["Rss"] == 4 < s["Size"]


def test_29_munlock_splits_and_merges(kmm: MM) -> None:
    """#29 KS test_vma_management: munlock of the middle page of a 3-page locked vma splits it
    into 3 vmas; munlock of all 3 pages merges them back into 1."""
    a = kmm.mmap(0, 3 * P, RW, ANON)
    kmm.mlock(a, 3 * P)
    assert len(vmas_in(kmm, a, a + 3 * P)) == 1
    kmm.munlock(a + P, P)
    assert len(vmas_in(kmm, a, a + 3 * P)) == 3
    kmm.munlock(a, 3 * P)
    assert len(vmas_in(kmm, a, a + 3 * P)) == 1
    assert kmm.check_invariants() == []


def test_30_random_sub_ranges_within_the_limit(kmm: MM, seed: int) -> None:
    """#30 KS mlock-random-test: random mlock/mlock2 sub-ranges of a 128 KiB buffer under a
    256 KiB RLIMIT_MEMLOCK without CAP_IPC_LOCK always succeed, and VmLck stays at most
    buffer + 1 page: overlaps are not counted twice."""
    rnd = random.Random(seed)
    mm = nonroot(kmm.kernel.name, 256 * KiB)
    buf = 128 * KiB
    a = mm.mmap(0, buf, RW, ANON)
    for _ in range(100):
        off = rnd.randrange(buf)
        ln = rnd.randrange(1, buf - off + 1)
        if mm.kernel.mlock_onfault and rnd.random() < 0.5:
            mm.mlock2(a + off, ln, rnd.choice([0, MLOCK_ONFAULT]))
        else:
            mm.mlock(a + off, ln)
        assert mm.vm_lck_kb() <= (buf + P) // KiB
    assert mm.check_invariants() == []


def test_31_above_the_limit_always_fails(kmm: MM, seed: int) -> None:
    """#31 KS mlock-random-test: any lock length above the rlimit fails, and VmLck stays the
    same."""
    rnd = random.Random(seed)
    mm = nonroot(kmm.kernel.name, 64 * KiB)
    a = mm.mmap(0, 512 * KiB, RW, ANON)
    mm.mlock(a, 16 * KiB)
    for _ in range(30):
        ln = rnd.randrange(64 * KiB + 1, 512 * KiB)  # even overlapping the locked part, too much
        off = rnd.randrange(0, 512 * KiB - ln + 1)
        before = mm.snapshot()
        fns = [mm.mlock] + ([lambda s, n: mm.mlock2(s, n, rnd.choice([0, MLOCK_ONFAULT]))]
                            if mm.kernel.mlock_onfault else [])
        assert errno_of(rnd.choice(fns), a + off, ln) == errno.ENOMEM
        assert mm.snapshot() == before and mm.vm_lck_kb() == 16


def test_32_efault_from_populate_is_enomem(kmm: MM) -> None:
    """#32 __mlock_posix_error_return: an -EFAULT from gup (pages beyond EOF: SIGBUS) makes mlock
    return ENOMEM; the vma stays locked, as on Linux."""
    f = File("short", P)
    a = kmm.mmap(0, 4 * P, PROT_READ, MAP_SHARED, f)
    assert errno_of(kmm.mlock, a, 4 * P) == errno.ENOMEM
    assert kmm.mincore(a, 4 * P) == b"\x01\x00\x00\x00"
    assert kmm.locked_vm == 4 and kmm.check_invariants() == []


# ---------------------------------------------------------------- munlock
def test_33_munlock_with_a_hole_is_enomem(kmm: MM) -> None:
    """#33 LTP munlock02: munlock of a range containing a hole is ENOMEM -- after unlocking the
    vma before the hole, as apply_vma_lock_flags() walks (measured on 6.18); the vma after it
    stays locked."""
    a = kmm.mmap(0, 3 * P, RW, ANON | MAP_LOCKED)
    kmm.munmap(a + P, P)
    assert errno_of(kmm.munlock, a, 3 * P) == errno.ENOMEM
    assert [bool(v.flags & VM_LOCKED) for v in kmm.maps() if a <= v.start < a + 3 * P] == [False, True]
    assert kmm.locked_vm == 1 and kmm.check_invariants() == []
    before = kmm.snapshot()
    assert errno_of(kmm.munlock, a + P, 2 * P) == errno.ENOMEM  # no vma at start: nothing changes
    assert kmm.snapshot() == before


def test_34_munlock_of_a_locked_range(kmm: MM) -> None:
    """#34 LTP munlock01: munlock of a locked range succeeds."""
    a = kmm.mmap(0, 4 * P, RW, ANON)
    kmm.mlock(a, 4 * P)
    assert kmm.munlock(a, 4 * P) == 0
    assert kmm.locked_vm == 0 and not any(v.flags & VM_LOCKED for v in kmm.maps())


def test_35_locks_do_not_nest(kmm: MM) -> None:
    """#35 POSIX munlock: one munlock unlocks however many times mlock was called."""
    a = kmm.mmap(0, 4 * P, RW, ANON)
    for _ in range(3):
        kmm.mlock(a, 4 * P)
    assert kmm.vm_lck_kb() == 16
    kmm.munlock(a, 4 * P)
    assert kmm.vm_lck_kb() == 0


# ---------------------------------------------------------------- mlockall, munlockall
@pytest.mark.parametrize("flags", [MCL_CURRENT, MCL_FUTURE, MCL_CURRENT | MCL_FUTURE])
def test_36_mlockall_as_root(kmm: MM, flags: int) -> None:
    """#36 LTP mlockall01: as root, mlockall succeeds for MCL_CURRENT, MCL_FUTURE and both."""
    kmm.mmap(0, 4 * P, RW, ANON)
    assert kmm.mlockall(flags) == 0
    assert kmm.check_invariants() == []


def test_37_mlockall_limits(kmm: MM) -> None:
    """#37 LTP mlockall02/03, POSIX mlockall 13-2 15-1: as non-root, MCL_CURRENT with a tiny
    RLIMIT_MEMLOCK is ENOMEM (total_vm > limit) but MCL_FUTURE alone is not checked;
    RLIMIT_MEMLOCK 0 is EPERM; flags 0 or unknown bits are EINVAL."""
    name = kmm.kernel.name
    mm = nonroot(name, P)
    mm.mmap(0, 4 * P, RW, ANON)
    before = mm.snapshot()
    assert errno_of(mm.mlockall, MCL_CURRENT) == errno.ENOMEM
    assert mm.snapshot() == before
    assert mm.mlockall(MCL_FUTURE) == 0
    assert errno_of(nonroot(name, 0).mlockall, MCL_CURRENT) == errno.EPERM
    assert errno_of(kmm.mlockall, 0) == errno.EINVAL
    assert errno_of(kmm.mlockall, 0x100) == errno.EINVAL


def test_38_mcl_onfault_alone_is_einval(kmm: MM) -> None:
    """#38 sys_mlockall: mlockall(MCL_ONFAULT) alone is EINVAL (an unknown bit before 4.4)."""
    assert errno_of(kmm.mlockall, MCL_ONFAULT) == errno.EINVAL


def test_39_vmlck_over_mlockall_munlockall(kmm: MM) -> None:
    """#39 LTP munlockall01: VmLck is 0 at first, > 0 after mlockall(MCL_CURRENT|MCL_FUTURE),
    and 0 after munlockall."""
    assert kmm.vm_lck_kb() == 0
    kmm.mlockall(MCL_CURRENT | MCL_FUTURE)
    assert kmm.vm_lck_kb() > 0
    kmm.munlockall()
    assert kmm.vm_lck_kb() == 0 and kmm.def_flags & VM_LOCKED == 0


def test_40_mcl_current_locks_and_populates(kmm: MM) -> None:
    """#40 KS test_munlockall0: mlockall(MCL_CURRENT) makes an existing 2-page anonymous mapping
    `lo` with Rss == Size; munlockall clears it."""
    a = kmm.mmap(0, 2 * P, RW, ANON)
    kmm.mlockall(MCL_CURRENT)
    s = smaps_at(kmm, a)
    assert "lo" in s["VmFlags"].split() and s["Rss"] == s["Size"]
    kmm.munlockall()
    assert "lo" not in smaps_at(kmm, a)["VmFlags"].split()


def test_41_mcl_onfault_then_full(kmm: MM) -> None:
    """#41 KS test_munlockall1: MCL_CURRENT|MCL_ONFAULT gives lock-on-fault (Rss < Size);
    munlockall clears it; a following MCL_CURRENT|MCL_FUTURE populates and locks fully."""
    if not needs_onfault(kmm):
        return
    a = kmm.mmap(0, 2 * P, RW, ANON)
    kmm.mlockall(MCL_CURRENT | MCL_ONFAULT)
    s = smaps_at(kmm, a)
    assert {"lo", "lf"} <= set(s["VmFlags"].split()) and s["Rss"] < s["Size"]
    kmm.munlockall()
    assert not {"lo", "lf"} & set(smaps_at(kmm, a)["VmFlags"].split())
    kmm.mlockall(MCL_CURRENT | MCL_FUTURE)
    s = smaps_at(kmm, a)
    assert "lo" in s["VmFlags"].split() and "lf" not in s["VmFlags"].split() and s["Rss"] == s["Size"]


def test_42_future_onfault_inherited_and_split(kmm: MM) -> None:
    """#42 KS test_mlockall: under MCL_CURRENT|MCL_ONFAULT|MCL_FUTURE a new mapping inherits
    lock-on-fault, and munlock splits and merges it as in #29."""
    if not needs_onfault(kmm):
        return
    kmm.mlockall(MCL_CURRENT | MCL_ONFAULT | MCL_FUTURE)
    a = kmm.mmap(0, 3 * P, RW, ANON)
    v = vmas_in(kmm, a, a + 3 * P)
    assert len(v) == 1 and v[0].flags & VM_LOCKONFAULT and kmm.mincore(a, 3 * P) == bytes(3)
    kmm.munlock(a + P, P)
    assert len(vmas_in(kmm, a, a + 3 * P)) == 3
    kmm.munlock(a, 3 * P)
    assert len(vmas_in(kmm, a, a + 3 * P)) == 1


def test_43_mcl_future_new_mappings_locked_and_populated(kmm: MM) -> None:
    """#43 POSIX mlockall assertion 4, def_flags: under MCL_FUTURE a new mapping is locked and,
    unless ONFAULT, populated when it is created."""
    kmm.mlockall(MCL_FUTURE)
    a = kmm.mmap(0, 4 * P, RW, ANON)
    assert vmas_in(kmm, a, a + P)[0].flags & VM_LOCKED
    assert kmm.mincore(a, 4 * P) == b"\x01" * 4


def test_45_mcl_current_clears_future(kmm: MM) -> None:
    """#45 commit b0f205c2a308, apply_mlockall_flags: mlockall(MCL_FUTURE) then
    mlockall(MCL_CURRENT) clears def_flags, so later mappings are not locked; munlockall clears
    VM_LOCKED and VM_LOCKONFAULT everywhere."""
    kmm.mlockall(MCL_FUTURE)
    kmm.mlockall(MCL_CURRENT)
    a = kmm.mmap(0, 2 * P, RW, ANON)
    assert not vmas_in(kmm, a, a + P)[0].flags & VM_LOCKED
    if kmm.kernel.mlock_onfault:
        kmm.mlock2(a, P, MLOCK_ONFAULT)
    kmm.munlockall()
    assert not any(v.flags & (VM_LOCKED | VM_LOCKONFAULT) for v in kmm.maps())
    assert kmm.locked_vm == 0


@pytest.mark.parametrize("flags", [MCL_CURRENT, MCL_FUTURE, MCL_CURRENT | MCL_FUTURE])
def test_46_mlockall_keeps_other_def_flags(kmm: MM, flags: int) -> None:
    """#46 code, patch 1: mlockall and munlockall keep def_flags bits other than VM_LOCKED and
    VM_LOCKONFAULT -- from v3.9 on; v3.7 overwrote def_flags (wiping s390's VM_NOHUGEPAGE)."""
    kmm.def_flags |= VM_NOHUGEPAGE
    kmm.mlockall(flags)
    assert bool(kmm.def_flags & VM_NOHUGEPAGE) == kmm.kernel.mlockall_keeps_def_flags
    kmm.def_flags |= VM_NOHUGEPAGE
    kmm.munlockall()
    assert bool(kmm.def_flags & VM_NOHUGEPAGE) == kmm.kernel.mlockall_keeps_def_flags


# ---------------------------------------------------------------- lock record
def test_mlock_populates_after_the_write_hold(kmm: MM) -> None:
    """mlock() has populated after up_write() since 2.6.38 -- in every profile: the lock record
    is a write hold (the vma flags), then a read hold (the populate)."""
    a = kmm.mmap(0, 64 * P, RW, ANON)
    kmm.mmap_sem.history.clear()
    kmm.mlock(a, 64 * P)
    assert [r.mode for r in kmm.mmap_sem.history if r.call == "mlock"] == ["W", "R"]


def test_mlock_of_prot_none_is_enomem_but_locks(kmm: MM) -> None:
    """mlock of a PROT_NONE vma: gup refuses it (-EFAULT), so mlock returns ENOMEM; the vma is
    VM_LOCKED all the same, as on Linux."""
    a = kmm.mmap(0, 2 * P, PROT_NONE, ANON)
    assert errno_of(kmm.mlock, a, 2 * P) == errno.ENOMEM
    assert vmas_in(kmm, a, a + P)[0].flags & VM_LOCKED and kmm.mincore(a, 2 * P) == bytes(2)


def test_map_locked_then_munlock_keeps_pages(kmm: MM) -> None:
    """munlock clears the lock but leaves the pages present."""
    a = kmm.mmap(0, 4 * P, RW, ANON | MAP_LOCKED | MAP_POPULATE)
    kmm.munlock(a, 4 * P)
    assert kmm.mincore(a, 4 * P) == b"\x01" * 4 and kmm.check_invariants() == []
