"""MM: the mm_struct -- vmas, page table, mmap_sem, accounting -- and the syscall methods.

Each syscall method is a thin entry that names the call for provenance and delegates to the
module that mirrors the kernel file implementing it (mm/mmap.c -> mmap.py, ...). Calls may come
from any number of real threads at once; the calling thread is the task (:mod:`mmlab.current`).
Bad input raises OSError with Linux's errno and leaves the state Linux leaves: unchanged where
Linux checks before it changes, the vmas before a hole changed where it walks (mprotect, mlock,
munlock, madvise); user accesses that the kernel answers with a signal raise :class:`mmlab.errors.SIGSEGV` / ``SIGBUS``.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Iterator, Optional, Union

from mmlab.clock import DEFAULT_COSTS, Clock, Costs, RealClock, VirtualClock, burn, hooks
from mmlab.current import current, next_call_id, task_local
from mmlab.flags import (DEFAULT_MAX_MAP_COUNT, PAGE_SIZE, TASK_SIZE, VM_ACCOUNT, VM_GROWSDOWN, VM_LOCKED,
                         VM_MAYREAD, VM_MAYWRITE, VM_READ, VM_SHARED, VM_WRITE)
from mmlab.kernels import Kernel, get_kernel
from mmlab.locking import MmapSem, VmaLocks
from mmlab.mm.filemap import File
from mmlab.mm.pagetable import PTE_FILE, PTE_MLOCKED, PTE_WRITTEN, PageTable
from mmlab.mm.vma import OriginMap, Vma, VmaTree, vm_flags_str
# the syscalls' kernel files (they import this module only for type checking): imported
# here once, since an import statement in each MM method cost as much as the rest of a small mmap
from mmlab.mm.fremap import sys_remap_file_pages
from mmlab.mm.madvise import sys_madvise, sys_mincore
from mmlab.mm.memory import do_user_addr_fault
from mmlab.mm.mlock import sys_mlock2, sys_munlock, sys_mlockall, sys_munlockall
from mmlab.mm.mmap import sys_mmap, sys_munmap, sys_brk
from mmlab.mm.mprotect import sys_mprotect
from mmlab.mm.mremap import sys_mremap

__all__ = ["MM", "CallInfo", "VmaInfo"]

STACK_TOP = 0x7FFFFFFFF000 - 0x20000
STACK_PAGES = 33
START_BRK = 0x555555560000
MMAP_BASE = 0x7F0000000000


class CallInfo:
    """One syscall: who made it, what it asked for, and which mappings (origins) it may populate."""

    __slots__ = ("call_id", "task", "task_index", "name", "args", "targets", "populates", "pages",
                 "retakes", "io_waits", "yields", "t_start", "t_end", "result", "replaced", "populate_range")
    # populate_range: (start, end) of the populate a call runs, set when it starts one (gup.py);
    # unset (getattr default) for every other call, so the syscall fast path pays nothing for it

    def __init__(self, call_id: int, task: str, task_index: int, name: str, args: tuple, t: int) -> None:
        self.call_id = call_id
        self.task = task
        self.task_index = task_index
        self.name = name
        self.args = args
        self.targets: set[int] = set()
        self.populates = False
        self.pages = 0
        self.retakes = 0
        self.io_waits = 0
        self.yields = 0
        self.t_start = t
        self.t_end = -1
        self.result: object = None
        # pages this call populated into mappings it did not ask for, per (origin id, PTE grade
        # bit), with the origin as it was then: (kind, call id, task, asked to populate, pages)
        # (None until the first such page: most calls never have one)
        self.replaced: Optional[dict[tuple[int, int], list]] = None

    def describe(self) -> str:
        a = ", ".join(hex(x) if isinstance(x, int) and x > 4096 else repr(x) for x in self.args)
        return f"{self.task}: {self.name}({a}) = {self.result!r}"

    def __repr__(self) -> str:
        return f"<call#{self.call_id} {self.describe()}>"


# begin_call() fills a new CallInfo in place: an __init__ frame is a tenth of a small syscall
_new_call = object.__new__


@dataclasses.dataclass(frozen=True)
class VmaInfo:
    """A snapshot of one vma, as /proc/self/maps and smaps show it."""

    start: int
    end: int
    flags: int
    file: Optional[str]
    pgoff: int
    vm_id: int
    rss_pages: int
    locked_pages: int
    name: str

    @property
    def perms(self) -> str:
        return vm_flags_str(self.flags)[:4]

    @property
    def vmflags(self) -> str:
        return vm_flags_str(self.flags)


class MM:
    """The model of one process's mm_struct.

    ``kernel``: a profile name, spec (``"v3.7+patch3"``) or Kernel; ``costs``: the cost model;
    ``clock``: RealClock (default) or VirtualClock; ``layout``: "process" (a [stack] and a brk
    area, like a fresh process) or "bare" (nothing mapped).
    """

    def __init__(self, kernel: Union[str, Kernel] = "v6.18", costs: Costs = DEFAULT_COSTS,
                 clock: Optional[Clock] = None, *, rlimit_memlock: int = 8 << 20,
                 cap_ipc_lock: bool = True, max_map_count: int = DEFAULT_MAX_MAP_COUNT,
                 layout: str = "process", history: int = 100_000) -> None:
        self.kernel = get_kernel(kernel)
        self.costs = costs
        self.clock = clock or RealClock()
        self.mmap_sem = MmapSem(self.clock, history=history)
        # the pure forwards below, bound once per mm: every syscall takes the lock, and a
        # forwarding frame costs as much as a tenth of an uncontended down_write/up_write pair
        self.mmap_read_lock = self.mmap_sem.down_read  # type: ignore[method-assign]
        self.mmap_read_unlock = self.mmap_sem.up_read  # type: ignore[method-assign]
        self.mmap_write_lock = self.mmap_sem.down_write  # type: ignore[method-assign]
        # a wait in vma_start_write() goes to the same listeners as mmap_sem's records
        self.vma_locks = VmaLocks(self.clock, self.mmap_sem.listeners, history=min(history, 10_000))
        self.vmas = VmaTree(MMAP_BASE)
        if self.kernel.per_vma_lock:  # vma_merge() write-locks the vmas it expands or removes
            self.vmas.start_write = self.vma_locks.start_write
        # 4.12+: stack_guard_gap pages stay free below a VM_GROWSDOWN vma; before, the one guard
        # page was the stack vma's own lowest page and placement kept no gap
        if self.kernel.stack_guard_gap > 1:
            self.vmas.stack_guard_gap = self.kernel.stack_guard_gap * PAGE_SIZE
        self.pt = PageTable()
        self.guards: list[int] = []  # guard markers (MADV_GUARD_INSTALL): sorted page addresses
        self.shmem_pages: dict[int, int] = {}  # size of each shared anonymous mapping's shmem object
        self.origins = OriginMap()
        self.def_flags = 0
        self.locked_vm = 0  # pages
        self.total_vm = 0  # pages
        self.rlimit_memlock = rlimit_memlock
        self.rlimit_stack = 8 << 20  # RLIMIT_STACK: how far [stack] may grow down
        self.cap_ipc_lock = cap_ipc_lock
        self.max_map_count = max_map_count
        self.shmem_cache: dict[int, set[int]] = {}  # the pages that exist in it (by page offset)
        self.start_brk = self.brk_cur = START_BRK
        self.anon_vma_lock = threading.Lock()  # stack growth under the read lock (anon_vma_lock_write)
        self.calls: dict[int, CallInfo] = {}  # calls that populated: the oracle needs them
        self.call_history: collections.deque[CallInfo] = collections.deque(maxlen=history)
        self.running: dict[int, CallInfo] = {}  # calls begun and not yet ended (the live oracle)
        if layout == "process":
            self._setup_stack()
        elif layout != "bare":
            raise ValueError(f"layout must be 'process' or 'bare', not {layout!r}")

    def _setup_stack(self) -> None:
        start = STACK_TOP - STACK_PAGES * PAGE_SIZE
        v = Vma(start, STACK_TOP, VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_GROWSDOWN | VM_ACCOUNT,
                name="[stack]")
        self.vmas.insert(v)
        self.total_vm += STACK_PAGES
        o = self.origins.new(0, "stack", False, "exec")
        self.origins.assign(start, STACK_TOP, o)

    @property
    def map_count(self) -> int:
        return len(self.vmas)

    # ------------------------------------------------------------------ calls
    def begin_call(self, name: str, args: tuple = ()) -> CallInfo:
        if hooks.syscall_burn_ns:  # the test switch: a slower interpreter (mmlab.clock.burn)
            burn(hooks.syscall_burn_ns)
        try:
            ctx = task_local.ctx  # current(), without the call: this runs on every syscall
        except AttributeError:
            ctx = current()
        c = _new_call(CallInfo)  # CallInfo(next_call_id(), ctx.name, ...), without an __init__ frame
        c.call_id = next_call_id()
        c.task = ctx.name
        c.task_index = ctx.index
        c.name = name
        c.args = args
        c.targets = set()
        c.populates = False
        c.pages = c.retakes = c.io_waits = c.yields = 0
        c.t_start = self.clock.now_ns()
        c.t_end = -1
        c.result = None
        c.replaced = None
        ctx.call_id = c.call_id
        ctx.call_name = name
        self.running[c.call_id] = c
        hp = hooks.schedule_point
        if hp is not None:
            hp("syscall_enter", c)
        return c

    def end_call(self, c: CallInfo, result: object) -> None:
        c.t_end = self.clock.now_ns()
        c.result = result
        self.call_history.append(c)
        self.running.pop(c.call_id, None)
        try:
            ctx = task_local.ctx
        except AttributeError:
            ctx = current()
        ctx.call_id = 0
        ctx.call_name = ""
        hp = hooks.schedule_point
        if hp is not None:
            hp("syscall_exit", c)

    # ------------------------------------------------------------------ locking
    def mmap_read_lock(self, how: str = "") -> None:
        self.mmap_sem.down_read(how)

    def mmap_read_unlock(self) -> None:
        self.mmap_sem.up_read()

    def mmap_write_lock(self) -> None:
        self.mmap_sem.down_write()

    def mmap_write_unlock(self) -> None:
        self.vma_locks.end_write_all()
        self.mmap_sem.up_write()

    def mmap_write_downgrade(self) -> None:
        self.vma_locks.end_write_all()
        self.mmap_sem.downgrade_write()

    def vma_start_write(self, vma: Vma) -> None:
        """vma_start_write(): a no-op for a vma already write-locked in this write hold."""
        if self.kernel.per_vma_lock and vma.vm_lock_seq != self.vma_locks.mm_lock_seq:
            self.vma_locks.start_write(vma)

    # ------------------------------------------------------------------ limits
    def can_do_mlock(self) -> bool:
        return self.cap_ipc_lock or self.rlimit_memlock != 0

    def mlock_future_ok(self, flags: int, nbytes: int) -> bool:
        """mlock_future_ok(): may a new VM_LOCKED mapping of *nbytes* be added?"""
        if not flags & VM_LOCKED or self.cap_ipc_lock:
            return True
        return (self.locked_vm << 12) + nbytes <= self.rlimit_memlock

    # ------------------------------------------------------------------ syscalls
    def mmap(self, addr: int, length: int, prot: int, flags: int, file: Optional[File] = None,
             offset: int = 0) -> int:
        return sys_mmap(self, addr, length, prot, flags, file, offset)

    def munmap(self, addr: int, length: int) -> int:
        return sys_munmap(self, addr, length)

    def brk(self, addr: int) -> int:
        return sys_brk(self, addr)

    def mprotect(self, addr: int, length: int, prot: int) -> int:
        return sys_mprotect(self, addr, length, prot)

    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int = 0, new_addr: int = 0) -> int:
        return sys_mremap(self, old_addr, old_len, new_len, flags, new_addr)

    def mlock(self, addr: int, length: int) -> int:
        return sys_mlock2(self, addr, length, 0, name="mlock")

    def mlock2(self, addr: int, length: int, flags: int = 0) -> int:
        return sys_mlock2(self, addr, length, flags)

    def munlock(self, addr: int, length: int) -> int:
        return sys_munlock(self, addr, length)

    def mlockall(self, flags: int) -> int:
        return sys_mlockall(self, flags)

    def munlockall(self) -> int:
        return sys_munlockall(self)

    def remap_file_pages(self, start: int, size: int, prot: int, pgoff: int, flags: int = 0) -> int:
        return sys_remap_file_pages(self, start, size, prot, pgoff, flags)

    def madvise(self, addr: int, length: int, advice: int) -> int:
        return sys_madvise(self, addr, length, advice)

    def mincore(self, addr: int, length: int) -> bytes:
        return sys_mincore(self, addr, length)

    def touch(self, addr: int, write: bool = False) -> None:
        """A user access (a load, or a store with ``write``): a page fault if needed."""
        do_user_addr_fault(self, addr, write)

    # ------------------------------------------------------------------ views
    def maps(self) -> list[VmaInfo]:
        """Snapshots of every vma, in address order."""
        out = []
        for v in self.vmas:
            rss = self.pt.count_present(v.start, v.end)
            if v.file is None and not v.flags & VM_SHARED:  # the zero page is not in Rss
                rss -= self.pt.count_zero_page(v.start, v.end)
            out.append(VmaInfo(v.start, v.end, v.flags, getattr(v.file, "name", None), v.pgoff,
                               v.vm_id, rss, rss if v.flags & VM_LOCKED else 0, v.name))
        return out

    def maps_text(self) -> str:
        """/proc/self/maps."""
        lines = []
        for v in self.vmas:
            off = (v.pgoff << 12) if v.file is not None else 0
            name = v.file.name if v.file is not None else v.name
            lines.append(f"{v.start:08x}-{v.end:08x} {vm_flags_str(v.flags)[:4]} {off:08x} 00:00 "
                         f"{getattr(v.file, 'ino', 0):<10d} {name}".rstrip())
        return "\n".join(lines) + ("\n" if lines else "")

    def smaps(self) -> list[dict[str, object]]:
        """Per-vma Size, Rss and Locked in kB and VmFlags, like /proc/self/smaps.

        ``Locked`` is the proportional share (smaps_account(): ``pss_locked``) of a VM_LOCKED
        vma's pages: a page-cache or shmem page mapped by n ptes counts 4 kB / n in each."""
        out = []
        mapcount = self._shared_mapcount() if any(v.flags & VM_LOCKED for v in self.vmas) else None
        for v in self.maps():
            locked = v.locked_pages * 4
            if mapcount and v.flags & VM_LOCKED:
                shared = list(self._shared_pages(self.vmas.vma_lookup(v.start)))
                pss = sum((PAGE_SIZE << 12) // mapcount.get(k, 1) for k in shared)  # PSS_SHIFT 12
                locked = (pss + ((v.locked_pages - len(shared)) * PAGE_SIZE << 12)) >> 22
            out.append({"start": v.start, "end": v.end, "Size": (v.end - v.start) >> 10,
                        "Rss": v.rss_pages * 4, "Locked": locked, "VmFlags": _smaps_flags(v.flags)})
        return out

    def _shared_pages(self, v: Vma) -> Iterator[tuple]:
        """An identity per present pte of *v* that maps a page others may map too: a page-cache
        page (file inode, page offset) or a page of a shared anonymous vma's shmem object."""
        shm = v.file is None and v.flags & VM_SHARED
        for addr, st, _, _ in self.pt.iter_present(v.start, v.end):
            if st & PTE_FILE and v.file is not None:
                yield (v.file.ino, v.file_pgoff(addr))
            elif shm:
                yield ("shm", v.anon_vma, v.file_pgoff(addr))

    def _shared_mapcount(self) -> dict[tuple, int]:
        """folio_mapcount() of every page :meth:`_shared_pages` names, over the whole mm."""
        n: dict[tuple, int] = collections.Counter()
        for v in self.vmas:
            if v.file is not None or v.flags & VM_SHARED:
                n.update(self._shared_pages(v))
        return n

    def file_page(self, addr: int) -> Optional[tuple[File, int]]:
        """(file, page offset) that the mapping at *addr* maps -- after remap_file_pages() the
        offset it was remapped to -- or None for no vma or an anonymous one."""
        v = self.vmas.vma_lookup(addr)
        if v is None or v.file is None:
            return None
        return v.file, v.file_pgoff(addr & ~(PAGE_SIZE - 1))

    def vm_lck_kb(self) -> int:
        """VmLck of /proc/self/status."""
        return self.locked_vm * 4

    def snapshot(self) -> dict[str, object]:
        """Everything a bad call must leave unchanged: vmas, page table, accounting, lock state."""
        ptes = []
        for key in sorted(self.pt.pmds):
            t = self.pt.pmds[key]
            ptes.append((key, bytes(t.state), t.call.tobytes(), t.task.tobytes()))
        return {
            "vmas": [(v.start, v.end, v.flags, id(v.file), v.pgoff, v.vm_id,
                      None if v.nonlinear is None else sorted(v.nonlinear.items())) for v in self.vmas],
            "ptes": ptes,
            "def_flags": self.def_flags, "locked_vm": self.locked_vm, "total_vm": self.total_vm,
            "brk": self.brk_cur, "origins": [(s, e, o.oid) for s, e, o in self.origins.ranges(0, TASK_SIZE)],
            "holders": len(self.mmap_sem.holders), "waiters": len(self.mmap_sem.waiters),
        }

    def check_invariants(self) -> list[str]:
        """Structural invariants; returns the broken ones (empty when all hold)."""
        bad: list[str] = []
        prev_end = 0
        locked = total = 0
        for v in self.vmas:
            if v.start & 0xFFF or v.end & 0xFFF:
                bad.append(f"{v!r} not page aligned")
            if v.start >= v.end:
                bad.append(f"{v!r} empty")
            if v.start < prev_end:
                bad.append(f"{v!r} overlaps its predecessor")
            prev_end = v.end
            total += v.pages
            if v.flags & VM_LOCKED:
                locked += v.pages
        if locked != self.locked_vm:
            bad.append(f"locked_vm {self.locked_vm} != sum of VM_LOCKED vma pages {locked}")
        if total != self.total_vm:
            bad.append(f"total_vm {self.total_vm} != sum of vma pages {total}")
        npresent = 0
        for key, t in self.pt.pmds.items():
            cnt = 512 - t.state.count(0)
            if cnt != t.present:
                bad.append(f"pte table {key:#x}: present count {t.present} != {cnt}")
            npresent += cnt
            base = key << 21
            for i, s in enumerate(t.state):
                if not s:
                    continue
                a = base + (i << 12)
                v = self.vmas.vma_lookup(a)
                if v is None:
                    bad.append(f"present page {a:#x} outside any vma")
                elif s & PTE_WRITTEN and not v.flags & VM_WRITE and not v.flags & VM_MAYWRITE:
                    bad.append(f"written page {a:#x} in a vma that never allowed writes {v!r}")
                elif s & PTE_MLOCKED and not v.flags & VM_LOCKED:
                    bad.append(f"mlocked page {a:#x} in a vma without VM_LOCKED {v!r}")
        if npresent != self.pt.nr_present:
            bad.append(f"nr_present {self.pt.nr_present} != {npresent}")
        return bad

    @classmethod
    def controlled(cls, kernel: Union[str, Kernel] = "v6.18", costs: Costs = DEFAULT_COSTS, **kw: object) -> "MM":
        """An MM on a VirtualClock, for controlled mode."""
        return cls(kernel, costs, VirtualClock(), **kw)  # type: ignore[arg-type]


def _smaps_flags(flags: int) -> str:
    from mmlab.flags import (VM_EXEC, VM_LOCKONFAULT, VM_MAYEXEC, VM_MAYSHARE, VM_SHARED)
    from mmlab.flags import (VM_DONTCOPY, VM_DONTDUMP, VM_DROPPABLE, VM_HUGEPAGE, VM_MERGEABLE,
                             VM_NOHUGEPAGE, VM_NORESERVE, VM_RAND_READ, VM_SEQ_READ, VM_WIPEONFORK)
    from mmlab.flags import VM_ACCOUNT, VM_MAYBE_GUARD
    names = [(VM_READ, "rd"), (VM_WRITE, "wr"), (VM_EXEC, "ex"), (VM_SHARED, "sh"), (VM_MAYREAD, "mr"),
             (VM_MAYWRITE, "mw"), (VM_MAYEXEC, "me"), (VM_MAYSHARE, "ms"), (VM_GROWSDOWN, "gd"),
             (VM_MAYBE_GUARD, "gu"), (VM_LOCKED, "lo"), (VM_SEQ_READ, "sr"), (VM_RAND_READ, "rr"),
             (VM_DONTCOPY, "dc"), (VM_ACCOUNT, "ac"), (VM_NORESERVE, "nr"), (VM_WIPEONFORK, "wf"), (VM_DONTDUMP, "dd"), (VM_HUGEPAGE, "hg"),
             (VM_NOHUGEPAGE, "nh"), (VM_MERGEABLE, "mg"), (VM_LOCKONFAULT, "lf"), (VM_DROPPABLE, "dp")]
    return " ".join(n for b, n in names if flags & b)

