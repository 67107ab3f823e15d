"""Page faults: handle_mm_fault() and the x86 do_user_addr_fault() path (mm/memory.c).

``touch(addr, write)`` is a user access. A present page with the right permissions costs no
lock at all. Otherwise it faults:

* with ``per_vma_lock`` (6.4+), lock_vma_under_rcu() first: the vma is found without mmap_sem
  and read-locked on its own; a vma write-locked or being write-locked (a writer in
  vma_start_write() waits for its readers: mmlab/locking/vma_lock.py), or a fault that must wait
  for disk, falls back;
  the first private write fault of a vma without an anon_vma takes mmap_sem with a trylock to
  set one up (vmf_anon_prepare()), and falls back if the trylock fails;
* the fallback (and every fault before 6.4) takes mmap_sem for read, finds the vma, grows a
  VM_GROWSDOWN stack if the address is just below it (find_extend_vma), and faults. A file page
  that needs the disk drops mmap_sem for the read and retries (FAULT_FLAG_ALLOW_RETRY/TRIED).

Errors are signals: no vma or no permission is SIGSEGV, a file page beyond EOF is SIGBUS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from mmlab.errors import SIGBUS, SIGSEGV
from mmlab.flags import PAGE_SIZE, VM_EXEC, VM_GROWSDOWN, VM_LOCKED, VM_READ, VM_SHARED, VM_WRITE
from mmlab.mm.filemap import filemap_read
from mmlab.mm.guard import first_guard
from mmlab.mm.pagetable import PTE_FILE, PTE_MLOCKED, PTE_POPULATE, PTE_PRESENT, PTE_WRITTEN
from mmlab.mm.vma import Vma, anon_vma_prepare

if TYPE_CHECKING:
    from mmlab.mm.mm_struct import MM

__all__ = ["handle_mm_fault", "do_user_addr_fault", "access_ok", "VM_FAULT_RETRY"]

VM_FAULT_RETRY = -1


def access_ok(vma: Vma, write: bool) -> bool:
    """access_error() inverted: x86 lets PROT_WRITE-only or PROT_EXEC-only pages be read."""
    if write:
        return bool(vma.flags & VM_WRITE)
    return bool(vma.flags & (VM_READ | VM_WRITE | VM_EXEC))


def handle_mm_fault(mm: "MM", vma: Vma, addr: int, write: bool, call_id: int, task: int,
                    populate: bool = False, unlock: Optional[Callable[[], None]] = None,
                    mark: int = 0) -> int:
    """Fault one page in. Returns 1 if a page was made present or written, 0 if nothing was
    needed, VM_FAULT_RETRY if *unlock* was called to wait for disk. Raises SIGBUS beyond EOF.

    *populate*: a populate makes the page present (PTE_POPULATE), with *mark*, its grade
    (gup.populate_marks()). A COW break of a pte that a populate made present keeps that
    populate's provenance and grade: the write replaced the page behind the pte, but the pte
    was made present by that populate, into the mapping it was in then."""
    pt = mm.pt
    costs = mm.costs
    st = pt.get(addr)
    locked = PTE_MLOCKED if vma.flags & VM_LOCKED else 0
    extra = (PTE_POPULATE | mark) if populate else 0
    shared = vma.flags & VM_SHARED
    if st & PTE_PRESENT:
        if not write or st & PTE_WRITTEN:
            return 0
        # write to a present page: COW break of a private page, or dirtying a shared one
        if not shared:
            mm.clock.spend(costs.cost("cow_page"))
            if st & PTE_POPULATE:
                pt.update_state(addr, (st & ~(PTE_FILE | PTE_MLOCKED)) | PTE_WRITTEN | locked)
            else:
                pt.set(addr, PTE_PRESENT | PTE_WRITTEN | locked | extra, task, call_id)
        else:
            pt.update_state(addr, st | PTE_WRITTEN)
        return 1
    if mm.guards and first_guard(mm.guards, addr, addr + PAGE_SIZE) is not None:
        raise SIGSEGV(addr, "guard marker (MADV_GUARD_INSTALL)")
    file = vma.file
    if file is None:
        if shared and vma.file_pgoff(addr) >= mm.shmem_pages.get(vma.anon_vma, 1 << 62):
            raise SIGBUS(addr, "beyond the end of the shmem object of shared anonymous memory")
        if write:  # do_anonymous_page(): a read fault maps the zero page, no anon_vma yet
            anon_vma_prepare(vma)
        mm.clock.spend(costs.cost("anon_page"))
        pt.set(addr, PTE_PRESENT | (PTE_WRITTEN if write else 0) | locked | extra, task, call_id)
        if shared:  # shmem_fault(): the page now exists in the shmem object
            mm.shmem_cache.setdefault(vma.anon_vma, set()).add(vma.file_pgoff(addr))
        return 1
    pgoff = vma.file_pgoff(addr)
    if pgoff >= file.npages:
        raise SIGBUS(addr, f"page {pgoff} beyond EOF of {file.name}")
    if filemap_read(file, pgoff, costs, mm.clock, unlock):
        return VM_FAULT_RETRY
    mm.clock.spend(costs.cost("file_page"))
    if write and not shared:
        anon_vma_prepare(vma)
        mm.clock.spend(costs.cost("cow_page"))
        pt.set(addr, PTE_PRESENT | PTE_WRITTEN | locked | extra, task, call_id)
    else:
        pt.set(addr, PTE_PRESENT | PTE_FILE | (PTE_WRITTEN if write else 0) | locked | extra, task, call_id)
        if not write and mm.kernel.fault_around_pages:
            fault_around(mm, vma, addr, task, call_id, extra)
    return 1


def fault_around(mm: "MM", vma: Vma, addr: int, task: int, call_id: int, extra: int = 0) -> int:
    """do_fault_around() + filemap_map_pages(): after a read fault on a file vma, map every page
    of the file that is in the page cache in the window of ``fault_around_pages`` ptes that
    starts at the faulting pte rounded down to the window size -- clamped up to the vma's start
    -- and ends at the window's length from there, the vma's end, or the page table's end
    (``from_pte``/``to_pte``); pages beyond EOF are not mapped. Returns the pages mapped."""
    n = mm.kernel.fault_around_pages
    pte_off = (addr >> 12) & 511
    lo = max((pte_off & ~(n - 1)), pte_off - ((addr - vma.start) >> 12))
    hi = min(lo + n, 512, pte_off + ((vma.end - addr) >> 12))
    table = addr & ~((512 << 12) - 1)
    f = vma.file
    state = PTE_PRESENT | PTE_FILE | (PTE_MLOCKED if vma.flags & VM_LOCKED else 0) | extra
    pt = mm.pt
    made = 0
    for i in range(lo, hi):
        a = table + (i << 12)
        if pt.get(a) & PTE_PRESENT or (mm.guards and first_guard(mm.guards, a, a + PAGE_SIZE) is not None):
            continue
        p = vma.file_pgoff(a)
        if p < f.npages and f.cache[p]:
            pt.set(a, state, task, call_id)
            made += 1
    return made


def do_user_addr_fault(mm: "MM", addr: int, write: bool) -> None:
    """A user access to *addr* by the calling task (x86 do_user_addr_fault())."""
    from mmlab.current import current, next_call_id

    addr &= ~(PAGE_SIZE - 1)
    ctx = current()
    # A present pte with the right permission: the MMU does it, no fault, no lock.
    st = mm.pt.get(addr)
    if st & PTE_PRESENT and (not write or st & PTE_WRITTEN):
        v = mm.vmas.lookup_rcu(addr)
        if v is not None and access_ok(v, write):
            return
    call_id = next_call_id()
    saved = ctx.call_id, ctx.call_name
    ctx.call_id, ctx.call_name = call_id, "fault"
    try:
        if mm.kernel.per_vma_lock and _fault_vma_locked(mm, addr, write, call_id, ctx.index):
            return
        _fault_mmap_locked(mm, addr, write, call_id, ctx.index)
    finally:
        ctx.call_id, ctx.call_name = saved


def _fault_vma_locked(mm: "MM", addr: int, write: bool, call_id: int, task: int) -> bool:
    """lock_vma_under_rcu() + handle_mm_fault(FAULT_FLAG_VMA_LOCK). False means: fall back."""
    vma = mm.vmas.lookup_rcu(addr)
    if vma is None or not mm.vma_locks.start_read(vma):
        return False
    try:
        if vma.detached or not (vma.start <= addr < vma.end):
            return False
        if not access_ok(vma, write):
            raise SIGSEGV(addr, f"{'write' if write else 'read'} access not allowed by {vma!r}")
        if write and not vma.flags & VM_SHARED and not vma.anon_vma and not _vmf_anon_prepare(mm, vma):
            return False
        # A fault that must wait for I/O drops the per-VMA lock and retries under mmap_lock.
        r = handle_mm_fault(mm, vma, addr, write, call_id, task, unlock=lambda: None)
        return r != VM_FAULT_RETRY
    finally:
        mm.vma_locks.end_read(vma)


def _vmf_anon_prepare(mm: "MM", vma: Vma) -> bool:
    """vmf_anon_prepare(): the first private write fault of a vma without an anon_vma, under the
    per-VMA lock, takes mmap_lock with mmap_read_trylock() to set one up; if the trylock fails
    the fault is retried under mmap_lock (False)."""
    if not mm.mmap_sem.down_read_trylock():
        return False
    try:
        anon_vma_prepare(vma)
    finally:
        mm.mmap_sem.up_read()
    return True


def _fault_mmap_locked(mm: "MM", addr: int, write: bool, call_id: int, task: int) -> None:
    tried = False
    while True:
        mm.mmap_read_lock(how="fault")
        held = True
        try:
            vma = mm.vmas.find_vma(addr)
            if vma is None:
                raise SIGSEGV(addr, "no vma")
            if vma.start > addr:
                if not (vma.flags & VM_GROWSDOWN):
                    raise SIGSEGV(addr, "no vma")
                from mmlab.mm.mmap import expand_stack
                vma = expand_stack(mm, vma, addr)
            if not access_ok(vma, write):
                raise SIGSEGV(addr, f"{'write' if write else 'read'} access not allowed by {vma!r}")

            def _unlock() -> None:
                nonlocal held
                held = False
                mm.mmap_read_unlock()

            r = handle_mm_fault(mm, vma, addr, write, call_id, task, unlock=None if tried else _unlock)
            if r != VM_FAULT_RETRY:
                return
            tried = True
        finally:
            if held:
                mm.mmap_read_unlock()
