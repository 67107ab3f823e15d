"""Conformance of mmap, munmap and brk (mm/mmap.c): section 7 of kernel-semantics.md, items 1-14
and 47-50 and 56-58, on every profile (the ``kmm`` fixture) unless an item is profile-specific.

Skipped, because they do not apply to a model:
* #2's second half (another *process* writes the file through MAP_SHARED and msyncs): the model
  has no processes and no msync; what it can check -- that the populated private pages are COW
  copies, unaffected by a write through a shared mapping of the same file -- is checked.
* #43's MAP_DROPPABLE exemption: MAP_DROPPABLE (6.11) is not modelled.
* #49's kernel-version condition: the model applies the current rule (a three-way split at
  max_map_count fails) on every profile; the v3.x code has the same check.
"""

from __future__ import annotations

import errno
import threading

import pytest

from mmlab import (MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_LOCKED, MAP_NONBLOCK,
                   MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MCL_FUTURE, MCL_ONFAULT, MM,
                   PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE, SIGBUS, SIGSEGV, TASK_SIZE,
                   ZERO_COSTS, File)
from mmlab.clock import hooks
from mmlab.mm.pagetable import PTE_FILE, PTE_POPULATE, PTE_PRESENT, PTE_WRITTEN
from mm_helpers import errno_of, nonroot

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
P = PAGE_SIZE
MiB = 1 << 20


# ---------------------------------------------------------------- MAP_POPULATE and MAP_LOCKED
def test_01_populate_file_every_page_present_and_zero(kmm: MM) -> None:
    """#1 LTP mmap12: mmap(1 MiB, RW, MAP_PRIVATE|MAP_POPULATE, file) has every page present on
    return; they read as 0 -- private copies of the (ftruncated, all-zero) file's pages."""
    f = File("mmap12", MiB)  # ftruncate()d: a hole, all zeros; nothing written
    a = kmm.mmap(0, MiB, RW, MAP_PRIVATE | MAP_POPULATE, f)
    assert kmm.mincore(a, MiB) == b"\x01" * 256
    assert f.data == {}
    assert all(kmm.file_page(a + i * P) == (f, i) for i in range(256))


def test_02_private_populate_breaks_cow(kmm: MM) -> None:
    """#2 KS map_populate: MAP_PRIVATE|MAP_POPULATE with PROT_RW takes write faults (COW broken),
    so a later write through a MAP_SHARED mapping of the file does not reach the private pages."""
    f = File("map_populate", 4 * P, cached=True)
    a = kmm.mmap(0, 4 * P, RW, MAP_PRIVATE | MAP_POPULATE, f)
    before = [kmm.pt.provenance(a + i * P) for i in range(4)]
    for st, _, _ in before:
        assert st & PTE_PRESENT and st & PTE_WRITTEN and not st & PTE_FILE
    s = kmm.mmap(0, 4 * P, RW, MAP_SHARED, f)
    for i in range(4):
        kmm.touch(s + i * P, write=True)
    assert [kmm.pt.provenance(a + i * P) for i in range(4)] == before


def test_03_map_locked_raises_vmlck_by_the_size(kmm: MM) -> None:
    """#3 LTP mmap14: mmap(1 MiB, MAP_PRIVATE|MAP_ANONYMOUS|MAP_LOCKED) raises VmLck by 1024 kB."""
    v0 = kmm.vm_lck_kb()
    a = kmm.mmap(0, MiB, RW, ANON | MAP_LOCKED)
    assert kmm.vm_lck_kb() - v0 == 1024
    assert kmm.mincore(a, MiB) == b"\x01" * 256


@pytest.mark.parametrize("kernel", ["v3.7", "v3.9-rc1", "v3.9", "v6.18", "bounded"])
def test_04_mcl_onfault_future_limit_applies_to_new_mappings(kernel: str) -> None:
    """#4 KS on-fault-limit: under mlockall(MCL_ONFAULT|MCL_FUTURE), mmap(2x RLIMIT_MEMLOCK,
    MAP_POPULATE) fails with EAGAIN. MCL_ONFAULT exists from 4.4: before, mlockall() refuses it."""
    mm = nonroot(kernel, 16 * P)
    if not mm.kernel.mlock_onfault:
        assert errno_of(mm.mlockall, MCL_ONFAULT | MCL_FUTURE) == errno.EINVAL
        return
    mm.mlockall(MCL_ONFAULT | MCL_FUTURE)
    before = mm.snapshot()
    assert errno_of(mm.mmap, 0, 32 * P, RW, ANON | MAP_POPULATE) == errno.EAGAIN
    assert mm.snapshot() == before


def test_05_mcl_future_over_the_limit_is_eagain(kmm: MM) -> None:
    """#5 POSIX mmap/18-1: mlockall(MCL_FUTURE), a small RLIMIT_MEMLOCK, non-root: mapping more
    than the limit fails with EAGAIN."""
    mm = nonroot(kmm.kernel.name, 4 * P)
    mm.mlockall(MCL_FUTURE)
    assert errno_of(mm.mmap, 0, 8 * P, RW, ANON) == errno.EAGAIN
    mm.mmap(0, 4 * P, RW, ANON)  # within the limit it works, and is locked
    assert mm.vm_lck_kb() == 16


def test_06_nonblock_cancels_populate_but_not_locked(kmm: MM) -> None:
    """#6 man-pages f38fa944, do_mmap: MAP_POPULATE|MAP_NONBLOCK populates nothing; a VM_LOCKED
    mapping is populated regardless of MAP_NONBLOCK."""
    a = kmm.mmap(0, 8 * P, RW, ANON | MAP_POPULATE | MAP_NONBLOCK)
    assert kmm.mincore(a, 8 * P) == bytes(8)
    b = kmm.mmap(0, 8 * P, RW, ANON | MAP_LOCKED | MAP_NONBLOCK)
    assert kmm.mincore(b, 8 * P) == b"\x01" * 8


def test_07_map_locked_without_privilege_is_eperm(kmm: MM) -> None:
    """#7 do_mmap can_do_mlock: MAP_LOCKED without CAP_IPC_LOCK and RLIMIT_MEMLOCK 0 is EPERM."""
    mm = nonroot(kmm.kernel.name, 0)
    assert errno_of(mm.mmap, 0, P, RW, ANON | MAP_LOCKED) == errno.EPERM


@pytest.mark.parametrize("extra", [MAP_POPULATE, MAP_LOCKED])
def test_08_populate_failure_is_not_an_error(kmm: MM, extra: int) -> None:
    """#8 man page via lkml 1505.1/05000, mm_populate ignore_errors: mmap(MAP_LOCKED or
    MAP_POPULATE) succeeds although population fails part-way (pages beyond EOF: SIGBUS)."""
    f = File("short", P + 100)  # two pages' worth of file: the second only partly
    a = kmm.mmap(0, 6 * P, PROT_READ, MAP_SHARED | extra, f)
    assert kmm.mincore(a, 6 * P) == b"\x01\x01\x00\x00\x00\x00"


def test_09_eacces_einval(kmm: MM) -> None:
    """#9 LTP mmap06: EACCES for a file not open for reading; EINVAL for length 0, and for flags
    with none of MAP_PRIVATE/MAP_SHARED/MAP_SHARED_VALIDATE."""
    wo = File("wronly", 4 * P, mode="w")
    assert errno_of(kmm.mmap, 0, P, PROT_READ, MAP_PRIVATE, wo) == errno.EACCES
    assert errno_of(kmm.mmap, 0, P, PROT_READ, MAP_SHARED, wo) == errno.EACCES
    ro = File("rdonly", 4 * P, mode="r")
    assert errno_of(kmm.mmap, 0, P, RW, MAP_SHARED, ro) == errno.EACCES
    assert errno_of(kmm.mmap, 0, 0, RW, ANON) == errno.EINVAL
    assert errno_of(kmm.mmap, 0, P, RW, MAP_ANONYMOUS) == errno.EINVAL


def test_10_ebadf_without_a_file(kmm: MM) -> None:
    """#10 LTP mmap08: EBADF for an invalid fd when the mapping is not anonymous."""
    assert errno_of(kmm.mmap, 0, P, RW, MAP_SHARED, None) == errno.EBADF


def test_11_fixed_noreplace_over_a_mapping_is_eexist(kmm: MM) -> None:
    """#11 LTP mmap17, KS mremap_test: MAP_FIXED_NOREPLACE over an existing mapping is EEXIST."""
    a = kmm.mmap(0, 4 * P, RW, ANON)
    before = kmm.snapshot()
    assert errno_of(kmm.mmap, a + P, P, RW, ANON | MAP_FIXED_NOREPLACE) == errno.EEXIST
    assert kmm.snapshot() == before
    kmm.munmap(a + P, P)
    assert kmm.mmap(a + P, P, RW, ANON | MAP_FIXED_NOREPLACE) == a + P


def test_12_prot_none_segv_beyond_eof_sigbus(kmm: MM) -> None:
    """#12 LTP mmap05, mmap13: an access to PROT_NONE is SIGSEGV; to whole pages beyond EOF,
    SIGBUS (the partial last page is fine)."""
    a = kmm.mmap(0, P, PROT_NONE, ANON)
    with pytest.raises(SIGSEGV):
        kmm.touch(a)
    f = File("eof", P + 1)
    b = kmm.mmap(0, 4 * P, PROT_READ, MAP_SHARED, f)
    kmm.touch(b)
    kmm.touch(b + P)  # the page holding byte P: inside the file
    with pytest.raises(SIGBUS):
        kmm.touch(b + 2 * P)


def test_13_beyond_the_user_address_space(kmm: MM) -> None:
    """#13 LTP mmap15: a mapping in the high region beyond the user address space fails with
    ENOMEM (or EINVAL)."""
    assert errno_of(kmm.mmap, TASK_SIZE - P, 2 * P, RW, ANON | MAP_FIXED) in (errno.ENOMEM, errno.EINVAL)
    assert errno_of(kmm.mmap, 0, TASK_SIZE + P, RW, ANON) in (errno.ENOMEM, errno.EINVAL)


def test_14_replacement_mapping_gets_populated_after_the_revert(kmm: MM) -> None:
    """#14 code, section 4: populate runs after the write lock is released, so a MAP_FIXED
    replacement made while populate waits for the disk is populated too -- in v3.9 and later.
    VM_POPULATE (v3.9-rc1) and the identity check (bounded) skip it; v3.7 populates inside the
    write hold, so there is no window at all."""
    mm = kmm
    f = File("cold", 32 * P)  # not cached: the first fault waits for the disk
    main = threading.current_thread().name
    replaced: list[int] = []

    def replace() -> None:
        mm.mmap(target + 8 * P, 8 * P, RW, ANON | MAP_FIXED)

    def hook(kind: str, obj: object) -> None:
        if kind != "lock_released" or replaced or threading.current_thread().name != main:
            return
        _, rec = obj  # type: ignore[misc]
        if rec.call == "mmap" and rec.mode == "R":  # populate dropped the lock for the disk
            t = threading.Thread(target=replace)
            t.start()
            t.join(10)
            replaced.append(1)

    target = mm.mmap(0, 32 * P, PROT_NONE, ANON)
    mm.munmap(target, 32 * P)
    hooks.schedule_point = hook
    try:
        a = mm.mmap(target, 32 * P, PROT_READ, MAP_SHARED | MAP_POPULATE, f)
    finally:
        hooks.schedule_point = None
    assert a == target
    k = mm.kernel
    if not k.populate_after_unlock:
        assert not replaced  # the write lock was never dropped while populating
        return
    assert replaced
    repl = mm.mincore(a + 8 * P, 8 * P)
    if k.vm_populate or k.populate_checks_identity:
        assert repl == bytes(8)
    else:
        assert repl == b"\x01" * 8
        st, _, call = mm.pt.provenance(a + 8 * P)
        mmap_call = [c for c in mm.call_history if c.name == "mmap" and c.result == a][-1]
        assert st & PTE_POPULATE and call == mmap_call.call_id
    assert mm.mincore(a, 8 * P) == b"\x01" * 8 and mm.mincore(a + 16 * P, 16 * P) == b"\x01" * 16


# ---------------------------------------------------------------- munmap
def test_47_touch_after_munmap_is_sigsegv(kmm: MM) -> None:
    """#47 LTP munmap01, POSIX munmap 1-1: after a full or partial munmap, touching the unmapped
    pages is SIGSEGV."""
    a = kmm.mmap(0, 4 * P, RW, ANON | MAP_POPULATE)
    kmm.munmap(a + P, 2 * P)
    kmm.touch(a)
    kmm.touch(a + 3 * P)
    for off in (P, 2 * P):
        with pytest.raises(SIGSEGV):
            kmm.touch(a + off)
    kmm.munmap(a, 4 * P)
    with pytest.raises(SIGSEGV):
        kmm.touch(a)


def test_48_munmap_einval(kmm: MM) -> None:
    """#48 LTP munmap03, POSIX munmap: EINVAL for a range outside the address space, length 0,
    or an unaligned address."""
    a = kmm.mmap(0, 4 * P, RW, ANON)
    before = kmm.snapshot()
    assert errno_of(kmm.munmap, TASK_SIZE + P, P) == errno.EINVAL
    assert errno_of(kmm.munmap, TASK_SIZE - P, 2 * P) == errno.EINVAL
    assert errno_of(kmm.munmap, a, 0) == errno.EINVAL
    assert errno_of(kmm.munmap, a + 1, P) == errno.EINVAL
    assert kmm.snapshot() == before


def test_49_munmap_split_at_max_map_count_is_enomem(kmm: MM) -> None:
    """#49 LTP munmap04: a munmap that splits a vma in three when map_count is already at
    max_map_count fails with ENOMEM; one that only trims a vma still works."""
    mm = MM(kmm.kernel, ZERO_COSTS, max_map_count=16, layout="bare")
    addrs = []
    for i in range(16):  # alternate protections so that nothing merges
        addrs.append(mm.mmap(0, 3 * P, RW if i % 2 else PROT_READ, ANON))
    assert mm.map_count == 16
    before = mm.snapshot()
    assert errno_of(mm.munmap, addrs[3] + P, P) == errno.ENOMEM
    assert mm.snapshot() == before
    mm.munmap(addrs[3] + 2 * P, P)  # a trim: no new vma
    assert mm.map_count == 16 and mm.check_invariants() == []


def test_50_munmap_of_nothing_succeeds_and_unlocks(kmm: MM) -> None:
    """#50 POSIX munmap: munmap of a range with no mappings succeeds with no effect; memory
    locks in an unmapped range are removed."""
    a = kmm.mmap(0, 8 * P, RW, ANON)
    kmm.munmap(a, 8 * P)
    before = kmm.snapshot()
    assert kmm.munmap(a, 8 * P) == 0
    assert kmm.snapshot() == before
    b = kmm.mmap(0, 8 * P, RW, ANON | MAP_LOCKED)
    assert kmm.vm_lck_kb() == 32
    kmm.munmap(b, 8 * P)
    assert kmm.vm_lck_kb() == 0 and kmm.locked_vm == 0


# ---------------------------------------------------------------- brk
def test_56_brk_up_same_down_33_times(kmm: MM) -> None:
    """#56 LTP brk01: brk up by 2 pages - 1, then unchanged, then down, 33 times: the break is
    the requested value each time and the new memory is writable."""
    initial = cur = kmm.brk(0)
    incr = 2 * P - 1
    for i in range(33):
        want = {0: cur + incr, 1: cur, 2: cur - incr}[i % 3]
        got = kmm.brk(want)
        assert got == want
        if i % 3 == 0:
            kmm.touch(got - 1, write=True)
            kmm.touch(cur, write=True)
        cur = got
    assert cur == initial
    assert kmm.check_invariants() == []


def test_57_brk_over_an_mprotect_split(kmm: MM) -> None:
    """#57 LTP brk02: brk up 2 pages, mprotect the top page (a vma split), brk up again, then back
    to the start: all succeed, and the shrink unmaps several vmas."""
    start = kmm.brk(0)
    assert kmm.brk(start + 2 * P) == start + 2 * P
    kmm.mprotect(start + P, P, PROT_READ)
    heap = [v for v in kmm.maps() if start <= v.start < start + 4 * P]
    assert len(heap) == 2
    assert kmm.brk(start + 4 * P) == start + 4 * P
    assert len([v for v in kmm.maps() if start <= v.start < start + 4 * P]) == 3
    assert kmm.brk(start) == start
    assert [v for v in kmm.maps() if start <= v.start < start + 4 * P] == []
    assert kmm.check_invariants() == []


def test_58_brk_under_mcl_future_is_locked_and_populated(kmm: MM) -> None:
    """#58 code, patch 5: under MCL_FUTURE brk growth is locked and populated -- inside the
    write hold in v3.7, after it (under the read lock) from v3.9 on."""
    kmm.mlockall(MCL_FUTURE)
    start = kmm.brk(0)
    kmm.mmap_sem.history.clear()
    new = kmm.brk(start + 16 * P)
    assert new == start + 16 * P
    assert kmm.mincore(start, 16 * P) == b"\x01" * 16
    assert kmm.vm_lck_kb() == 64
    modes = [r.mode for r in kmm.mmap_sem.history if r.call == "brk"]
    if kmm.kernel.brk_populate_after_unlock:
        assert modes == ["W", "R"]
    else:
        assert modes == ["W"]


# ---------------------------------------------------------------- lock record of populate
@pytest.mark.parametrize("flags", [MAP_POPULATE, MAP_LOCKED])
def test_populate_lock_holds_per_profile(kmm: MM, flags: int) -> None:
    """The lock record: an anonymous populate runs inside the one write hold in v3.7, and in one
    read hold after the write hold in v3.9 and later (anonymous faults never drop the lock)."""
    kmm.mmap_sem.history.clear()
    kmm.mmap(0, 4 * MiB, RW, ANON | flags)
    recs = [r for r in kmm.mmap_sem.history if r.call == "mmap"]
    if kmm.kernel.populate_after_unlock:
        assert [r.mode for r in recs] == ["W", "R"] and recs[1].acq_ns >= recs[0].rel_ns
    else:
        assert [r.mode for r in recs] == ["W"]



def test_maps_prints_s_for_a_read_only_shared_file_mapping(mm: MM) -> None:
    """show_map_vma() prints 's' from VM_MAYSHARE: a MAP_SHARED mapping of a file opened read-only
    has no VM_SHARED (nor VM_MAYWRITE) but is "r--s" (measured on 6.18: "r--s", VmFlags
    "rd mr me ms"); the model printed "r--p" from VM_SHARED."""
    ro = File("ro", 4 * P, mode="r", cached=True)
    a = mm.mmap(0, 4 * P, PROT_READ, MAP_SHARED, ro)
    [v] = [v for v in mm.maps() if v.start == a]
    assert v.perms == "r--s" and f"{a:08x}-{a + 4 * P:08x} r--s" in mm.maps_text()
    [s] = [s for s in mm.smaps() if s["start"] == a]
    assert s["VmFlags"] == "rd mr me ms"
