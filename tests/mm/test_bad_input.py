"""Bad input: every call, with each kind of bad input, on every profile, raises OSError with the
errno Linux gives and leaves the state Linux leaves. Where Linux checks before it changes, that is
the model exactly as it was (``mm.snapshot()``: vmas, page table with provenance, accounting,
def_flags, the break, lineage, lock state). Where Linux changes as it goes -- mprotect, mlock and
munlock change the vmas before a hole (do_mprotect_pkey(), apply_vma_lock_flags()), madvise
applies to every mapped part (madvise_walk_vmas()) -- a case names what Linux did before it
failed (``linux``), and the model must equal a twin that only did that.

Each case runs against the same small process: an anonymous populated mapping, a VM_LOCKED one,
shared mappings of a read-write and a read-only file, a private file mapping, a PROT_NONE one, a
mapping with a hole in it, one with no room to grow, and a free address. A case may ask for a
non-root process (no CAP_IPC_LOCK, a given RLIMIT_MEMLOCK) or a small max_map_count, which is
then filled up before the call.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import pytest

from mmlab import (KERNELS, MADV_DONTNEED, MADV_POPULATE_WRITE, MAP_ANONYMOUS, MAP_FIXED,
                   MAP_GROWSDOWN,
                   MAP_FIXED_NOREPLACE, MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED,
                   MAP_SHARED_VALIDATE, MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT, MM,
                   MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, PAGE_SIZE, PROT_EXEC, PROT_NONE,
                   PROT_READ, PROT_WRITE, SIGBUS, SIGSEGV, TASK_SIZE, ZERO_COSTS, File, Kernel)
from mmlab.flags import PROT_GROWSDOWN, PROT_GROWSUP

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
P = PAGE_SIZE
EINVAL, ENOMEM, EAGAIN, EPERM, EEXIST, EFAULT, EACCES, EBADF, ENOSYS, EOPNOTSUPP = (
    errno.EINVAL, errno.ENOMEM, errno.EAGAIN, errno.EPERM, errno.EEXIST, errno.EFAULT,
    errno.EACCES, errno.EBADF, errno.ENOSYS, errno.EOPNOTSUPP)


@dataclass
class Env:
    """The mappings every case can aim at."""

    anon: int = 0
    locked: int = 0
    shared: int = 0
    shared_ro: int = 0
    private_file: int = 0
    none: int = 0
    hole: int = 0  # 3 pages, the middle one unmapped
    wall: int = 0  # 4 pages, with a mapping right after: no room to grow in place
    free: int = 0  # 16 unmapped pages
    file: Optional[File] = None
    ro_file: Optional[File] = None


def setup(mm: MM) -> Env:
    e = Env()
    e.file = File("rw", 16 * P, cached=True)
    e.ro_file = File("ro", 8 * P, mode="r", cached=True)
    e.anon = mm.mmap(0, 8 * P, RW, ANON | MAP_POPULATE)
    if mm.cap_ipc_lock or mm.rlimit_memlock >= 4 * P:
        e.locked = mm.mmap(0, 4 * P, RW, ANON | MAP_LOCKED)
    e.shared = mm.mmap(0, 8 * P, RW, MAP_SHARED | MAP_POPULATE, e.file)
    e.shared_ro = mm.mmap(0, 4 * P, PROT_READ, MAP_SHARED, e.ro_file)
    e.private_file = mm.mmap(0, 4 * P, RW, MAP_PRIVATE, e.file, 8 * P)
    e.none = mm.mmap(0, 2 * P, PROT_NONE, ANON)
    e.hole = mm.mmap(0, 3 * P, RW, ANON | MAP_POPULATE)
    mm.munmap(e.hole + P, P)
    e.wall = mm.mmap(0, 5 * P, RW, ANON)
    mm.mprotect(e.wall + 4 * P, P, PROT_READ)
    e.free = mm.mmap(0, 16 * P, PROT_NONE, ANON)
    mm.munmap(e.free, 16 * P)
    mm.brk(mm.brk(0) + 4 * P)
    return e


def fill_map_count(mm: MM) -> None:
    """Add one-page mappings (alternating protections, so nothing merges) up to max_map_count."""
    i = 0
    while mm.map_count < mm.max_map_count:
        mm.mmap(0, P, PROT_READ if i % 2 else PROT_EXEC, ANON)
        i += 1


Errno = Union[int, Callable[[Kernel], int]]


@dataclass
class Case:
    id: str
    call: Callable[[MM, Env], object]
    errno: Errno
    nonroot: Optional[int] = None  # RLIMIT_MEMLOCK of a process without CAP_IPC_LOCK
    max_map_count: Optional[int] = None  # fill the process up to this many vmas first
    kw: dict = field(default_factory=dict)
    linux: Optional[Callable[[MM, Env], object]] = None  # what Linux changed before failing


def onfault(good: int) -> Errno:
    """mlock2() is ENOSYS before 4.4."""
    return lambda k: good if k.mlock_onfault else ENOSYS


MAX = 24  # small max_map_count for the ENOMEM-at-the-limit cases

CASES = [
    # ---- mmap
    Case("mmap-len-0", lambda m, e: m.mmap(0, 0, RW, ANON), EINVAL),
    Case("mmap-no-map-type", lambda m, e: m.mmap(0, P, RW, MAP_ANONYMOUS), EINVAL),
    Case("mmap-unknown-prot", lambda m, e: m.mmap(0, P, 0x100, ANON), EINVAL),
    Case("mmap-unaligned-offset", lambda m, e: m.mmap(0, P, RW, MAP_SHARED, e.file, 1), EINVAL),
    Case("mmap-fixed-unaligned", lambda m, e: m.mmap(e.free + 1, P, RW, ANON | MAP_FIXED), EINVAL),
    Case("mmap-no-fd", lambda m, e: m.mmap(0, P, RW, MAP_SHARED, None), EBADF),
    Case("mmap-no-fd-and-no-type", lambda m, e: m.mmap(0, P, RW, 0, None), EBADF),
    Case("mmap-fd-not-readable", lambda m, e: m.mmap(0, P, PROT_READ, MAP_PRIVATE, File("w", P, mode="w")),
         EACCES),
    Case("mmap-shared-write-on-readonly-fd", lambda m, e: m.mmap(0, P, RW, MAP_SHARED, e.ro_file), EACCES),
    Case("mmap-fixed-noreplace-over-mapping",
         lambda m, e: m.mmap(e.anon + P, P, RW, ANON | MAP_FIXED_NOREPLACE), EEXIST),
    Case("mmap-fixed-beyond-task-size", lambda m, e: m.mmap(TASK_SIZE - P, 2 * P, RW, ANON | MAP_FIXED),
         ENOMEM),
    Case("mmap-longer-than-address-space", lambda m, e: m.mmap(0, TASK_SIZE + P, RW, ANON), ENOMEM),
    Case("mmap-validate-anonymous", lambda m, e: m.mmap(0, P, RW, MAP_SHARED_VALIDATE | MAP_ANONYMOUS),
         EINVAL),
    Case("mmap-validate-unknown-flag",
         lambda m, e: m.mmap(0, P, RW, MAP_SHARED_VALIDATE | 0x400000, e.file), EOPNOTSUPP),
    Case("mmap-locked-no-privilege", lambda m, e: m.mmap(0, P, RW, ANON | MAP_LOCKED), EPERM, nonroot=0),
    Case("mmap-locked-over-rlimit", lambda m, e: m.mmap(0, 8 * P, RW, ANON | MAP_LOCKED), EAGAIN,
         nonroot=6 * P),
    Case("mmap-future-locked-over-rlimit",
         lambda m, e: (m.mlockall(MCL_FUTURE), m.mmap(0, 8 * P, RW, ANON)), EAGAIN, nonroot=6 * P),
    Case("mmap-at-max-map-count", lambda m, e: m.mmap(0, P, PROT_WRITE, ANON), ENOMEM, max_map_count=MAX),
    # ---- munmap
    Case("munmap-unaligned", lambda m, e: m.munmap(e.anon + 1, P), EINVAL),
    Case("munmap-len-0", lambda m, e: m.munmap(e.anon, 0), EINVAL),
    Case("munmap-beyond-task-size", lambda m, e: m.munmap(TASK_SIZE - P, 2 * P), EINVAL),
    Case("munmap-split-in-three-at-max", lambda m, e: m.munmap(e.anon + P, P), ENOMEM, max_map_count=MAX),
    # ---- mprotect
    Case("mprotect-unaligned", lambda m, e: m.mprotect(e.anon + 1, P, PROT_READ), EINVAL),
    Case("mprotect-unknown-prot", lambda m, e: m.mprotect(e.anon, P, 0x40), EINVAL),
    Case("mprotect-growsdown-and-up",
         lambda m, e: m.mprotect(e.anon, P, PROT_READ | PROT_GROWSDOWN | PROT_GROWSUP), EINVAL),
    Case("mprotect-growsup", lambda m, e: m.mprotect(e.anon, P, PROT_READ | PROT_GROWSUP), EINVAL),
    Case("mprotect-growsdown-not-a-stack", lambda m, e: m.mprotect(e.anon, P, PROT_READ | PROT_GROWSDOWN),
         EINVAL),
    Case("mprotect-unmapped", lambda m, e: m.mprotect(e.free, P, PROT_READ), ENOMEM),
    Case("mprotect-hole", lambda m, e: m.mprotect(e.hole, 3 * P, PROT_READ), ENOMEM,
         linux=lambda m, e: m.mprotect(e.hole, P, PROT_READ)),
    Case("mprotect-eacces-after-a-changed-vma",
         lambda m, e: m.mprotect(e.shared_ro - P, 2 * P, RW), EACCES,
         linux=lambda m, e: m.mprotect(e.shared_ro - P, P, RW)),
    Case("mprotect-wraps", lambda m, e: m.mprotect(e.anon, (1 << 64) - e.anon, PROT_READ), ENOMEM),
    Case("mprotect-write-on-readonly-shared", lambda m, e: m.mprotect(e.shared_ro, P, RW), EACCES),
    Case("mprotect-split-at-max", lambda m, e: m.mprotect(e.anon + P, P, PROT_READ), ENOMEM,
         max_map_count=MAX),
    # ---- mremap
    Case("mremap-unknown-flag", lambda m, e: m.mremap(e.anon, P, P, 0x10), EINVAL),
    Case("mremap-dontunmap-unknown-or-resizing",
         lambda m, e: m.mremap(e.anon, P, 2 * P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP), EINVAL),
    Case("mremap-fixed-without-maymove", lambda m, e: m.mremap(e.anon, P, P, MREMAP_FIXED, e.free), EINVAL),
    Case("mremap-unaligned-old", lambda m, e: m.mremap(e.anon + 1, P, 2 * P, MREMAP_MAYMOVE), EINVAL),
    Case("mremap-new-len-0", lambda m, e: m.mremap(e.anon, P, 0, MREMAP_MAYMOVE), EINVAL),
    Case("mremap-unmapped-old", lambda m, e: m.mremap(e.free, P, 2 * P, MREMAP_MAYMOVE), EFAULT),
    Case("mremap-unmapped-old-shrink", lambda m, e: m.mremap(e.free, 2 * P, P), EFAULT),
    Case("mremap-old-past-its-vma", lambda m, e: m.mremap(e.wall, 5 * P, 8 * P, MREMAP_MAYMOVE), EFAULT),
    Case("mremap-no-room-no-maymove", lambda m, e: m.mremap(e.wall, 4 * P, 8 * P), ENOMEM),
    Case("mremap-fixed-unaligned-new",
         lambda m, e: m.mremap(e.anon, P, P, MREMAP_FIXED | MREMAP_MAYMOVE, e.free + 1), EINVAL),
    Case("mremap-fixed-overlap",
         lambda m, e: m.mremap(e.anon, 4 * P, 4 * P, MREMAP_FIXED | MREMAP_MAYMOVE, e.anon + 2 * P), EINVAL),
    Case("mremap-fixed-beyond-task-size",
         lambda m, e: m.mremap(e.anon, P, 2 * P, MREMAP_FIXED | MREMAP_MAYMOVE, TASK_SIZE - P), EINVAL),
    Case("mremap-fixed-unmapped-old",
         lambda m, e: m.mremap(e.free, P, P, MREMAP_FIXED | MREMAP_MAYMOVE, e.anon), EFAULT),
    Case("mremap-fixed-old-past-its-vma-resizing",  # without a resize, 6.17+ moves every vma of the range
         lambda m, e: m.mremap(e.hole, 3 * P, 4 * P, MREMAP_FIXED | MREMAP_MAYMOVE, e.free), EFAULT),
    Case("mremap-fixed-duplicate-over-itself",
         lambda m, e: m.mremap(e.shared, 0, 2 * P, MREMAP_FIXED | MREMAP_MAYMOVE, e.shared), EFAULT),
    Case("mremap-duplicate-private", lambda m, e: m.mremap(e.anon, 0, P, MREMAP_MAYMOVE), EINVAL),
    Case("mremap-locked-growth-over-rlimit", lambda m, e: m.mremap(e.locked, 4 * P, 8 * P, MREMAP_MAYMOVE),
         EAGAIN, nonroot=6 * P),
    Case("mremap-move-at-max-map-count", lambda m, e: m.mremap(e.wall, 4 * P, 8 * P, MREMAP_MAYMOVE),
         ENOMEM, max_map_count=MAX),
    # ---- mlock, mlock2, munlock
    Case("mlock-unmapped", lambda m, e: m.mlock(e.free, P), ENOMEM),
    Case("mlock-hole", lambda m, e: m.mlock(e.hole, 3 * P), ENOMEM, linux=lambda m, e: m.mlock(e.hole, P)),
    Case("mlock-over-rlimit", lambda m, e: m.mlock(e.anon, 8 * P), ENOMEM, nonroot=6 * P),
    Case("mlock-no-privilege", lambda m, e: m.mlock(e.anon, P), EPERM, nonroot=0),
    Case("mlock-split-at-max", lambda m, e: m.mlock(e.anon + P, P), ENOMEM, max_map_count=MAX),
    Case("mlock2-unknown-flag", lambda m, e: m.mlock2(e.anon, P, 0x2), onfault(EINVAL)),
    Case("mlock2-minus-one", lambda m, e: m.mlock2(e.anon, P, -1), onfault(EINVAL)),
    Case("mlock2-unmapped", lambda m, e: m.mlock2(e.free, P, MLOCK_ONFAULT), onfault(ENOMEM)),
    Case("mlock2-over-rlimit", lambda m, e: m.mlock2(e.anon, 8 * P, 0), onfault(ENOMEM), nonroot=6 * P),
    Case("mlock2-no-privilege", lambda m, e: m.mlock2(e.anon, P, 0), onfault(EPERM), nonroot=0),
    Case("munlock-unmapped", lambda m, e: m.munlock(e.free, P), ENOMEM),
    Case("munlock-hole", lambda m, e: m.munlock(e.hole, 3 * P), ENOMEM),
    Case("munlock-hole-after-a-locked-vma", lambda m, e: (m.mlock(e.hole, P), m.munlock(e.hole, 3 * P)), ENOMEM,
         linux=lambda m, e: (m.mlock(e.hole, P), m.munlock(e.hole, P))),
    Case("munlock-split-at-max", lambda m, e: m.munlock(e.locked + P, P), ENOMEM, max_map_count=MAX),
    # ---- mlockall
    Case("mlockall-0", lambda m, e: m.mlockall(0), EINVAL),
    Case("mlockall-unknown-bit", lambda m, e: m.mlockall(MCL_CURRENT | 0x8), EINVAL),
    Case("mlockall-onfault-alone", lambda m, e: m.mlockall(MCL_ONFAULT), EINVAL),
    Case("mlockall-current-over-rlimit", lambda m, e: m.mlockall(MCL_CURRENT), ENOMEM, nonroot=6 * P),
    Case("mlockall-no-privilege", lambda m, e: m.mlockall(MCL_FUTURE), EPERM, nonroot=0),
    # ---- remap_file_pages
    Case("remap-prot-not-0", lambda m, e: m.remap_file_pages(e.shared, P, PROT_READ, 1, 0), EINVAL),
    Case("remap-size-0", lambda m, e: m.remap_file_pages(e.shared, 0, 0, 1, 0), EINVAL),
    Case("remap-private", lambda m, e: m.remap_file_pages(e.private_file, P, 0, 1, 0), EINVAL),
    Case("remap-anonymous-private", lambda m, e: m.remap_file_pages(e.anon, P, 0, 1, 0), EINVAL),
    Case("remap-unmapped", lambda m, e: m.remap_file_pages(e.free, P, 0, 1, 0), EINVAL),
    Case("remap-past-the-vma", lambda m, e: m.remap_file_pages(e.shared, 16 * P, 0, 1, 0), EINVAL),
    Case("remap-pgoff-wraps", lambda m, e: m.remap_file_pages(e.shared, 2 * P, 0, (1 << 64) - 1, 0), EINVAL),
    # ---- madvise, mincore
    Case("madvise-unaligned", lambda m, e: m.madvise(e.anon + 1, P, MADV_DONTNEED), EINVAL),
    Case("madvise-unknown-advice", lambda m, e: m.madvise(e.anon, P, 1000), EINVAL),
    Case("madvise-hole", lambda m, e: m.madvise(e.hole, 3 * P, MADV_DONTNEED), ENOMEM,
         linux=lambda m, e: (m.madvise(e.hole, P, MADV_DONTNEED), m.madvise(e.hole + 2 * P, P, MADV_DONTNEED))),
    Case("madvise-dontneed-stops-at-a-locked-vma",
         lambda m, e: m.madvise(e.locked - 4 * P, 8 * P, MADV_DONTNEED), EINVAL,
         linux=lambda m, e: m.madvise(e.locked - 4 * P, 4 * P, MADV_DONTNEED)),
    Case("madvise-populate-stops-at-a-hole",
         lambda m, e: (m.madvise(e.hole, P, MADV_DONTNEED), m.madvise(e.hole, 3 * P, MADV_POPULATE_WRITE)),
         lambda k: ENOMEM if k.populate_skips_inaccessible else EINVAL,
         linux=lambda m, e: (m.madvise(e.hole, P, MADV_DONTNEED),
                             m.kernel.populate_skips_inaccessible and m.madvise(e.hole, P, MADV_POPULATE_WRITE))),
    Case("madvise-unmapped", lambda m, e: m.madvise(e.free, P, MADV_DONTNEED), ENOMEM),
    Case("madvise-dontneed-locked", lambda m, e: m.madvise(e.locked, P, MADV_DONTNEED), EINVAL),
    Case("madvise-populate-write-readonly", lambda m, e: m.madvise(e.shared_ro, P, MADV_POPULATE_WRITE),
         EINVAL),
    Case("mincore-unaligned", lambda m, e: m.mincore(e.anon + 1, P), EINVAL),
    Case("mincore-unmapped", lambda m, e: m.mincore(e.free, P), ENOMEM),
]


def make(kernel: str, case: Case) -> tuple[MM, Env]:
    kw: dict = {}
    if case.nonroot is not None:
        kw.update(cap_ipc_lock=False, rlimit_memlock=case.nonroot)
    if case.max_map_count is not None:
        kw.update(max_map_count=case.max_map_count)
    mm = MM(kernel, ZERO_COSTS, **kw)
    env = setup(mm)
    if case.max_map_count is not None:
        fill_map_count(mm)
    return mm, env


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_and_changes_nothing(kernel: str, case: Case) -> None:
    mm, env = make(kernel, case)
    want = case.errno(mm.kernel) if callable(case.errno) else case.errno
    before = mm.snapshot()
    with pytest.raises(OSError) as e:
        case.call(mm, env)
    assert e.value.errno == want, f"{case.id}: {errno.errorcode.get(e.value.errno)} != {errno.errorcode[want]}"
    assert mm.check_invariants() == []
    if case.linux is not None:
        twin, tenv = make(kernel, case)
        case.linux(twin, tenv)
        assert state(mm) == state(twin), f"{case.id}: not the state Linux leaves"
        if state(twin) != state(make(kernel, case)[0]):  # Linux did change something here
            assert mm.snapshot() != before
        return
    if case.id == "mmap-future-locked-over-rlimit":  # the mlockall(MCL_FUTURE) before it did change def_flags
        before["def_flags"] = mm.def_flags
    assert mm.snapshot() == before


def state(mm: MM) -> tuple:
    """What a process can observe, without the model's ids: vmas, pte states, accounting, guards."""
    vmas = [(v.start - mm.vmas.mmap_base, v.end - v.start, v.flags, v.pgoff if v.file is not None else 0)
            for v in mm.vmas]
    ptes = [(k, bytes(t.state)) for k, t in sorted(mm.pt.pmds.items())]
    return vmas, ptes, mm.locked_vm, mm.total_vm, list(mm.guards)


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("what", ["below-start", "into-a-mapping"])
def test_brk_refusals_return_the_old_break(kernel: str, what: str) -> None:
    """brk never fails with an errno: a break below the start, or one that would run into a
    mapping, returns the old break and changes nothing."""
    mm = MM(kernel, ZERO_COSTS)
    setup(mm)
    old = mm.brk(0)
    if what == "below-start":
        ask = mm.start_brk - P
    else:
        mm.mmap(old + 8 * P, P, PROT_READ, ANON | MAP_FIXED)
        ask = old + 16 * P
    before = mm.snapshot()
    assert mm.brk(ask) == old
    assert mm.snapshot() == before


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_stack_growth_stays_when_the_access_fails(kernel: str) -> None:
    """The one signal that leaves a change behind, as on Linux: the fault path grows a
    VM_GROWSDOWN vma down to the address before it checks the access, so a write below a
    read-only stack grows it and then gets SIGSEGV."""
    mm = MM(kernel, ZERO_COSTS)
    a = mm.mmap(0, 4 * P, PROT_READ, ANON | MAP_GROWSDOWN)
    with pytest.raises(SIGSEGV):
        mm.touch(a - P, write=True)
    assert mm.vmas.vma_lookup(a - P) is not None and mm.check_invariants() == []


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("what", ["unmapped", "prot-none", "write-readonly", "beyond-eof"])
def test_bad_access_signals_and_changes_nothing(kernel: str, what: str) -> None:
    """A bad user access raises SIGSEGV (no vma, or no permission) or SIGBUS (a whole page beyond
    EOF) and changes nothing."""
    mm = MM(kernel, ZERO_COSTS)
    env = setup(mm)
    short = File("short", P)
    b = mm.mmap(0, 2 * P, PROT_READ, MAP_SHARED, short)
    addr, write, sig = {
        "unmapped": (env.free, False, SIGSEGV),
        "prot-none": (env.none, False, SIGSEGV),
        "write-readonly": (env.shared_ro, True, SIGSEGV),
        "beyond-eof": (b + P, False, SIGBUS),
    }[what]
    before = mm.snapshot()
    with pytest.raises(sig):
        mm.touch(addr, write=write)
    assert mm.snapshot() == before
