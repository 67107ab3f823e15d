"""A Hypothesis state machine: random call sequences on every profile, checked after every step.

The calls: mmap (private/shared, anonymous/file/tmpfs/read-only file, a hint or MAP_FIXED or
MAP_FIXED_NOREPLACE -- often over existing mappings -- with MAP_POPULATE, MAP_NONBLOCK,
MAP_LOCKED, MAP_NORESERVE, MAP_GROWSDOWN), munmap, mprotect (with PROT_GROWSDOWN), mremap (shrink,
grow, MAYMOVE, FIXED, DONTUNMAP, duplicate), mlock, mlock2, munlock, mlockall, munlockall, brk,
madvise (every advice), touch and remap_file_pages. Addresses come from a small window or from the
vmas that exist, so the calls keep running into each other. The process is non-root with a small
RLIMIT_MEMLOCK and a small max_map_count, so the limits are hit too.

After every step:
* ``mm.check_invariants() == []`` (accounting, page-table counts, mlocked pages only in VM_LOCKED
  vmas, written pages only where writes were ever allowed);
* the vmas are sorted, non-overlapping, page-aligned and non-empty, and every present page is
  inside one;
* locked_vm is the sum of the VM_LOCKED vmas' pages, total_vm of all vmas' pages;
* nobody holds or waits for mmap_sem (single thread: every call let go of it);
* a call that failed with an errno changed nothing -- except the failures Linux reports after
  the change (mlock's populate errors) and the walks that change vmas as they go (mprotect,
  mlock, munlock with a vma at start; madvise with any vma in the range: tests/mm/test_bad_input.py
  pins down the exact state they leave);
* a call that locked a range returned with every page of its accessible, non-ONFAULT VM_LOCKED
  vmas present (up to the end of the file) -- except v3.7's remap_file_pages with MAP_NONBLOCK,
  which is bug 2 of patch 2 (tests/mm/test_fremap.py pins it down).

The runs are derandomized (the same sequences every time) so that a failure reproduces; Hypothesis
prints the failing sequence of calls.
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from mmlab import (KERNELS, MADV_DONTNEED, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE,
                   MAP_GROWSDOWN, MAP_LOCKED, MAP_NONBLOCK, MAP_NORESERVE, MAP_POPULATE,
                   MAP_PRIVATE, MAP_SHARED, MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT, MM,
                   MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, PAGE_SIZE, PROT_EXEC, PROT_NONE,
                   PROT_READ, PROT_WRITE, SIGBUS, SIGSEGV, VM_GROWSDOWN, VM_LOCKED, VM_LOCKONFAULT,
                   ZERO_COSTS, File)
from mmlab.flags import PROT_GROWSDOWN

P = PAGE_SIZE
WIN = 0x20000000  # a window of WIN_PAGES pages where most calls aim
WIN_PAGES = 40
PROTS = [PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE, PROT_READ | PROT_EXEC, PROT_WRITE]
EXTRAS = [MAP_POPULATE, MAP_NONBLOCK, MAP_LOCKED, MAP_NORESERVE, MAP_GROWSDOWN]
ERRNOS = {errno.EINVAL, errno.ENOMEM, errno.EAGAIN, errno.EPERM, errno.EEXIST, errno.EFAULT,
          errno.EACCES, errno.EBADF, errno.ENOSYS, errno.EOPNOTSUPP}

pages = st.integers(1, 10)
idx = st.integers(0, WIN_PAGES - 1)


class MMMachine(RuleBasedStateMachine):
    kernel = "v6.18"

    def __init__(self) -> None:
        super().__init__()
        self.mm = MM(self.kernel, ZERO_COSTS, cap_ipc_lock=False, rlimit_memlock=48 * P, max_map_count=28)
        self.files = {
            "file": File("file", 24 * P + 100, cached=True),
            "cold": File("cold", 24 * P),
            "shm": File("shm", 32 * P, tmpfs=True),
            "ro": File("ro", 8 * P, mode="r", cached=True),
        }

    # ------------------------------------------------------------ helpers
    def _addr(self, data: st.DataObject) -> int:
        """A page address: in the window, or inside (or at the edge of) a vma that exists."""
        vmas = self.mm.maps()
        if vmas and data.draw(st.booleans(), label="in a vma"):
            v = data.draw(st.sampled_from(vmas), label="vma")
            return v.start + data.draw(st.integers(0, (v.end - v.start) // P), label="page") * P
        return WIN + data.draw(idx, label="window page") * P

    def _call(self, fn, *args, lock_range=None, may_change_on=()):
        """Run one call; check what a failure left behind, and what a locking success left."""
        mm = self.mm
        before = mm.snapshot()
        try:
            ret = fn(*args)
        except OSError as e:
            assert e.errno in ERRNOS, e
            if e.errno not in may_change_on:
                assert mm.snapshot() == before, f"{fn.__name__}{args} failed ({e}) but changed the model"
            return None
        except (SIGSEGV, SIGBUS):
            assert fn == mm.touch
            if mm.snapshot() != before:
                # Only stack growth may stay behind: the fault path grows a VM_GROWSDOWN vma
                # down to the address before it checks the access, as Linux does.
                v = mm.vmas.vma_lookup(args[0])
                assert v is not None and v.flags & VM_GROWSDOWN, f"touch{args} signalled and changed the model"
            return None
        if lock_range is not None:
            rng = lock_range(ret) if callable(lock_range) else lock_range
            if rng is not None:
                self._check_locked_present(*rng)
        return ret

    def _check_locked_present(self, start: int, end: int) -> None:
        """Every page of [start, end) in an accessible, non-ONFAULT VM_LOCKED vma is present
        (up to the end of a file)."""
        mm = self.mm
        for v in mm.vmas.range(start, end):
            if not v.flags & VM_LOCKED or v.flags & VM_LOCKONFAULT or not v.accessible():
                continue
            for a in range(max(start, v.start), min(end, v.end), P):
                if v.file is not None and v.file_pgoff(a) >= v.file.npages:
                    continue
                assert mm.pt.present(a), f"{a:#x} of locked {v!r} not present after the call"

    @initialize(shared_locked=st.booleans())
    def layout(self, shared_locked) -> None:
        """Start every run with something to work on: shared mappings of a regular and of a
        tmpfs file, and a private anonymous one, in the window."""
        mm = self.mm
        rw = PROT_READ | PROT_WRITE
        mm.mmap(WIN, 8 * P, rw, MAP_SHARED | MAP_FIXED | (MAP_LOCKED if shared_locked else 0),
                self.files["file"], 2 * P)
        mm.mmap(WIN + 12 * P, 8 * P, rw, MAP_SHARED | MAP_FIXED, self.files["shm"])
        mm.mmap(WIN + 24 * P, 8 * P, rw, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)

    # ------------------------------------------------------------ rules
    @rule(data=st.data(), n=pages, prot=st.sampled_from(PROTS),
          kind=st.sampled_from(["anon-private", "anon-shared", "file-private", "file-shared", "cold-shared",
                                "shm-shared", "ro-shared", "ro-private"]),
          place=st.sampled_from(["hint", "fixed", "fixed-noreplace", "anywhere"]),
          extras=st.lists(st.sampled_from(EXTRAS), max_size=3, unique=True), off=st.integers(0, 20))
    def mmap(self, data, n, prot, kind, place, extras, off) -> None:
        what, share = kind.split("-")
        flags = MAP_SHARED if share == "shared" else MAP_PRIVATE
        f = None
        if what == "anon":
            flags |= MAP_ANONYMOUS
            off = 0
        else:
            f = self.files[what]
        flags |= {"hint": 0, "fixed": MAP_FIXED, "fixed-noreplace": MAP_FIXED_NOREPLACE, "anywhere": 0}[place]
        for x in extras:
            flags |= x
        addr = 0 if place == "anywhere" else self._addr(data)
        mm = self.mm

        def locked(ret: int):
            return (ret, ret + n * P)

        self._call(mm.mmap, addr, n * P, prot, flags, f, off * P, lock_range=locked)

    @rule(data=st.data(), n=pages)
    def munmap(self, data, n) -> None:
        self._call(self.mm.munmap, self._addr(data), n * P)

    @rule(data=st.data(), n=pages, prot=st.sampled_from(PROTS), grows=st.booleans())
    def mprotect(self, data, n, prot, grows) -> None:
        a = self._addr(data)
        if grows:  # PROT_GROWSDOWN: the walk starts at the start of a VM_GROWSDOWN vma
            v = self.mm.vmas.find_vma(a)
            walks = v is not None and v.start < a + n * P and bool(v.flags & VM_GROWSDOWN)
        else:
            walks = self.mm.vmas.vma_lookup(a) is not None
        self._call(self.mm.mprotect, a, n * P, prot | (PROT_GROWSDOWN if grows else 0),
                   may_change_on=(errno.ENOMEM, errno.EACCES) if walks else ())

    def _vma_range(self, data: st.DataObject, pick) -> tuple[int, int] | None:
        """(start, pages) inside a vma that *pick* accepts, or None if there is none."""
        vmas = [v for v in self.mm.maps() if pick(v)]
        if not vmas:
            return None
        v = data.draw(st.sampled_from(vmas), label="target vma")
        npages = (v.end - v.start) // P
        first = data.draw(st.integers(0, npages - 1), label="first page")
        n = data.draw(st.integers(1, npages - first), label="pages")
        return v.start + first * P, n

    @rule(data=st.data(), old=st.integers(0, 6), new=st.integers(1, 12),
          how=st.sampled_from(["none", "maymove", "fixed", "dontunmap"]), aim=st.booleans())
    def mremap(self, data, old, new, how, aim) -> None:
        mm = self.mm
        r = self._vma_range(data, lambda v: v.name != "[stack]") if aim else None
        if r is not None:
            addr, old = r
        else:
            addr = self._addr(data)
        flags = {"none": 0, "maymove": MREMAP_MAYMOVE, "fixed": MREMAP_FIXED | MREMAP_MAYMOVE,
                 "dontunmap": MREMAP_DONTUNMAP | MREMAP_MAYMOVE}[how]
        if how == "dontunmap":
            new = max(old, 1)
        dest = self._addr(data) if how in ("fixed", "dontunmap") else 0
        v = mm.vmas.vma_lookup(addr)
        was_locked = v is not None and v.flags & VM_LOCKED

        def tail(ret: int):
            return (ret + old * P, ret + new * P) if was_locked and new > old else None

        self._call(mm.mremap, addr, old * P, new * P, flags, dest, lock_range=tail)

    @rule(data=st.data(), n=pages, off=st.integers(0, P - 1))
    def mlock(self, data, n, off) -> None:
        a = self._addr(data)
        end = a + ((off + n * P + P - 1) // P) * P
        self._call(self.mm.mlock, a + off, n * P, lock_range=(a, end),
                   may_change_on=self._mlock_may_change(a, end))

    @rule(data=st.data(), n=pages, onfault=st.booleans(), bad=st.booleans())
    def mlock2(self, data, n, onfault, bad) -> None:
        a = self._addr(data)
        flags = (MLOCK_ONFAULT if onfault else 0) | (0x4 if bad else 0)
        self._call(self.mm.mlock2, a, n * P, flags, lock_range=(a, a + n * P),
                   may_change_on=self._mlock_may_change(a, a + n * P))

    def _mlock_may_change(self, start: int, end: int) -> tuple[int, ...]:
        """mlock() applies the lock, then populates; a populate failure (-EFAULT: PROT_NONE, or
        pages beyond EOF) is reported as ENOMEM with the lock applied, as on Linux; and a hole
        stops apply_vma_lock_flags() after the vmas before it were locked."""
        return (errno.ENOMEM,) if self.mm.vmas.vma_lookup(start) is not None else ()

    @rule(data=st.data(), n=pages)
    def munlock(self, data, n) -> None:
        a = self._addr(data)
        self._call(self.mm.munlock, a, n * P, may_change_on=self._mlock_may_change(a, a + n * P))

    @rule(flags=st.sampled_from([MCL_CURRENT, MCL_FUTURE, MCL_CURRENT | MCL_FUTURE,
                                 MCL_CURRENT | MCL_ONFAULT, MCL_FUTURE | MCL_ONFAULT,
                                 MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT, MCL_ONFAULT, 0]))
    def mlockall(self, flags) -> None:
        from mmlab import TASK_SIZE
        rng = (0, TASK_SIZE) if flags & MCL_CURRENT and not flags & MCL_ONFAULT else None
        self._call(self.mm.mlockall, flags, lock_range=rng)

    @rule()
    def munlockall(self) -> None:
        self._call(self.mm.munlockall)

    @rule(delta=st.integers(-6, 10))
    def brk(self, delta) -> None:
        mm = self.mm
        old = mm.brk(0)
        new = mm.brk(max(0, old + delta * P - (17 if delta % 3 == 0 else 0)))
        if new != old and new > old:
            a, b = (old + P - 1) & ~(P - 1), (new + P - 1) & ~(P - 1)
            self._check_locked_present(a, b)

    @rule(data=st.data(), n=pages)
    def madvise_dontneed(self, data, n) -> None:
        a = self._addr(data)
        walks = self.mm.vmas.find_vma_intersection(a, a + n * P) is not None
        self._call(self.mm.madvise, a, n * P, MADV_DONTNEED,
                   may_change_on=(errno.ENOMEM, errno.EINVAL) if walks else ())

    @rule(data=st.data(), n=pages, advice=st.sampled_from([0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
                                                           19, 20, 21, 22, 23, 24, 102, 103]))
    def madvise_any(self, data, n, advice) -> None:
        """Every advice: flag advices split and merge vmas (EAGAIN at max_map_count), guard
        markers, REMOVE and PAGEOUT zap; a walk that fails part way may have changed state."""
        a = self._addr(data)
        walks = self.mm.vmas.find_vma_intersection(a, a + n * P) is not None
        self._call(self.mm.madvise, a, n * P, advice,
                   may_change_on=(errno.ENOMEM, errno.EINVAL, errno.EACCES, errno.EAGAIN, errno.EFAULT)
                   if walks else ())

    @rule(data=st.data(), write=st.booleans())
    def touch(self, data, write) -> None:
        self._call(self.mm.touch, self._addr(data), write)

    @rule(data=st.data(), n=pages, pgoff=st.integers(0, 30), nonblock=st.booleans(), aim=st.booleans())
    def remap_file_pages(self, data, n, pgoff, nonblock, aim) -> None:
        mm = self.mm
        r = self._vma_range(data, lambda v: v.file is not None and v.flags & 0x8) if aim else None
        if r is not None:
            a, n = r
        else:
            a = self._addr(data)
        v = mm.vmas.vma_lookup(a)
        k = mm.kernel
        check = v is not None and v.flags & VM_LOCKED and (k.fremap_fixes or k.fremap_emulated)
        self._call(mm.remap_file_pages, a, n * P, 0, pgoff, MAP_NONBLOCK if nonblock else 0,
                   lock_range=(a, a + n * P) if check else None)

    # ------------------------------------------------------------ invariants
    @invariant()
    def model_invariants(self) -> None:
        assert self.mm.check_invariants() == []

    @invariant()
    def vmas_sorted_disjoint_aligned_nonempty(self) -> None:
        mm = self.mm
        prev_end = 0
        locked = total = 0
        for v in mm.maps():
            assert v.start % P == 0 and v.end % P == 0, v
            assert v.start < v.end, v
            assert v.start >= prev_end, v
            prev_end = v.end
            total += (v.end - v.start) // P
            if v.flags & VM_LOCKED:
                locked += (v.end - v.start) // P
        assert mm.locked_vm == locked and mm.total_vm == total

    @invariant()
    def present_pages_inside_vmas(self) -> None:
        mm = self.mm
        n = 0
        for v in mm.vmas:
            n += mm.pt.count_present(v.start, v.end)
        assert n == mm.pt.nr_present

    @invariant()
    def lock_is_free(self) -> None:
        sem = self.mm.mmap_sem
        assert not sem.holders and not sem.waiters


SETTINGS = settings(max_examples=30, stateful_step_count=30, deadline=None, derandomize=True,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _machine_for(kernel: str) -> type:
    cls = type(f"MM_{kernel.replace('.', '_').replace('-', '_')}", (MMMachine,), {"kernel": kernel})
    return cls


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_random_call_sequences(kernel: str) -> None:
    from hypothesis.stateful import run_state_machine_as_test
    run_state_machine_as_test(_machine_for(kernel), settings=SETTINGS)
