"""LTP's syscall tests (testcases/kernel/syscalls/<call>/<test>.c), single-process cases, translated.

Each case says what its source checks; where the source reads memory contents (which the model
does not keep) the case checks what the model has instead: the layout, the residency, the
signal an access raises. Sizes are scaled down to a few pages.
"""

from __future__ import annotations

import errno as E

from conformance_env import P, Env, case
from mmlab.flags import (MADV_DONTNEED, MADV_WILLNEED,
                         MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE,
                         MAP_SHARED, MAP_SHARED_VALIDATE, MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT,
                         MLOCK_ONFAULT, MREMAP_FIXED, MREMAP_MAYMOVE, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE)

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
# numbers of include/uapi/asm-generic/mman-common.h that mmlab.flags does not export by name
MAP_SYNC = 0x80000
MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_FREE = 0, 1, 2, 8
MADV_REMOVE, MADV_DONTFORK, MADV_DOFORK, MADV_MERGEABLE, MADV_UNMERGEABLE = 9, 10, 11, 12, 13
MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_DONTDUMP, MADV_DODUMP = 14, 15, 16, 17
MADV_WIPEONFORK, MADV_KEEPONFORK, MADV_COLD, MADV_PAGEOUT = 18, 19, 20, 21
TASK_SIZE = 1 << 47

LTP = "ltp testcases/kernel/syscalls/"


# ============================================================================ mmap
@case("ltp mmap01", LTP + "mmap/mmap01.c")
def mmap01(env: Env) -> None:
    """A file whose size is not a multiple of the page size: the rest of the last page is
    accessible (read and write) through a shared mapping."""
    f = env.file(2 * P + P // 2)
    a = env.mm.mmap(env.at(0), 3 * P, RW, MAP_SHARED | MAP_FIXED, f, 0)
    env.mm.touch(a + 2 * P + P // 2 + 100, write=True)
    env.mm.touch(a + 3 * P - 1)


@case("ltp mmap02", LTP + "mmap/mmap02.c")
def mmap02(env: Env) -> None:
    """PROT_READ, MAP_SHARED of a file opened read-only succeeds and is readable."""
    f = env.file(2 * P, "r")
    a = env.mm.mmap(env.at(0), 2 * P, PROT_READ, MAP_SHARED | MAP_FIXED, f, 0)
    assert env.vma(a) == (a, a + 2 * P, "r--s")  # VM_MAYSHARE, though not VM_SHARED
    env.mm.touch(a)
    env.mm.touch(a + P + 7)
    assert env.resident(a, 2) == [1, 1]


@case("ltp mmap03", LTP + "mmap/mmap03.c")
def mmap03(env: Env) -> None:
    """PROT_EXEC mapping of a file opened for reading succeeds, the vma is executable."""
    f = env.file(P, "r")
    a = env.mm.mmap(env.at(0), P, PROT_EXEC, MAP_PRIVATE | MAP_FIXED, f, 0)
    assert env.vma(a) == (a, a + P, "--xp")


for _i, (_prot, _flags, _perms) in enumerate([
        (PROT_NONE, MAP_PRIVATE, "---p"), (PROT_NONE, MAP_SHARED, "---s"),
        (PROT_READ, MAP_PRIVATE, "r--p"), (PROT_READ, MAP_SHARED, "r--s"),
        (PROT_WRITE, MAP_PRIVATE, "-w-p"), (PROT_WRITE, MAP_SHARED, "-w-s"),
        (RW, MAP_PRIVATE, "rw-p"), (RW, MAP_SHARED, "rw-s"),
        (PROT_READ | PROT_EXEC, MAP_PRIVATE, "r-xp"), (PROT_READ | PROT_EXEC, MAP_SHARED, "r-xs")]):
    def _mmap04(env: Env, prot: int = _prot, flags: int = _flags, perms: str = _perms) -> None:
        """/proc/self/maps shows the protection and sharing an anonymous mmap asked for."""
        a = env.mm.mmap(env.at(1), 2 * P, prot, flags | MAP_ANONYMOUS | MAP_FIXED)
        assert env.vma(a) == (a, a + 2 * P, perms), env.vma(a)
    case(f"ltp mmap04 {_perms}", LTP + "mmap/mmap04.c")(_mmap04)


@case("ltp mmap05", LTP + "mmap/mmap05.c")
def mmap05(env: Env) -> None:
    """PROT_NONE mapping of a read-write file succeeds; any access raises SIGSEGV."""
    f = env.file(P)
    a = env.mm.mmap(env.at(0), P, PROT_NONE, MAP_SHARED | MAP_FIXED, f, 0)
    env.segv(a)
    env.segv(a, write=True)


@case("ltp mmap06 EACCES", LTP + "mmap/mmap06.c")
def mmap06_eacces(env: Env) -> None:
    """A file mapping of a descriptor not open for reading: EACCES."""
    f = env.file(P, "w")
    env.raises(E.EACCES, env.mm.mmap, env.at(0), P, PROT_READ, MAP_PRIVATE | MAP_FIXED, f, 0)
    assert env.vma(env.at(0)) is None


@case("ltp mmap06 EINVAL length 0", LTP + "mmap/mmap06.c")
def mmap06_len0(env: Env) -> None:
    f = env.file(P)
    env.raises(E.EINVAL, env.mm.mmap, 0, 0, PROT_READ, MAP_PRIVATE, f, 0)


@case("ltp mmap06 EINVAL no map type", LTP + "mmap/mmap06.c")
def mmap06_type(env: Env) -> None:
    """flags with none of MAP_PRIVATE, MAP_SHARED, MAP_SHARED_VALIDATE: EINVAL."""
    f = env.file(P)
    env.raises(E.EINVAL, env.mm.mmap, env.at(0), P, PROT_READ, MAP_FIXED, f, 0)


@case("ltp mmap08", LTP + "mmap/mmap08.c")
def mmap08(env: Env) -> None:
    """A file mapping with a descriptor that is not open: EBADF."""
    env.raises(E.EBADF, env.mm.mmap, env.at(0), P, PROT_READ, MAP_SHARED | MAP_FIXED, env.bad_fd(), 0)


@case("ltp mmap09 shrink", LTP + "mmap/mmap09.c")
def mmap09_shrink(env: Env) -> None:
    """ftruncate() shrinking a mapped file: the pages past the new end raise SIGBUS."""
    f = env.file(4 * P)
    a = env.mm.mmap(env.at(0), 4 * P, RW, MAP_SHARED | MAP_FIXED, f, 0)
    env.truncate(f, 2 * P)
    env.mm.touch(a + P, write=True)
    env.sigbus(a + 2 * P)
    env.sigbus(a + 3 * P, write=True)


@case("ltp mmap09 grow", LTP + "mmap/mmap09.c")
def mmap09_grow(env: Env) -> None:
    """ftruncate() growing a mapped file: the mapping reaches the new pages."""
    f = env.file(2 * P)
    a = env.mm.mmap(env.at(0), 4 * P, RW, MAP_SHARED | MAP_FIXED, f, 0)
    env.sigbus(a + 3 * P)
    env.truncate(f, 4 * P)
    env.mm.touch(a + 3 * P, write=True)


@case("ltp mmap09 zero", LTP + "mmap/mmap09.c")
def mmap09_zero(env: Env) -> None:
    """ftruncate() to zero: every page of the mapping raises SIGBUS."""
    f = env.file(2 * P)
    a = env.mm.mmap(env.at(0), 2 * P, RW, MAP_SHARED | MAP_FIXED, f, 0)
    env.truncate(f, 0)
    env.sigbus(a)


@case("ltp mmap12", LTP + "mmap/mmap12.c")
def mmap12(env: Env) -> None:
    """MAP_POPULATE of a file: every page is present at once."""
    f = env.file(8 * P)
    a = env.mm.mmap(env.at(0), 8 * P, PROT_READ, MAP_PRIVATE | MAP_POPULATE | MAP_FIXED, f, 0)
    assert env.resident(a, 8) == [1] * 8


@case("ltp mmap13", LTP + "mmap/mmap13.c")
def mmap13(env: Env) -> None:
    """A mapping longer than its file succeeds; an access past the file's last page: SIGBUS."""
    f = env.file(P + 100)
    a = env.mm.mmap(env.at(0), 4 * P, PROT_READ, MAP_SHARED | MAP_FIXED, f, 0)
    env.mm.touch(a + P + 200)
    env.sigbus(a + 2 * P)
    env.sigbus(a + 3 * P + 5)


@case("ltp mmap14", LTP + "mmap/mmap14.c")
def mmap14(env: Env) -> None:
    """MAP_LOCKED: VmLck grows by the size of the mapping and the pages are present."""
    before = env.vm_lck_kb()
    a = env.mm.mmap(env.at(0), 6 * P, RW, ANON | MAP_LOCKED | MAP_FIXED)
    assert env.vm_lck_kb() - before == 6 * P // 1024
    assert env.resident(a, 6) == [1] * 6
    assert "lo" in env.vmflags(a)


@case("ltp mmap15", LTP + "mmap/mmap15.c")
def mmap15(env: Env) -> None:
    """A fixed mapping beyond the user address space: ENOMEM."""
    f = env.file(P)
    env.raises(E.ENOMEM, env.mm.mmap, TASK_SIZE, P, PROT_READ, MAP_SHARED | MAP_FIXED, f, 0)


@case("ltp mmap17", LTP + "mmap/mmap17.c")
def mmap17(env: Env) -> None:
    """MAP_FIXED_NOREPLACE at an existing mapping: EEXIST, and the mapping is untouched."""
    f = env.file(2 * P)
    a = env.mm.mmap(env.at(2), 2 * P, RW, MAP_SHARED | MAP_FIXED, f, 0)
    env.raises(E.EEXIST, env.mm.mmap, a, 2 * P, RW, ANON | MAP_FIXED_NOREPLACE)
    assert env.vma(a) == (a, a + 2 * P, "rw-s")


@case("ltp mmap20 EOPNOTSUPP", LTP + "mmap/mmap20.c")
def mmap20(env: Env) -> None:
    """MAP_SHARED_VALIDATE with a flag the file does not support (MAP_SYNC off DAX): EOPNOTSUPP;
    without it the mapping succeeds."""
    f = env.file(P)
    env.raises(E.EOPNOTSUPP, env.mm.mmap, env.at(0), P, PROT_READ, MAP_SHARED_VALIDATE | MAP_SYNC | MAP_FIXED, f, 0)
    a = env.mm.mmap(env.at(0), P, PROT_READ, MAP_SHARED_VALIDATE | MAP_FIXED, f, 0)
    assert env.vma(a) == (a, a + P, "r--s")


@case("ltp mmap21", LTP + "mmap/mmap21.c")
def mmap21(env: Env) -> None:
    """Write every page of a shared file mapping: every page is in the page cache."""
    f = env.file(8 * P)
    a = env.mm.mmap(env.at(0), 8 * P, RW, MAP_SHARED | MAP_FIXED, f, 0)
    for i in range(8):
        env.mm.touch(a + i * P, write=True)
    assert env.resident(a, 8) == [1] * 8


# ============================================================================ munmap
@case("ltp munmap01 file", LTP + "munmap/munmap01.c")
def munmap01_file(env: Env) -> None:
    """munmap of a file mapping: the range is gone and an access raises SIGSEGV."""
    f = env.file(4 * P)
    a = env.mm.mmap(env.at(0), 4 * P, RW, MAP_SHARED | MAP_FIXED, f, 0)
    env.mm.munmap(a, 4 * P)
    env.segv(a)
    env.segv(a + 3 * P, write=True)


@case("ltp munmap01 partial shared anon", LTP + "munmap/munmap01.c")
def munmap01_partial(env: Env) -> None:
    """munmap of part of a shared anonymous mapping: that part faults, the rest works."""
    a = env.mm.mmap(env.at(0), 4 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    env.mm.munmap(a + P, 2 * P)
    env.segv(a + P)
    env.segv(a + 2 * P)
    env.mm.touch(a, write=True)
    env.mm.touch(a + 3 * P, write=True)


@case("ltp munmap03 EINVAL outside", LTP + "munmap/munmap03.c")
def munmap03_outside(env: Env) -> None:
    """A range outside the user address space: EINVAL."""
    env.raises(E.EINVAL, env.mm.munmap, TASK_SIZE, P)


@case("ltp munmap03 EINVAL length 0", LTP + "munmap/munmap03.c")
def munmap03_len0(env: Env) -> None:
    env.mm.mmap(env.at(0), P, RW, ANON | MAP_FIXED)
    env.raises(E.EINVAL, env.mm.munmap, env.at(0), 0)


@case("ltp munmap03 EINVAL unaligned", LTP + "munmap/munmap03.c")
def munmap03_unaligned(env: Env) -> None:
    env.mm.mmap(env.at(0), 2 * P, RW, ANON | MAP_FIXED)
    env.raises(E.EINVAL, env.mm.munmap, env.at(0) + 1, P)
    assert env.vma(env.at(0)) == (env.at(0), env.at(2), "rw-p")


# ============================================================================ mprotect
@case("ltp mprotect01 ENOMEM", LTP + "mprotect/mprotect01.c")
def mprotect01_enomem(env: Env) -> None:
    env.raises(E.ENOMEM, env.mm.mprotect, env.at(3), P, PROT_READ)


@case("ltp mprotect01 EINVAL", LTP + "mprotect/mprotect01.c")
def mprotect01_einval(env: Env) -> None:
    env.mm.mmap(env.at(0), 2 * P, RW, ANON | MAP_FIXED)
    env.raises(E.EINVAL, env.mm.mprotect, env.at(0) + 1024, P, PROT_READ)


@case("ltp mprotect01 EACCES", LTP + "mprotect/mprotect01.c")
def mprotect01_eacces(env: Env) -> None:
    """PROT_WRITE on a shared mapping of a file opened read-only: EACCES."""
    f = env.file(P, "r")
    a = env.mm.mmap(env.at(0), P, PROT_READ, MAP_SHARED | MAP_FIXED, f, 0)
    env.raises(E.EACCES, env.mm.mprotect, a, P, PROT_WRITE)
    env.segv(a, write=True)
    assert env.vma(a) == (a, a + P, "r--s")


@case("ltp mprotect02", LTP + "mprotect/mprotect02.c")
def mprotect02(env: Env) -> None:
    """A read-only shared file mapping faults on a write; after mprotect(PROT_WRITE) it does not."""
    f = env.file(P)
    a = env.mm.mmap(env.at(0), P, PROT_READ, MAP_SHARED | MAP_FIXED, f, 0)
    env.segv(a, write=True)
    env.mm.mprotect(a, P, PROT_WRITE)
    env.mm.touch(a, write=True)


@case("ltp mprotect03", LTP + "mprotect/mprotect03.c")
def mprotect03(env: Env) -> None:
    """A read-write shared file mapping made PROT_READ: a write raises SIGSEGV."""
    f = env.file(P)
    a = env.mm.mmap(env.at(0), P, RW, MAP_SHARED | MAP_FIXED, f, 0)
    env.mm.touch(a, write=True)
    env.mm.mprotect(a, P, PROT_READ)
    env.segv(a, write=True)
    env.mm.touch(a)


@case("ltp mprotect04 PROT_NONE", LTP + "mprotect/mprotect04.c")
def mprotect04_none(env: Env) -> None:
    a = env.mm.mmap(env.at(0), P, RW, ANON | MAP_FIXED)
    env.mm.mprotect(a, P, PROT_NONE)
    env.segv(a)
    assert env.vma(a)[2] == "---p"


@case("ltp mprotect04 PROT_EXEC", LTP + "mprotect/mprotect04.c")
def mprotect04_exec(env: Env) -> None:
    a = env.mm.mmap(env.at(0), P, RW, ANON | MAP_FIXED)
    env.mm.mprotect(a, P, PROT_READ | PROT_EXEC)
    assert env.vma(a)[2] == "r-xp"


@case("ltp mprotect05", LTP + "mprotect/mprotect05.c")
def mprotect05(env: Env) -> None:
    """mprotect of the middle splits one vma in three; mprotect back merges them again."""
    a = env.mm.mmap(env.at(0), 6 * P, RW, ANON | MAP_FIXED)
    env.mm.mprotect(a + 2 * P, 2 * P, PROT_READ)
    assert env.vmas(a, a + 6 * P) == [(a, a + 2 * P, "rw-p"), (a + 2 * P, a + 4 * P, "r--p"),
                                       (a + 4 * P, a + 6 * P, "rw-p")]
    env.mm.mprotect(a + 2 * P, 2 * P, RW)
    assert env.vmas(a, a + 6 * P) == [(a, a + 6 * P, "rw-p")]


# ============================================================================ mlock
for _name, _off, _len in [("1 byte", 0, 1), ("one page", 0, P), ("two pages", 0, 2 * P),
                          ("page and a byte", 0, P + 1), ("unaligned start", 100, P)]:
    def _mlock01(env: Env, off: int = _off, length: int = _len) -> None:
        """mlock of various addresses and lengths succeeds; whole pages are locked."""
        a = env.mm.mmap(env.at(0), 4 * P, RW, ANON | MAP_FIXED)
        before = env.vm_lck_kb()
        env.mm.mlock(a + off, length)
        pages = (off + length + P - 1) // P
        assert env.vm_lck_kb() - before == pages * 4
        assert env.resident(a, 4) == [1] * pages + [0] * (4 - pages)
    case(f"ltp mlock01 {_name}", LTP + "mlock/mlock01.c")(_mlock01)


@case("ltp mlock02 ENOMEM unmapped", LTP + "mlock/mlock02.c")
def mlock02_unmapped(env: Env) -> None:
    env.raises(E.ENOMEM, env.mm.mlock, env.at(4), P)


@case("ltp mlock02 ENOMEM rlimit", LTP + "mlock/mlock02.c")
def mlock02_rlimit(env: Env) -> None:
    """Without CAP_IPC_LOCK, locking more than RLIMIT_MEMLOCK allows: ENOMEM."""
    a = env.mm.mmap(env.at(0), 4 * P, RW, ANON | MAP_FIXED)
    env.drop_cap_ipc_lock()
    env.set_memlock(P)
    env.raises(E.ENOMEM, env.mm.mlock, a, 2 * P)
    assert "lo" not in env.vmflags(a)


@case("ltp mlock02 EPERM", LTP + "mlock/mlock02.c")
def mlock02_eperm(env: Env) -> None:
    """Without CAP_IPC_LOCK and with RLIMIT_MEMLOCK 0: EPERM."""
    a = env.mm.mmap(env.at(0), P, RW, ANON | MAP_FIXED)
    env.drop_cap_ipc_lock()
    env.set_memlock(0)
    env.raises(E.EPERM, env.mm.mlock, a, P)


@case("ltp mlock04", LTP + "mlock/mlock04.c")
def mlock04(env: Env) -> None:
    """mlock of a file mapped PROT_WRITE without PROT_READ succeeds (any protection but
    PROT_NONE may be locked) and populates it."""
    f = env.file(4 * P)
    a = env.mm.mmap(env.at(0), 4 * P, PROT_WRITE, MAP_PRIVATE | MAP_FIXED, f, 0)
    env.mm.mlock(a, 4 * P)
    assert env.resident(a, 4) == [1] * 4


@case("ltp mlock05", LTP + "mlock/mlock05.c")
def mlock05(env: Env) -> None:
    """After mlock, smaps Locked of the mapping is its whole size."""
    a = env.mm.mmap(env.at(0), 8 * P, RW, ANON | MAP_FIXED)
    env.mm.mlock(a, 8 * P)
    assert env.locked_kb(a) == 8 * 4


# ============================================================================ mlock2
_M201 = [  # (pages faulted in first, pages to lock, bytes more (+) or fewer (-), VmLck pages, present, flag)
    ("lock one page", 0, 1, 0, 1, 1, 0),
    ("lock all pages", 0, 8, 0, 8, 8, 0),
    ("a little more than 2 pages", 0, 2, 1, 3, 3, 0),
    ("a little less than 2 pages", 0, 2, -1, 2, 2, 0),
    ("onfault one page", 0, 1, 0, 1, 0, MLOCK_ONFAULT),
    ("onfault after half faulted", 4, 8, 0, 8, 4, MLOCK_ONFAULT),
    ("onfault half, one faulted, a byte more", 1, 4, 1, 5, 1, MLOCK_ONFAULT),
    ("onfault half faulted, a byte less", 4, 4, -1, 4, 4, MLOCK_ONFAULT),
]
for _t in _M201:
    def _mlock201(env: Env, t: tuple = _t) -> None:
        """mlock2 on an 8-page shared anonymous mapping: VmLck grows by the pages of the range,
        and the present pages are the faulted ones (MLOCK_ONFAULT) or all of the range."""
        _, faulted, lock, more, vmlck, present, flag = t
        a = env.mm.mmap(env.at(0), 8 * P, PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
        for i in range(faulted):
            env.mm.touch(a + i * P, write=True)
        before = env.vm_lck_kb()
        if not env.kernel.mlock_onfault:  # mlock2() itself came with MLOCK_ONFAULT (4.4)
            env.raises(E.ENOSYS, env.mm.mlock2, a, lock * P + more, flag)
            return
        env.mm.mlock2(a, lock * P + more, flag)
        assert env.vm_lck_kb() - before == vmlck * 4
        assert sum(env.resident(a, 8)) == present
    case(f"ltp mlock201 {_t[0]}", LTP + "mlock2/mlock201.c", profiles=("v6.18", "v3.9"))(_mlock201)


@case("ltp mlock202 EINVAL flags", LTP + "mlock2/mlock202.c")
def mlock202_flags(env: Env) -> None:
    a = env.mm.mmap(env.at(0), P, PROT_WRITE, ANON | MAP_FIXED)
    env.raises(E.EINVAL, env.mm.mlock2, a, P, 0xFFFFFFFF)


@case("ltp mlock202 ENOMEM rlimit", LTP + "mlock2/mlock202.c")
def mlock202_rlimit(env: Env) -> None:
    a = env.mm.mmap(env.at(0), P, PROT_WRITE, ANON | MAP_FIXED)
    env.drop_cap_ipc_lock()
    env.set_memlock(P - 1)
    env.raises(E.ENOMEM, env.mm.mlock2, a, P, 0)


@case("ltp mlock202 EPERM", LTP + "mlock2/mlock202.c")
def mlock202_eperm(env: Env) -> None:
    a = env.mm.mmap(env.at(0), P, PROT_WRITE, ANON | MAP_FIXED)
    env.drop_cap_ipc_lock()
    env.set_memlock(0)
    env.raises(E.EPERM, env.mm.mlock2, a, P, 0)


@case("ltp mlock202 ENOMEM unmapped", LTP + "mlock2/mlock202.c")
def mlock202_unmapped(env: Env) -> None:
    env.mm.mmap(env.at(0), 8 * P, PROT_READ, ANON | MAP_FIXED)
    env.mm.munmap(env.at(0), 8 * P)
    env.raises(E.ENOMEM, env.mm.mlock2, env.at(4), P, 0)


@case("ltp mlock203", LTP + "mlock2/mlock203.c")
def mlock203(env: Env) -> None:
    """mlock2(MLOCK_ONFAULT) then mlock2(0) of the same page: VmLck counts it once."""
    a = env.mm.mmap(env.at(0), P, PROT_WRITE, ANON | MAP_FIXED)
    before = env.vm_lck_kb()
    env.mm.mlock2(a, P, MLOCK_ONFAULT)
    assert env.vm_lck_kb() - before == 4
    env.mm.mlock2(a, P, 0)
    assert env.vm_lck_kb() - before == 4
    env.mm.munlock(a, P)
    assert env.vm_lck_kb() == before


# ============================================================================ mlockall / munlockall
for _fl, _nm in [(MCL_CURRENT, "MCL_CURRENT"), (MCL_FUTURE, "MCL_FUTURE"), (MCL_CURRENT | MCL_FUTURE, "MCL_CURRENT|MCL_FUTURE")]:
    def _mlockall01(env: Env, flags: int = _fl) -> None:
        """mlockall succeeds; MCL_CURRENT locks what is mapped, MCL_FUTURE what is mapped next."""
        a = env.mm.mmap(env.at(0), 2 * P, RW, ANON | MAP_FIXED)
        env.mm.mlockall(flags)
        assert ("lo" in env.vmflags(a)) == bool(flags & MCL_CURRENT)
        b = env.mm.mmap(env.at(4), 2 * P, RW, ANON | MAP_FIXED)
        assert ("lo" in env.vmflags(b)) == bool(flags & MCL_FUTURE)
        assert env.resident(b, 2) == ([1, 1] if flags & MCL_FUTURE else [0, 0])
        env.mm.munlockall()
    case(f"ltp mlockall01 {_nm}", LTP + "mlockall/mlockall01.c")(_mlockall01)


@case("ltp mlockall02 ENOMEM", LTP + "mlockall/mlockall02.c")
def mlockall02_enomem(env: Env) -> None:
    """Without CAP_IPC_LOCK, MCL_CURRENT on a process bigger than RLIMIT_MEMLOCK: ENOMEM."""
    env.mm.mmap(env.at(0), 8 * P, RW, ANON | MAP_FIXED)
    env.drop_cap_ipc_lock()
    env.set_memlock(P)
    env.raises(E.ENOMEM, env.mm.mlockall, MCL_CURRENT)


@case("ltp mlockall02 EPERM", LTP + "mlockall/mlockall02.c")
def mlockall02_eperm(env: Env) -> None:
    env.drop_cap_ipc_lock()
    env.set_memlock(0)
    env.raises(E.EPERM, env.mm.mlockall, MCL_CURRENT)


@case("ltp mlockall02 EINVAL", LTP + "mlockall/mlockall02.c")
def mlockall02_einval(env: Env) -> None:
    env.raises(E.EINVAL, env.mm.mlockall, 0)


@case("ltp mlockall03 EINVAL unknown flags", LTP + "mlockall/mlockall03.c")
def mlockall03_einval(env: Env) -> None:
    """Flags outside MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT: EINVAL; MCL_ONFAULT alone: EINVAL."""
    env.raises(E.EINVAL, env.mm.mlockall, 8)
    env.raises(E.EINVAL, env.mm.mlockall, MCL_ONFAULT)


@case("ltp munlock01", LTP + "munlock/munlock01.c")
def munlock01(env: Env) -> None:
    """munlock of various lengths after mlock succeeds; VmLck returns to where it was."""
    a = env.mm.mmap(env.at(0), 4 * P, RW, ANON | MAP_FIXED)
    before = env.vm_lck_kb()
    for length in (1, P, 2 * P + 1):
        env.mm.mlock(a, length)
        env.mm.munlock(a, length)
        assert env.vm_lck_kb() == before
        assert "lo" not in env.vmflags(a)


@case("ltp munlock02", LTP + "munlock/munlock02.c")
def munlock02(env: Env) -> None:
    env.raises(E.ENOMEM, env.mm.munlock, env.at(2), P)


@case("ltp munlockall01", LTP + "munlockall/munlockall01.c")
def munlockall01(env: Env) -> None:
    """munlockall unlocks what mlockall locked."""
    a = env.mm.mmap(env.at(0), 4 * P, RW, ANON | MAP_FIXED)
    env.mm.mlockall(MCL_CURRENT)
    assert "lo" in env.vmflags(a) and env.locked_kb(a) == 16
    env.mm.munlockall()
    assert "lo" not in env.vmflags(a) and env.locked_kb(a) == 0


# ============================================================================ mremap
@case("ltp mremap01", LTP + "mremap/mremap01.c")
def mremap01(env: Env) -> None:
    """A shared file mapping expanded with MREMAP_MAYMOVE over the stretched file: the whole new
    size is mapped and writable."""
    f = env.file(4 * P)
    a = env.mm.mmap(env.at(0), 4 * P, PROT_WRITE, MAP_SHARED | MAP_FIXED, f, 0)
    env.mm.mmap(env.at(4), P, PROT_READ, ANON | MAP_FIXED)  # no room to grow in place
    env.truncate(f, 8 * P)
    b = env.mm.mremap(a, 4 * P, 8 * P, MREMAP_MAYMOVE)
    env.own(b, b + 8 * P)
    assert env.vma(b)[:2] == (b, b + 8 * P)
    env.mm.touch(b + 7 * P, write=True)
    assert env.pgoff(b + 7 * P) == 7
    assert env.vma(a) is None


@case("ltp mremap02", LTP + "mremap/mremap02.c")
def mremap02(env: Env) -> None:
    """An old address that is not page aligned: EINVAL."""
    a = env.mm.mmap(env.at(0), 2 * P, RW, ANON | MAP_FIXED)
    env.raises(E.EINVAL, env.mm.mremap, a + P - 1, P, 2 * P, MREMAP_MAYMOVE)


@case("ltp mremap03", LTP + "mremap/mremap03.c")
def mremap03(env: Env) -> None:
    """An old range that is not mapped: EFAULT."""
    env.raises(E.EFAULT, env.mm.mremap, env.at(2), P, 2 * P, MREMAP_MAYMOVE)


@case("ltp mremap04", LTP + "mremap/mremap04.c")
def mremap04(env: Env) -> None:
    """Growing a shared mapping in place, without MREMAP_MAYMOVE, into a mapped neighbour: ENOMEM."""
    a = env.mm.mmap(env.at(0), 2 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    env.mm.mmap(env.at(2), P, PROT_READ, ANON | MAP_FIXED)
    env.raises(E.ENOMEM, env.mm.mremap, a, 2 * P, 4 * P, 0)
    assert env.vma(a) == (a, a + 2 * P, "rw-s")


@case("ltp mremap05 FIXED without MAYMOVE", LTP + "mremap/mremap05.c")
def mremap05_0(env: Env) -> None:
    a = env.mm.mmap(env.at(0), P, RW, ANON | MAP_FIXED)
    env.raises(E.EINVAL, env.mm.mremap, a, P, P, MREMAP_FIXED, env.at(4))


@case("ltp mremap05 unaligned new address", LTP + "mremap/mremap05.c")
def mremap05_1(env: Env) -> None:
    a = env.mm.mmap(env.at(0), P, RW, ANON | MAP_FIXED)
    env.raises(E.EINVAL, env.mm.mremap, a, P, P, MREMAP_FIXED | MREMAP_MAYMOVE, env.at(4) + 1)


@case("ltp mremap05 overlapping", LTP + "mremap/mremap05.c")
def mremap05_2(env: Env) -> None:
    a = env.mm.mmap(env.at(0), 2 * P, RW, ANON | MAP_FIXED)
    env.raises(E.EINVAL, env.mm.mremap, a, 2 * P, P, MREMAP_FIXED | MREMAP_MAYMOVE, a + P)


@case("ltp mremap05 to a free range", LTP + "mremap/mremap05.c")
def mremap05_3(env: Env) -> None:
    a = env.mm.mmap(env.at(0), P, RW, ANON | MAP_FIXED)
    env.mm.touch(a, write=True)
    b = env.mm.mremap(a, P, P, MREMAP_FIXED | MREMAP_MAYMOVE, env.at(4))
    assert b == env.at(4) and env.vma(a) is None and env.resident(b, 1) == [1]


@case("ltp mremap05 over a mapping", LTP + "mremap/mremap05.c")
def mremap05_4(env: Env) -> None:
    a = env.mm.mmap(env.at(0), P, RW, ANON | MAP_FIXED)
    env.mm.mmap(env.at(4), 2 * P, PROT_READ, ANON | MAP_FIXED)
    b = env.mm.mremap(a, P, P, MREMAP_FIXED | MREMAP_MAYMOVE, env.at(4))
    assert b == env.at(4)
    assert env.vmas(env.at(0), env.at(8)) == [(env.at(4), env.at(5), "rw-p"), (env.at(5), env.at(6), "r--p")]


# ============================================================================ madvise
_ADV01 = [("MADV_NORMAL", MADV_NORMAL, "file"), ("MADV_RANDOM", MADV_RANDOM, "file"),
          ("MADV_SEQUENTIAL", MADV_SEQUENTIAL, "file"), ("MADV_WILLNEED", MADV_WILLNEED, "file"),
          ("MADV_DONTNEED", MADV_DONTNEED, "file"), ("MADV_REMOVE", MADV_REMOVE, "file"),
          ("MADV_DONTFORK", MADV_DONTFORK, "file"), ("MADV_DOFORK", MADV_DOFORK, "file"),
          ("MADV_MERGEABLE", MADV_MERGEABLE, "file"), ("MADV_UNMERGEABLE", MADV_UNMERGEABLE, "file"),
          ("MADV_HUGEPAGE", MADV_HUGEPAGE, "anon"), ("MADV_NOHUGEPAGE", MADV_NOHUGEPAGE, "anon"),
          ("MADV_DONTDUMP", MADV_DONTDUMP, "file"), ("MADV_DODUMP", MADV_DODUMP, "file"),
          ("MADV_FREE", MADV_FREE, "anon"), ("MADV_WIPEONFORK", MADV_WIPEONFORK, "anon"),
          ("MADV_KEEPONFORK", MADV_KEEPONFORK, "anon"), ("MADV_COLD", MADV_COLD, "anon"),
          ("MADV_PAGEOUT", MADV_PAGEOUT, "anon")]
for _nm, _adv, _what in _ADV01:
    def _madvise01(env: Env, adv: int = _adv, what: str = _what) -> None:
        """Every advice succeeds on the memory LTP gives it: a shared file mapping, or private
        anonymous memory."""
        if what == "file":
            f = env.file(4 * P)
            a = env.mm.mmap(env.at(0), 4 * P, RW, MAP_SHARED | MAP_FIXED, f, 0)
        else:
            a = env.mm.mmap(env.at(0), 4 * P, RW, ANON | MAP_FIXED)
        env.mm.touch(a, write=True)
        if adv in (MADV_COLD, MADV_PAGEOUT) and not env.kernel.madv_cold_pageout:  # 5.4
            env.raises(E.EINVAL, env.mm.madvise, a, 4 * P, adv)
            return
        assert env.mm.madvise(a, 4 * P, adv) == 0
    case(f"ltp madvise01 {_nm}", LTP + "madvise/madvise01.c",
         profiles=("v6.18", "v3.9") if _adv in (MADV_COLD, MADV_PAGEOUT) else ("v6.18",))(_madvise01)


def _madvise02_setup(env: Env) -> dict[str, int]:
    """madvise02's setup: file1 a shared read-only file mapping (mlocked, as the DONTNEED case
    leaves it), file2 the same with its last page unmapped, file3 private, and shared anon."""
    f = env.file(4 * P)
    m = {"file1": env.mm.mmap(env.at(0), 4 * P, PROT_READ, MAP_SHARED | MAP_FIXED, f, 0),
         "file2": env.mm.mmap(env.at(5), 4 * P, PROT_READ, MAP_SHARED | MAP_FIXED, f, 0),
         "file3": env.mm.mmap(env.at(10), 4 * P, PROT_READ, MAP_PRIVATE | MAP_FIXED, f, 0)}
    m["shared_anon"] = env.mm.mmap(env.at(15), P, PROT_READ, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    env.mm.munmap(m["file2"] + 3 * P, P)
    env.mm.mlock(m["file1"], 4 * P)
    return m


for _nm, _adv, _where, _err in [
        ("unaligned", MADV_NORMAL, "nonalign", E.EINVAL), ("unknown advice", 1212, "file1", E.EINVAL),
        ("MADV_REMOVE locked", MADV_REMOVE, "file1", E.EINVAL),
        ("MADV_DONTNEED locked", MADV_DONTNEED, "file1", E.EINVAL),
        ("MADV_NORMAL hole", MADV_NORMAL, "file2", E.ENOMEM), ("MADV_WILLNEED hole", MADV_WILLNEED, "file2", E.ENOMEM),
        ("MADV_FREE file", MADV_FREE, "file1", E.EINVAL), ("MADV_WIPEONFORK file", MADV_WIPEONFORK, "file1", E.EINVAL),
        ("MADV_WIPEONFORK shared anon", MADV_WIPEONFORK, "shared_anon", E.EINVAL),
        ("MADV_WIPEONFORK private file", MADV_WIPEONFORK, "file3", E.EINVAL)]:
    def _madvise02(env: Env, adv: int = _adv, where: str = _where, err: int = _err) -> None:
        """madvise fails with the errno LTP expects, on madvise02's mappings."""
        m = _madvise02_setup(env)
        addr = m["file1"] + 100 if where == "nonalign" else m[where]
        env.raises(err, env.mm.madvise, addr, P if where == "shared_anon" else 4 * P, adv)
    case(f"ltp madvise02 {_nm}", LTP + "madvise/madvise02.c", pages=17)(_madvise02)


@case("ltp madvise03", LTP + "madvise/madvise03.c")
def madvise03(env: Env) -> None:
    """MADV_DONTNEED on private anonymous memory: the pages are gone (zero-fill on demand)."""
    a = env.mm.mmap(env.at(0), 4 * P, RW, ANON | MAP_FIXED)
    for i in range(4):
        env.mm.touch(a + i * P, write=True)
    env.mm.madvise(a, 4 * P, MADV_DONTNEED)
    assert env.resident(a, 4) == [0] * 4
    env.mm.touch(a + P)
    assert env.vma(a) == (a, a + 4 * P, "rw-p")


# ============================================================================ mincore
@case("ltp mincore01 EINVAL", LTP + "mincore/mincore01.c")
def mincore01_einval(env: Env) -> None:
    env.mm.mmap(env.at(0), 2 * P, RW, ANON | MAP_FIXED)
    env.raises(E.EINVAL, env.mm.mincore, env.at(0) + 1, P)


@case("ltp mincore01 ENOMEM length", LTP + "mincore/mincore01.c")
def mincore01_len(env: Env) -> None:
    """A range reaching beyond the address space: ENOMEM."""
    env.mm.mmap(env.at(0), 2 * P, RW, ANON | MAP_FIXED)
    env.raises(E.ENOMEM, env.mm.mincore, TASK_SIZE - P, 2 * P)


@case("ltp mincore01 ENOMEM unmapped", LTP + "mincore/mincore01.c")
def mincore01_unmapped(env: Env) -> None:
    env.mm.mmap(env.at(0), 2 * P, RW, ANON | MAP_FIXED)
    env.raises(E.ENOMEM, env.mm.mincore, env.at(0), 4 * P)


@case("ltp mincore02", LTP + "mincore/mincore02.c")
def mincore02(env: Env) -> None:
    """A file mapping locked with mlock: mincore reports every page resident."""
    f = env.file(6 * P)
    a = env.mm.mmap(env.at(0), 6 * P, PROT_READ, MAP_SHARED | MAP_FIXED, f, 0)
    env.mm.mlock(a, 6 * P)
    assert env.resident(a, 6) == [1] * 6


@case("ltp mincore03 untouched", LTP + "mincore/mincore03.c")
def mincore03_untouched(env: Env) -> None:
    a = env.mm.mmap(env.at(0), 4 * P, RW, ANON | MAP_FIXED)
    assert env.resident(a, 4) == [0] * 4


@case("ltp mincore03 locked", LTP + "mincore/mincore03.c")
def mincore03_locked(env: Env) -> None:
    a = env.mm.mmap(env.at(0), 4 * P, RW, ANON | MAP_FIXED)
    env.mm.mlock(a, 4 * P)
    assert env.resident(a, 4) == [1] * 4


# ============================================================================ brk
@case("ltp brk01", LTP + "brk/brk01.c")
def brk01(env: Env) -> None:
    """brk up, to the same place, and down: each time the new break is what was asked for."""
    cur = env.brk(0)
    assert env.brk(cur) == cur
    for new in (cur + 3 * P, cur + 3 * P, cur + P, cur):
        assert env.brk(new) == new
    assert env.brk(0) == cur


@case("ltp brk02", LTP + "brk/brk02.c")
def brk02(env: Env) -> None:
    """brk up by 2 pages (a new vma), mprotect it, brk back down: the new vma is unmapped."""
    cur = env.brk(0)
    start = (cur + P - 1) & ~(P - 1)
    new = env.brk(start + 2 * P)
    assert new == start + 2 * P
    env.own(start, new)
    env.mm.mprotect(start + P, P, PROT_READ)
    assert env.brk(cur) == cur
    assert env.vma(start + P) is None


# ============================================================================ remap_file_pages
@case("ltp remap_file_pages01", LTP + "remap_file_pages/remap_file_pages01.c")
def remap_file_pages01(env: Env) -> None:
    """Pages of a shared file mapping remapped in reverse order map those file pages."""
    f = env.file(4 * P)
    a = env.mm.mmap(env.at(0), 4 * P, RW, MAP_SHARED | MAP_FIXED, f, 0)
    for i in range(4):
        env.mm.remap_file_pages(a + i * P, P, 0, 3 - i, 0)
    assert [env.pgoff(a + i * P) for i in range(4)] == [3, 2, 1, 0]


@case("ltp remap_file_pages01 memfd", LTP + "remap_file_pages/remap_file_pages01.c")
def remap_file_pages01_shm(env: Env) -> None:
    """The same over a shmem file (LTP's /dev/shm variant)."""
    f = env.memfd(4 * P)
    a = env.mm.mmap(env.at(0), 4 * P, RW, MAP_SHARED | MAP_FIXED, f, 0)
    env.mm.remap_file_pages(a + P, 2 * P, 0, 2, 0)
    assert [env.pgoff(a + i * P) for i in range(4)] == [0, 2, 3, 3]


@case("ltp remap_file_pages02 private", LTP + "remap_file_pages/remap_file_pages02.c")
def remap_file_pages02_private(env: Env) -> None:
    """start is not in a MAP_SHARED mapping: EINVAL."""
    f = env.file(4 * P)
    a = env.mm.mmap(env.at(0), 4 * P, RW, MAP_PRIVATE | MAP_FIXED, f, 0)
    env.raises(E.EINVAL, env.mm.remap_file_pages, a, 2 * P, 0, 2, 0)


@case("ltp remap_file_pages02 bad start", LTP + "remap_file_pages/remap_file_pages02.c")
def remap_file_pages02_start(env: Env) -> None:
    """start is not mapped: EINVAL."""
    env.raises(E.EINVAL, env.mm.remap_file_pages, env.at(4), 2 * P, 0, 2, 0)


@case("ltp remap_file_pages02 bad size", LTP + "remap_file_pages/remap_file_pages02.c")
def remap_file_pages02_size(env: Env) -> None:
    """size 0: EINVAL."""
    f = env.file(4 * P)
    a = env.mm.mmap(env.at(0), 4 * P, RW, MAP_SHARED | MAP_FIXED, f, 0)
    env.raises(E.EINVAL, env.mm.remap_file_pages, a, 0, 0, 2, 0)


@case("ltp remap_file_pages02 bad prot", LTP + "remap_file_pages/remap_file_pages02.c")
def remap_file_pages02_prot(env: Env) -> None:
    """prot other than 0: EINVAL."""
    f = env.file(4 * P)
    a = env.mm.mmap(env.at(0), 4 * P, RW, MAP_SHARED | MAP_FIXED, f, 0)
    env.raises(E.EINVAL, env.mm.remap_file_pages, a, 2 * P, -1, 2, 0)
