"""The kernel's mm selftests (tools/testing/selftests/mm/), single-process cases, translated.

Sizes are scaled down (megabytes to pages) where the case's point is the layout, not the size;
contents checks become residency and layout checks (the model keeps no contents).
"""

from __future__ import annotations

import errno as E
import random

from conformance_env import P, Env, case
from mmlab.flags import (MADV_POPULATE_READ, MADV_POPULATE_WRITE, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE,
                         MAP_NORESERVE, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MCL_CURRENT, MCL_FUTURE,
                         MCL_ONFAULT, MLOCK_ONFAULT, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, PROT_NONE,
                         PROT_READ, PROT_WRITE)

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
ST = "selftests tools/testing/selftests/mm/"
OLD = ("v6.18", "v3.9")  # for calls a v3.x kernel did not have


# ============================================================================ mlock2-tests
def _locked(env: Env, addr: int) -> bool:
    return "lo" in env.vmflags(addr)


def _onfault(env: Env, addr: int) -> bool:
    return "lf" in env.vmflags(addr)


@case("selftests mlock2-tests test_mlock_lock", ST + "mlock2-tests.c")
def mlock2_lock(env: Env) -> None:
    """mlock2(0): the vma is locked and its pages present; munlock undoes the lock."""
    a = env.mm.mmap(env.at(0), 2 * P, RW, ANON | MAP_FIXED)
    env.mm.mlock2(a, 2 * P, 0)
    assert _locked(env, a) and not _onfault(env, a)
    assert env.resident(a, 2) == [1, 1]
    env.mm.munlock(a, 2 * P)
    assert not _locked(env, a)


@case("selftests mlock2-tests test_mlock_onfault", ST + "mlock2-tests.c", profiles=OLD)
def mlock2_onfault(env: Env) -> None:
    """mlock2(MLOCK_ONFAULT): locked on fault, nothing populated; a touch brings a page in."""
    a = env.mm.mmap(env.at(0), 2 * P, RW, ANON | MAP_FIXED)
    if not env.kernel.mlock_onfault:
        env.raises(E.ENOSYS, env.mm.mlock2, a, 2 * P, MLOCK_ONFAULT)
        return
    env.mm.mlock2(a, 2 * P, MLOCK_ONFAULT)
    assert _locked(env, a) and _onfault(env, a)
    assert env.resident(a, 2) == [0, 0]
    env.mm.touch(a, write=True)
    assert env.resident(a, 2) == [1, 0]
    env.mm.munlock(a, 2 * P)
    assert not _locked(env, a) and not _onfault(env, a)


@case("selftests mlock2-tests test_lock_onfault_of_present", ST + "mlock2-tests.c")
def mlock2_onfault_present(env: Env) -> None:
    """A page faulted in before mlock2(MLOCK_ONFAULT) stays present; the other is not populated."""
    a = env.mm.mmap(env.at(0), 2 * P, RW, ANON | MAP_FIXED)
    env.mm.touch(a, write=True)
    env.mm.mlock2(a, 2 * P, MLOCK_ONFAULT)
    assert env.resident(a, 2) == [1, 0]
    assert env.locked_kb(a) == 4


@case("selftests mlock2-tests test_munlockall0", ST + "mlock2-tests.c")
def munlockall0(env: Env) -> None:
    """mlockall(MCL_CURRENT) locks and populates; munlockall unlocks."""
    a = env.mm.mmap(env.at(0), 2 * P, RW, ANON | MAP_FIXED)
    env.mm.mlockall(MCL_CURRENT)
    assert _locked(env, a) and env.resident(a, 2) == [1, 1]
    env.mm.munlockall()
    assert not _locked(env, a)


@case("selftests mlock2-tests test_munlockall1", ST + "mlock2-tests.c", profiles=OLD)
def munlockall1(env: Env) -> None:
    """mlockall(MCL_CURRENT | MCL_ONFAULT) locks on fault; munlockall unlocks."""
    a = env.mm.mmap(env.at(0), 2 * P, RW, ANON | MAP_FIXED)
    if not env.kernel.mlock_onfault:
        env.raises(E.EINVAL, env.mm.mlockall, MCL_CURRENT | MCL_ONFAULT)
        return
    env.mm.mlockall(MCL_CURRENT | MCL_ONFAULT)
    assert _locked(env, a) and _onfault(env, a) and env.resident(a, 2) == [0, 0]
    env.mm.munlockall()
    assert not _locked(env, a) and not _onfault(env, a)


@case("selftests mlock2-tests test_vma_management", ST + "mlock2-tests.c")
def mlock2_vma_management(env: Env) -> None:
    """Locking the middle page of three splits the vma in three; unlocking merges it back."""
    a = env.mm.mmap(env.at(0), 3 * P, RW, ANON | MAP_FIXED)
    env.mm.mlock2(a, 3 * P, MLOCK_ONFAULT)
    assert len(env.vmas(a, a + 3 * P)) == 1
    env.mm.munlock(a + P, P)
    assert [v[:2] for v in env.vmas(a, a + 3 * P)] == [(a, a + P), (a + P, a + 2 * P), (a + 2 * P, a + 3 * P)]
    assert _locked(env, a) and not _locked(env, a + P) and _locked(env, a + 2 * P)
    env.mm.munlock(a, 3 * P)
    assert [v[:2] for v in env.vmas(a, a + 3 * P)] == [(a, a + 3 * P)]


@case("selftests mlock2-tests test_mlockall", ST + "mlock2-tests.c")
def mlock2_mlockall(env: Env) -> None:
    """MCL_FUTURE: a later mapping is locked and populated; with MCL_ONFAULT, locked on fault."""
    env.mm.mlockall(MCL_CURRENT | MCL_FUTURE)
    a = env.mm.mmap(env.at(0), 2 * P, RW, ANON | MAP_FIXED)
    assert _locked(env, a) and env.resident(a, 2) == [1, 1]
    env.mm.munlockall()
    env.mm.munmap(a, 2 * P)
    env.mm.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)
    b = env.mm.mmap(env.at(4), 2 * P, RW, ANON | MAP_FIXED)
    assert _locked(env, b) and _onfault(env, b) and env.resident(b, 2) == [0, 0]
    env.mm.munlockall()
    assert not _locked(env, b)


# ============================================================================ mlock-random-test
@case("selftests mlock-random-test test_mlock_within_limit", ST + "mlock-random-test.c", pages=40)
def mlock_within_limit(env: Env) -> None:
    """Without CAP_IPC_LOCK and RLIMIT_MEMLOCK twice the chunk: random mlock/mlock2(ONFAULT)
    ranges inside the chunk all succeed; VmLck ends no bigger than the chunk and a page."""
    chunk = 32 * P
    a = env.mm.mmap(env.at(0), chunk, RW, ANON | MAP_FIXED)
    env.drop_cap_ipc_lock()
    env.set_memlock(2 * chunk)
    rng = random.Random(20240613)  # the same ranges on both sides
    for _ in range(30):
        length = rng.randrange(chunk)
        start = rng.randrange(chunk - length)
        if rng.random() < 0.5:
            env.mm.mlock(a + start, length)
        else:
            env.mm.mlock2(a + start, length, MLOCK_ONFAULT)
    assert env.vm_lck_kb() * 1024 <= chunk + P


@case("selftests mlock-random-test test_mlock_outof_limit", ST + "mlock-random-test.c", pages=100)
def mlock_outof_limit(env: Env) -> None:
    """Locking more than RLIMIT_MEMLOCK allows always fails, and nothing is left locked."""
    chunk = 32 * P
    limit = 2 * chunk
    a = env.mm.mmap(env.at(0), 3 * chunk, RW, ANON | MAP_FIXED)
    env.drop_cap_ipc_lock()
    env.set_memlock(limit)
    before = env.vm_lck_kb()
    rng = random.Random(20240614)
    for _ in range(30):
        length = rng.randrange(3 * chunk - limit) + limit + 1
        start = rng.randrange(3 * chunk - length + 1)
        if rng.random() < 0.5:
            env.raises(E.ENOMEM, env.mm.mlock, a + start, length)
        else:
            env.raises(E.ENOMEM, env.mm.mlock2, a + start, length, MLOCK_ONFAULT)
    assert env.vm_lck_kb() == before


# ============================================================================ map_populate / on-fault-limit
@case("selftests map_populate", ST + "map_populate.c")
def map_populate(env: Env) -> None:
    """MAP_SHARED | MAP_POPULATE anonymous memory: every page is there at once."""
    a = env.mm.mmap(env.at(0), 8 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE | MAP_FIXED)
    assert env.resident(a, 8) == [1] * 8


@case("selftests on-fault-limit", ST + "on-fault-limit.c", pages=2064, profiles=OLD)
def on_fault_limit(env: Env) -> None:
    """mlockall(MCL_ONFAULT | MCL_FUTURE) without CAP_IPC_LOCK: a mapping bigger than
    RLIMIT_MEMLOCK fails with EAGAIN even though nothing would be faulted in yet. (The limit is
    4 MiB, not one page: the real side is a Python process that keeps allocating.)"""
    env.drop_cap_ipc_lock()
    env.set_memlock(1024 * P)
    if not env.kernel.mlock_onfault:
        env.raises(E.EINVAL, env.mm.mlockall, MCL_ONFAULT | MCL_FUTURE)
        return
    env.mm.mlockall(MCL_ONFAULT | MCL_FUTURE)
    env.raises(E.EAGAIN, env.mm.mmap, env.at(0), 2048 * P, RW, ANON | MAP_FIXED | MAP_NORESERVE)
    env.mm.munlockall()
    assert env.vma(env.at(0)) is None


# ============================================================================ map_fixed_noreplace
NOREPL = ANON | MAP_FIXED_NOREPLACE


def _noreplace_setup(env: Env) -> int:
    """The selftest's state: five pages at base checked free, then [base+1, base+4) mapped."""
    base = env.at(2)
    assert env.mm.mmap(base, 5 * P, PROT_NONE, NOREPL) == base
    env.mm.munmap(base, 5 * P)
    assert env.mm.mmap(base + P, 3 * P, PROT_NONE, NOREPL) == base + P
    return base


for _nm, _off, _n, _ok in [("exact same mapping", 0, 5, False), ("contained within", 2, 1, False),
                           ("overlap end", 3, 2, False), ("overlap start", 0, 2, False),
                           ("adjacent to start", 0, 1, True), ("adjacent to end", 4, 1, True)]:
    def _noreplace(env: Env, off: int = _off, n: int = _n, ok: bool = _ok) -> None:
        """MAP_FIXED_NOREPLACE fails with EEXIST wherever it would overlap a mapping, and maps
        right next to one."""
        base = _noreplace_setup(env)
        if ok:
            assert env.mm.mmap(base + off * P, n * P, PROT_NONE, NOREPL) == base + off * P
            assert env.vma(base + off * P) is not None
        else:
            env.raises(E.EEXIST, env.mm.mmap, base + off * P, n * P, PROT_NONE, NOREPL)
            assert [v[:2] for v in env.vmas(base, base + 5 * P)] == [(base + P, base + 4 * P)]
    case(f"selftests map_fixed_noreplace {_nm}", ST + "map_fixed_noreplace.c")(_noreplace)


# ============================================================================ madv_populate
def _populate_ok(env: Env) -> bool:
    return bool(env.kernel.populate_skips_inaccessible)  # MADV_POPULATE_* came with 5.14


@case("selftests madv_populate test_prot_read", ST + "madv_populate.c", profiles=OLD)
def madv_prot_read(env: Env) -> None:
    """PROT_READ memory: MADV_POPULATE_READ works, MADV_POPULATE_WRITE fails with EINVAL."""
    a = env.mm.mmap(env.at(0), 4 * P, PROT_READ, ANON | MAP_FIXED)
    if not _populate_ok(env):
        env.raises(E.EINVAL, env.mm.madvise, a, 4 * P, MADV_POPULATE_READ)
        return
    env.mm.madvise(a, 4 * P, MADV_POPULATE_READ)
    env.raises(E.EINVAL, env.mm.madvise, a, 4 * P, MADV_POPULATE_WRITE)


@case("selftests madv_populate test_prot_write", ST + "madv_populate.c", profiles=OLD)
def madv_prot_write(env: Env) -> None:
    """PROT_WRITE-only memory: MADV_POPULATE_READ fails with EINVAL, MADV_POPULATE_WRITE works."""
    a = env.mm.mmap(env.at(0), 4 * P, PROT_WRITE, ANON | MAP_FIXED)
    if not _populate_ok(env):
        env.raises(E.EINVAL, env.mm.madvise, a, 4 * P, MADV_POPULATE_WRITE)
        return
    env.raises(E.EINVAL, env.mm.madvise, a, 4 * P, MADV_POPULATE_READ)
    env.mm.madvise(a, 4 * P, MADV_POPULATE_WRITE)
    assert env.resident(a, 4) == [1] * 4


@case("selftests madv_populate test_holes", ST + "madv_populate.c")
def madv_holes(env: Env) -> None:
    """A hole at the start, in the middle or at the end of the range: ENOMEM."""
    a = env.mm.mmap(env.at(1), 8 * P, RW, ANON | MAP_FIXED)
    env.mm.munmap(a + 4 * P, P)
    for adv in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
        env.raises(E.ENOMEM, env.mm.madvise, a - P, 2 * P, adv)
        env.raises(E.ENOMEM, env.mm.madvise, a + 3 * P, 3 * P, adv)
        env.raises(E.ENOMEM, env.mm.madvise, a + 7 * P, 2 * P, adv)


@case("selftests madv_populate test_populate_read", ST + "madv_populate.c")
def madv_populate_read(env: Env) -> None:
    a = env.mm.mmap(env.at(0), 8 * P, RW, ANON | MAP_FIXED)
    assert env.resident(a, 8) == [0] * 8
    env.mm.madvise(a, 8 * P, MADV_POPULATE_READ)
    assert env.resident(a, 8) == [1] * 8


@case("selftests madv_populate test_populate_write", ST + "madv_populate.c")
def madv_populate_write(env: Env) -> None:
    a = env.mm.mmap(env.at(0), 8 * P, RW, ANON | MAP_FIXED)
    env.mm.madvise(a, 8 * P, MADV_POPULATE_WRITE)
    assert env.resident(a, 8) == [1] * 8


# ============================================================================ mremap_dontunmap
def _dontunmap_ok(env: Env) -> bool:
    return bool(env.kernel.mremap_dontunmap)


@case("selftests mremap_dontunmap mremap_dontunmap_simple", ST + "mremap_dontunmap.c", profiles=OLD)
def dontunmap_simple(env: Env) -> None:
    """The pages move to the new place; the old vma stays, empty."""
    a = env.mm.mmap(env.at(0), 4 * P, RW, ANON | MAP_FIXED)
    for i in range(4):
        env.mm.touch(a + i * P, write=True)
    if not _dontunmap_ok(env):
        env.raises(E.EINVAL, env.mm.mremap, a, 4 * P, 4 * P, MREMAP_DONTUNMAP | MREMAP_MAYMOVE)
        return
    b = env.mm.mremap(a, 4 * P, 4 * P, MREMAP_DONTUNMAP | MREMAP_MAYMOVE)
    env.own(b, b + 4 * P)
    assert env.resident(b, 4) == [1] * 4
    assert env.vma(a) == (a, a + 4 * P, "rw-p") and env.resident(a, 4) == [0] * 4


@case("selftests mremap_dontunmap mremap_dontunmap_simple_shmem", ST + "mremap_dontunmap.c")
def dontunmap_shmem(env: Env) -> None:
    """MREMAP_DONTUNMAP of a shared mapping (a memfd) works (5.13+); the old vma stays mapped."""
    f = env.memfd(4 * P)
    a = env.mm.mmap(env.at(0), 4 * P, RW, MAP_SHARED | MAP_FIXED, f, 0)
    env.mm.touch(a, write=True)
    b = env.mm.mremap(a, 4 * P, 4 * P, MREMAP_DONTUNMAP | MREMAP_MAYMOVE)
    env.own(b, b + 4 * P)
    assert env.vma(a) == (a, a + 4 * P, "rw-s") and env.vma(b)[:2] == (b, b + 4 * P)


@case("selftests mremap_dontunmap mremap_dontunmap_simple_fixed", ST + "mremap_dontunmap.c")
def dontunmap_fixed(env: Env) -> None:
    """MREMAP_DONTUNMAP | MREMAP_FIXED onto a mapped range: it is replaced by the moved pages."""
    a = env.mm.mmap(env.at(0), 4 * P, RW, ANON | MAP_FIXED)
    for i in range(4):
        env.mm.touch(a + i * P, write=True)
    d = env.mm.mmap(env.at(6), 4 * P, PROT_READ, ANON | MAP_FIXED)
    b = env.mm.mremap(a, 4 * P, 4 * P, MREMAP_DONTUNMAP | MREMAP_MAYMOVE | MREMAP_FIXED, d)
    assert b == d and env.vma(b) == (b, b + 4 * P, "rw-p") and env.resident(b, 4) == [1] * 4
    assert env.resident(a, 4) == [0] * 4


@case("selftests mremap_dontunmap mremap_dontunmap_partial_mapping", ST + "mremap_dontunmap.c")
def dontunmap_partial(env: Env) -> None:
    """Moving half a mapping with DONTUNMAP: that half is emptied, the other half keeps its pages."""
    a = env.mm.mmap(env.at(0), 4 * P, RW, ANON | MAP_FIXED)
    for i in range(4):
        env.mm.touch(a + i * P, write=True)
    b = env.mm.mremap(a + 2 * P, 2 * P, 2 * P, MREMAP_DONTUNMAP | MREMAP_MAYMOVE | MREMAP_FIXED, env.at(8))
    assert b == env.at(8) and env.resident(b, 2) == [1, 1]
    assert env.resident(a, 4) == [1, 1, 0, 0]


@case("selftests mremap_dontunmap mremap_dontunmap_partial_mapping_overwrite", ST + "mremap_dontunmap.c")
def dontunmap_overwrite(env: Env) -> None:
    """DONTUNMAP onto a destination that overlaps nothing of the source but an existing mapping:
    the destination is overwritten, the rest of that mapping stays."""
    a = env.mm.mmap(env.at(0), 2 * P, RW, ANON | MAP_FIXED)
    env.mm.touch(a, write=True)
    env.mm.touch(a + P, write=True)
    d = env.mm.mmap(env.at(4), 6 * P, PROT_READ, ANON | MAP_FIXED)
    b = env.mm.mremap(a, 2 * P, 2 * P, MREMAP_DONTUNMAP | MREMAP_MAYMOVE | MREMAP_FIXED, d + 2 * P)
    assert b == d + 2 * P
    assert [v for v in env.vmas(d, d + 6 * P)] == [(d, d + 2 * P, "r--p"), (d + 2 * P, d + 4 * P, "rw-p"),
                                                    (d + 4 * P, d + 6 * P, "r--p")]
    assert env.resident(b, 2) == [1, 1] and env.resident(a, 2) == [0, 0]


# ============================================================================ mremap_test
@case("selftests mremap_test mremap expand merge", ST + "mremap_test.c")
def mremap_expand_merge(env: Env) -> None:
    """Unmap the middle of three pages, grow the first into the hole: one vma of three pages."""
    a = env.mm.mmap(env.at(0), 3 * P, RW, ANON | MAP_FIXED)
    env.mm.munmap(a + P, P)
    assert env.mm.mremap(a, P, 2 * P, 0) == a
    assert [v[:2] for v in env.vmas(a, a + 3 * P)] == [(a, a + 3 * P)]


@case("selftests mremap_test mremap expand merge offset", ST + "mremap_test.c")
def mremap_expand_merge_offset(env: Env) -> None:
    """Unmap the last of three pages, grow the second back: one vma of three pages."""
    a = env.mm.mmap(env.at(0), 3 * P, RW, ANON | MAP_FIXED)
    env.mm.munmap(a + 2 * P, P)
    assert env.mm.mremap(a + P, P, 2 * P, 0) == a + P
    assert [v[:2] for v in env.vmas(a, a + 3 * P)] == [(a, a + 3 * P)]


@case("selftests mremap_test mremap move within range", ST + "mremap_test.c", pages=24)
def mremap_move_within_range(env: Env) -> None:
    """Moving the upper half of a block down over the block below leaves the lower half alone
    (scaled: 20 pages, 2-page halves)."""
    a = env.mm.mmap(env.at(0), 20 * P, RW, ANON | MAP_FIXED)
    for i in range(20):
        env.mm.touch(a + i * P, write=True)
    src = a + 8 * P
    dest = src - 4 * P
    assert env.mm.mremap(src + 2 * P, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, dest + 2 * P) == dest + 2 * P
    assert env.resident(src, 2) == [1, 1] and env.vma(src + 2 * P) is None
    assert env.vma(src) == (src, src + 2 * P, "rw-p")
    # the moved pages keep their anon pgoff, so they do not merge with the block below them
    assert env.vma(dest) == (a, dest + 2 * P, "rw-p")
    assert env.vma(dest + 2 * P) == (dest + 2 * P, dest + 4 * P, "rw-p")
    assert env.resident(dest, 4) == [1, 1, 1, 1]


def _multiple_vmas(env: Env) -> int:
    """mremap_test's 11 pages with pages 1, 3, 7 and 9 unmapped: vmas [0], [2], [4, 7), [8], [10]."""
    a = env.mm.mmap(env.at(0), 11 * P, RW, ANON | MAP_FIXED)
    for i in (1, 3, 7, 9):
        env.mm.munmap(a + i * P, P)
    for i in (0, 2, 4, 5, 6, 8, 10):
        env.mm.touch(a + i * P, write=True)
    return a


def _pattern(env: Env, p: int) -> list[tuple[int, int]]:
    return [(s - p, e - p) for s, e, _ in env.vmas(p, p + 11 * P)]


_LAYOUT = [(0, P), (2 * P, 3 * P), (4 * P, 7 * P), (8 * P, 9 * P), (10 * P, 11 * P)]


for _du in (False, True):
    def _move_multiple(env: Env, dont_unmap: bool = _du) -> None:
        """mremap of a range spanning five vmas and four holes moves all of them together (6.17),
        holes kept; again next to itself; again over a PROT_NONE mapping."""
        flags = MREMAP_FIXED | MREMAP_MAYMOVE | (MREMAP_DONTUNMAP if dont_unmap else 0)
        a = _multiple_vmas(env)
        t = env.at(12)
        if dont_unmap and not env.kernel.mremap_dontunmap:
            env.raises(E.EINVAL, env.mm.mremap, a, 11 * P, 11 * P, flags, t)
            return
        if not env.kernel.mremap_move_multi_vma:  # before 6.17 the range must be one vma
            env.raises(E.EFAULT, env.mm.mremap, a, 11 * P, 11 * P, flags, t)
            assert env.vmas(t, t + 11 * P) == []
            return
        assert env.mm.mremap(a, 11 * P, 11 * P, flags, t) == t
        assert _pattern(env, t) == _LAYOUT
        assert env.mm.mremap(t, 11 * P, 11 * P, flags, t + 11 * P) == t + 11 * P
        assert _pattern(env, t + 11 * P) == _LAYOUT
        env.mm.mmap(t, 11 * P, PROT_NONE, ANON | MAP_FIXED)
        assert env.mm.mremap(t + 11 * P, 11 * P, 11 * P, flags, t) == t
        # each moved vma replaces what it lands on; the holes between them keep the PROT_NONE
        assert env.vmas(t, t + 11 * P) == [
            (t + s, t + e, "rw-p") for s, e in _LAYOUT[:1]] + [
            v for i, (s, e) in enumerate(_LAYOUT[1:]) for v in
            ((t + _LAYOUT[i][1], t + s, "---p"), (t + s, t + e, "rw-p"))]
        assert env.resident(t + 4 * P, 3) == [1, 1, 1]
    case("selftests mremap_test mremap move multiple vmas" + (" [dontunnmap]" if _du else ""),
         ST + "mremap_test.c", pages=36, profiles=OLD)(_move_multiple)


for _inplace in (True, False):
    def _shrink_multiple(env: Env, inplace: bool = _inplace) -> None:
        """Shrinking a range of five vmas and holes to one page, in place or moved: succeeds, and
        one page is left (at the old place, or at the target)."""
        a = env.mm.mmap(env.at(0), 10 * P, RW, ANON | MAP_FIXED)
        for i in range(1, 10, 2):
            env.mm.munmap(a + i * P, P)
        if inplace:
            assert env.mm.mremap(a, 10 * P, P, 0) == a
            assert [v[:2] for v in env.vmas(a, a + 10 * P)] == [(a, a + P)]
        else:
            t = env.at(12)
            assert env.mm.mremap(a, 10 * P, P, MREMAP_MAYMOVE | MREMAP_FIXED, t) == t
            assert [v[:2] for v in env.vmas(a, a + 10 * P)] == [] and env.vma(t)[:2] == (t, t + P)
    case("selftests mremap_test mremap shrink multiple vmas" + (" [inplace]" if _inplace else ""),
         ST + "mremap_test.c", pages=24)(_shrink_multiple)


for _du in (False, True):
    def _move_split(env: Env, dont_unmap: bool = _du) -> None:
        """Moving [2, 9) of ten pages with a hole at 5 splits the vmas at the range's ends and
        keeps the hole."""
        flags = MREMAP_FIXED | MREMAP_MAYMOVE | (MREMAP_DONTUNMAP if dont_unmap else 0)
        a = env.mm.mmap(env.at(0), 10 * P, RW, ANON | MAP_FIXED)
        env.mm.munmap(a + 5 * P, P)
        t = env.at(12)
        assert env.mm.mremap(a + 2 * P, 7 * P, 7 * P, flags, t) == t
        assert [(s - t, e - t) for s, e, _ in env.vmas(t, t + 7 * P)] == [(0, 3 * P), (4 * P, 7 * P)]
    case("selftests mremap_test mremap move multiple vmas split" + (" [dontunnmap]" if _du else ""),
         ST + "mremap_test.c", pages=24)(_move_split)


@case("selftests mremap_test mremap - Source and Destination Regions Overlapping", ST + "mremap_test.c")
def mremap_overlap(env: Env) -> None:
    a = env.mm.mmap(env.at(2), 2 * P, RW, ANON | MAP_FIXED)
    env.raises(E.EINVAL, env.mm.mremap, a, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, a - P)


@case("selftests mremap_test mremap - Destination Address Misaligned (1KB-aligned)", ST + "mremap_test.c")
def mremap_dest_misaligned(env: Env) -> None:
    a = env.mm.mmap(env.at(0), P, RW, ANON | MAP_FIXED)
    env.raises(E.EINVAL, env.mm.mremap, a, P, P, MREMAP_MAYMOVE | MREMAP_FIXED, env.at(4) + 1024)


@case("selftests mremap_test mremap - Source Address Misaligned (1KB-aligned)", ST + "mremap_test.c")
def mremap_src_misaligned(env: Env) -> None:
    a = env.mm.mmap(env.at(0), 2 * P, RW, ANON | MAP_FIXED)
    env.raises(E.EINVAL, env.mm.mremap, a + 1024, P, P, MREMAP_MAYMOVE | MREMAP_FIXED, env.at(4))


@case("selftests mremap_test 8KB mremap - Source PTE-aligned, Destination PTE-aligned", ST + "mremap_test.c")
def mremap_8kb(env: Env) -> None:
    a = env.mm.mmap(env.at(0), 2 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    env.mm.touch(a, write=True)
    env.mm.touch(a + P, write=True)
    b = env.mm.mremap(a, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, env.at(5))
    assert b == env.at(5) and env.vma(b) == (b, b + 2 * P, "rw-s") and env.vma(a) is None
    assert env.resident(b, 2) == [1, 1]


MB = 1 << 20


@case("selftests mremap_test 2MB mremap - Source 1MB-aligned, Destination PTE-aligned", ST + "mremap_test.c",
      pages=2048)
def mremap_2mb(env: Env) -> None:
    """A 2 MiB region at a 1 MiB (not 2 MiB) aligned address moved to a page-aligned one."""
    src = (env.at(0) + MB) & ~(MB - 1)
    if not src & MB:
        src += MB
    a = env.mm.mmap(src, 2 * MB, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_NORESERVE)
    env.mm.touch(a, write=True)
    env.mm.touch(a + 2 * MB - P, write=True)
    dest = a + 2 * MB + P
    b = env.mm.mremap(a, 2 * MB, 2 * MB, MREMAP_MAYMOVE | MREMAP_FIXED, dest)
    assert b == dest and env.vma(b)[:2] == (b, b + 2 * MB) and env.vma(a) is None
    assert env.resident(b, 1) == [1] and env.resident(b + 2 * MB - P, 1) == [1]


# ============================================================================ merge
FAR = 40 * P  # the selftest moves pieces 1000 and 2000 pages away; 40 and 80 pages keep it small


def _span(env: Env, addr: int) -> tuple[int, int]:
    v = env.vma(addr)
    assert v is not None, f"nothing mapped at {addr:#x}"
    return v[0], v[1]


@case("selftests merge mprotect_unfaulted_left", ST + "merge.c", pages=24, reserved=True)
def merge_mprotect_unfaulted_left(env: Env) -> None:
    ptr = env.mm.mmap(env.at(1), 10 * P, RW, ANON | MAP_FIXED | MAP_NORESERVE)
    env.mm.mprotect(ptr, 5 * P, PROT_READ)
    env.mm.touch(ptr + 5 * P, write=True)
    env.mm.mprotect(ptr + 5 * P, 5 * P, PROT_READ)
    assert _span(env, ptr) == (ptr, ptr + 10 * P)


@case("selftests merge mprotect_unfaulted_right", ST + "merge.c", pages=24, reserved=True)
def merge_mprotect_unfaulted_right(env: Env) -> None:
    ptr = env.mm.mmap(env.at(1), 10 * P, RW, ANON | MAP_FIXED | MAP_NORESERVE)
    env.mm.mprotect(ptr + 5 * P, 5 * P, PROT_READ)
    env.mm.touch(ptr, write=True)
    env.mm.mprotect(ptr, 5 * P, PROT_READ)
    assert _span(env, ptr) == (ptr, ptr + 10 * P)


@case("selftests merge mprotect_unfaulted_both", ST + "merge.c", pages=24, reserved=True)
def merge_mprotect_unfaulted_both(env: Env) -> None:
    ptr = env.mm.mmap(env.at(2), 9 * P, RW, ANON | MAP_FIXED | MAP_NORESERVE)
    env.mm.mprotect(ptr, 3 * P, PROT_READ)
    env.mm.mprotect(ptr + 6 * P, 3 * P, PROT_READ)
    env.mm.touch(ptr + 3 * P, write=True)
    env.mm.mprotect(ptr + 3 * P, 3 * P, PROT_READ)
    assert _span(env, ptr) == (ptr, ptr + 9 * P)


@case("selftests merge mprotect_faulted_left_unfaulted_right", ST + "merge.c", pages=24, reserved=True)
def merge_mprotect_faulted_left(env: Env) -> None:
    ptr = env.mm.mmap(env.at(2), 9 * P, RW, ANON | MAP_FIXED | MAP_NORESERVE)
    env.mm.mprotect(ptr + 6 * P, 3 * P, PROT_READ)
    env.mm.touch(ptr, write=True)
    env.mm.mprotect(ptr, 3 * P, PROT_READ)
    env.mm.mprotect(ptr + 3 * P, 3 * P, PROT_READ)
    assert _span(env, ptr) == (ptr, ptr + 9 * P)


@case("selftests merge mprotect_unfaulted_left_faulted_right", ST + "merge.c", pages=24, reserved=True)
def merge_mprotect_faulted_right(env: Env) -> None:
    ptr = env.mm.mmap(env.at(2), 9 * P, RW, ANON | MAP_FIXED | MAP_NORESERVE)
    env.mm.mprotect(ptr, 3 * P, PROT_READ)
    env.mm.touch(ptr + 3 * P, write=True)
    env.mm.mprotect(ptr + 6 * P, 3 * P, PROT_READ)
    env.mm.mprotect(ptr + 3 * P, 3 * P, PROT_READ)
    assert _span(env, ptr) == (ptr, ptr + 9 * P)


@case("selftests merge mremap_unfaulted_to_faulted", ST + "merge.c", pages=64, reserved=True)
def merge_mremap_unfaulted_to_faulted(env: Env) -> None:
    ptr = env.mm.mmap(env.at(1), 5 * P, RW, ANON | MAP_FIXED)
    ptr2 = env.mm.mmap(env.at(7), 5 * P, RW, ANON | MAP_FIXED)
    ptr2 = env.mm.mremap(ptr2, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr2 + FAR)
    env.mm.touch(ptr, write=True)
    env.mm.mremap(ptr2, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr + 5 * P)
    assert _span(env, ptr) == (ptr, ptr + 10 * P)


@case("selftests merge mremap_unfaulted_behind_faulted", ST + "merge.c", pages=64, reserved=True)
def merge_mremap_unfaulted_behind(env: Env) -> None:
    ptr = env.mm.mmap(env.at(6), 5 * P, RW, ANON | MAP_FIXED)
    ptr2 = env.mm.mmap(env.at(14), 5 * P, RW, ANON | MAP_FIXED)
    ptr2 = env.mm.mremap(ptr2, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr2 + FAR)
    env.mm.touch(ptr, write=True)
    ptr2 = env.mm.mremap(ptr2, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, env.at(1))
    assert _span(env, ptr2) == (ptr2, ptr2 + 10 * P)


@case("selftests merge mremap_unfaulted_between_faulted", ST + "merge.c", pages=104, reserved=True)
def merge_mremap_between_faulted(env: Env) -> None:
    ptr = env.mm.mmap(env.at(1), 5 * P, RW, ANON | MAP_FIXED)
    ptr2 = env.mm.mmap(env.at(7), 5 * P, RW, ANON | MAP_FIXED)
    ptr3 = env.mm.mmap(env.at(14), 5 * P, RW, ANON | MAP_FIXED)
    ptr3 = env.mm.mremap(ptr3, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr3 + 2 * FAR)
    ptr2 = env.mm.mremap(ptr2, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr2 + FAR)
    env.mm.touch(ptr, write=True)
    env.mm.touch(ptr3, write=True)
    ptr3 = env.mm.mremap(ptr3, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr + 10 * P)
    env.mm.mremap(ptr2, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr + 5 * P)
    assert _span(env, ptr) == (ptr, ptr + 10 * P)
    assert _span(env, ptr3) == (ptr3, ptr3 + 5 * P)


@case("selftests merge mremap_unfaulted_between_faulted_unfaulted", ST + "merge.c", pages=104, reserved=True)
def merge_mremap_between_faulted_unfaulted(env: Env) -> None:
    ptr = env.mm.mmap(env.at(1), 5 * P, RW, ANON | MAP_FIXED)
    ptr2 = env.mm.mmap(env.at(7), 5 * P, RW, ANON | MAP_FIXED)
    ptr3 = env.mm.mmap(env.at(14), 5 * P, RW, ANON | MAP_FIXED)
    ptr3 = env.mm.mremap(ptr3, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr3 + 2 * FAR)
    ptr2 = env.mm.mremap(ptr2, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr2 + FAR)
    env.mm.touch(ptr, write=True)
    env.mm.mremap(ptr3, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr + 10 * P)
    env.mm.mremap(ptr2, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr + 5 * P)
    assert _span(env, ptr) == (ptr, ptr + 15 * P)


@case("selftests merge mremap_unfaulted_between_correctly_placed_faulted", ST + "merge.c", pages=32,
      reserved=True)
def merge_mremap_between_correctly_placed(env: Env) -> None:
    ptr = env.mm.mmap(env.at(1), 15 * P, RW, ANON | MAP_FIXED)
    env.mm.touch(ptr, write=True)
    env.mm.munmap(ptr + 5 * P, 5 * P)
    ptr2 = env.mm.mmap(env.at(20), 5 * P, RW, ANON | MAP_FIXED)
    env.mm.mremap(ptr2, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr + 5 * P)
    assert _span(env, ptr) == (ptr, ptr + 15 * P)


@case("selftests merge mremap_correct_placed_faulted", ST + "merge.c", pages=104, reserved=True)
def merge_mremap_correct_placed_faulted(env: Env) -> None:
    """Pieces of one faulted vma moved away and back merge again wherever they land in place."""
    ptr = env.mm.mmap(env.at(1), 15 * P, RW, ANON | MAP_FIXED)
    env.mm.touch(ptr, write=True)
    ptr3 = env.mm.mremap(ptr + 10 * P, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr + 10 * P + 2 * FAR)
    ptr2 = env.mm.mremap(ptr + 5 * P, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr + 5 * P + FAR)
    ptr2 = env.mm.mremap(ptr2, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr + 5 * P)
    assert _span(env, ptr) == (ptr, ptr + 10 * P)
    ptr = env.mm.mremap(ptr, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr + FAR)
    ptr = env.mm.mremap(ptr, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, env.at(1))
    assert _span(env, ptr) == (ptr, ptr + 10 * P)
    ptr = env.mm.mremap(ptr, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr + FAR)
    ptr3 = env.mm.mremap(ptr3, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, ptr2 + 5 * P)
    assert _span(env, ptr2) == (ptr2, ptr2 + 10 * P)
    ptr = env.mm.mremap(ptr, 5 * P, 5 * P, MREMAP_MAYMOVE | MREMAP_FIXED, env.at(1))
    assert _span(env, ptr) == (ptr, ptr + 15 * P)
