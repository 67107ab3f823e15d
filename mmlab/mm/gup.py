"""__mm_populate(), populate_vma_page_range() and __get_user_pages() (mm/gup.c, mm/mlock.c).

``mm_populate(mm, start, len, call)`` is called with mmap_sem NOT held. It takes the read lock,
looks the vma up by address, and faults pages in. A fault that waits for disk drops the lock
(``locked = 0``); the loop then takes it again and looks the vma up again *by address* -- which
is how a mapping that replaced the original range while the lock was dropped gets populated.

Profile switches that change it:
  vm_populate               (patch 9) skip vmas without VM_POPULATE;
  populate_fault_retry      a disk wait drops the lock (else the read is done under it);
  populate_skips_inaccessible  (6.x) PROT_NONE vmas give -EFAULT, VM_LOCKONFAULT vmas are skipped;
  populate_batch_pages      (bounded) after this many pages, drop the lock if anybody waits
                            (rwsem_is_contended(), the cond_resched()-style check of a long
                            loop under a lock);
  populate_yield_after_us   (bounded) ... but only for a waiter queued at least this long (the
                            first waiter's age, as rwsem's handoff reads waiter->timeout);
  populate_batch_max_pages  (bounded) the batch doubles after each check that finds nobody
                            waiting, up to this many pages, and starts again after a re-take;
  populate_checks_identity  (bounded) populate only the mappings the call asked for;
  populate_vma_lock         (bounded, with per_vma_lock and populate_batch_pages) after the
                            lookup under mmap_sem, take the vma's per-VMA read lock
                            (vma_start_read_locked()), drop mmap_sem and fault the vma's range
                            under the vma lock alone. Every populate_batch_pages the vma lock is
                            dropped and taken again by address (lock_vma_under_rcu()), so a
                            writer that does not touch the vma never waits for the populate, and
                            one that does (vma_start_write(): munmap, mprotect, a merge) waits for
                            at most one batch. The run goes on only while the vma found at the
                            address is the same vma (vm_id) and was not write-locked in between
                            (vm_lock_seq unchanged: nothing in its range, lineage included, has
                            changed). Otherwise -- the re-take fails because a writer marked the
                            vma (VMA_LOCK_OFFSET), it was detached or replaced -- the populate
                            falls back to mmap_sem read, as a fault does, and the loop above looks
                            the vma up again with its identity checks (populate_checks_identity);
                            the pages are never graded without mmap_sem or the vma lock holding
                            their lineage still. A disk wait drops the vma lock and goes back
                            to mmap_sem too (FAULT_FLAG_VMA_LOCK + VM_FAULT_RETRY). The batch is
                            fixed here: populate_yield_after_us and populate_batch_max_pages
                            shape the mmap_sem holds only.

Every pte a populate makes present carries its grade, fixed then (:func:`populate_marks`): was
the mapping there one the call asked for (its origin, or an origin it was moved from, is among
the call's targets), another that had itself asked to be populated, or another that never asked.
What happens to the mapping later (mlock, mremap, ...) does not change how it was populated.

``populate_range_locked()`` is the pre-3.9 make_pages_present()/mlock_vma_pages_range(): the same
fault loop run by a caller that already holds mmap_sem (for write, in v3.7's mmap_region) and
never drops it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from mmlab.clock import hooks
from mmlab.current import current
from mmlab.errors import EFAULT, SIGBUS, SIGSEGV
from mmlab.flags import (PAGE_SIZE, VM_IO, VM_LOCKED, VM_LOCKONFAULT, VM_PFNMAP, VM_POPULATE,
                         VM_SHARED, VM_WRITE)
from mmlab.mm.filemap import filemap_read
from mmlab.mm.guard import first_guard
from mmlab.mm.memory import VM_FAULT_RETRY, handle_mm_fault
from mmlab.mm.pagetable import (PTE_FILE, PTE_MLOCKED, PTE_POPULATE, PTE_PRESENT, PTE_REPLACEMENT,
                                PTE_REPLACEMENT_ASKED, PTE_WRITTEN)
from mmlab.mm.vma import Origin, Vma, anon_vma_prepare

if TYPE_CHECKING:
    from mmlab.mm.mm_struct import MM, CallInfo

__all__ = ["mm_populate", "populate_range_locked", "populate_marks", "mark_at", "note_replaced", "POPULATE_CHUNK"]

POPULATE_CHUNK = 512  # pages faulted per step: one page table, the unit of cost pacing


def mm_populate(mm: "MM", start: int, length: int, call: "CallInfo", ignore_errors: bool = True) -> int:
    """__mm_populate(): returns 0, or a negative errno when *ignore_errors* is False."""
    k = mm.kernel
    end = start + length
    nstart = start
    locked = False
    vma: Optional[Vma] = None
    ret = 0
    call.populates = True
    call.populate_range = (start, end)
    mm.calls[call.call_id] = call
    ctx = current()
    total = length >> 12
    try:
        while nstart < end:
            if not locked:
                mm.mmap_read_lock(how="populate" if vma is None else "retake")
                locked = True
                vma = mm.vmas.find_vma(nstart)
                call.retakes += 1
            elif vma is not None and nstart >= vma.end:
                vma = mm.vmas.next(vma)
            if vma is None or vma.start >= end:
                break
            nend = min(end, vma.end)
            if vma.flags & (VM_IO | VM_PFNMAP):
                nstart = nend
                continue
            if k.vm_populate and not vma.flags & VM_POPULATE:
                nstart = nend
                continue
            if nstart < vma.start:
                nstart = vma.start
            if k.populate_checks_identity:
                span = _allowed_span(mm, call, nstart, nend)
                if span is None:
                    nstart = nend
                    continue
                nstart, nend = span
            ctx.progress = ("populate", (nstart - start) >> 12, total)
            n, locked = populate_vma_page_range(mm, vma, nstart, nend, call, ctx, allow_drop=True)
            if n < 0:
                if ignore_errors:
                    nstart = nend
                    continue
                ret = n
                break
            nstart += n * PAGE_SIZE
            ctx.progress = ("populate", (nstart - start) >> 12, total)
    finally:
        if locked:
            mm.mmap_read_unlock()
        ctx.progress = None
    return ret


def _allowed_span(mm: "MM", call: "CallInfo", start: int, end: int) -> Optional[tuple[int, int]]:
    """The first sub-range of [start, end) whose origin is one the call asked to populate."""
    for s, e, o in mm.origins.ranges(start, end):
        if o.oid in call.targets:
            return s, e
    return None


def populate_marks(mm: "MM", call: "CallInfo", start: int, end: int,
                   vma_locked: bool = False) -> list[tuple[int, int, int, Optional[Origin]]]:
    """What the mappings of [start, end) are to *call*, now: (start, end, grade bits, origin)
    runs in address order, covering [start, end). Called under mmap_sem (read or write), which
    keeps the lineage still, or (*vma_locked*) under the read lock of the vma holding the range,
    which keeps the range's lineage still (read under OriginMap.lock); the bits go into every
    pte the call makes present there.

    0: an origin the call asked for, or one moved (mremap) from such an origin;
    PTE_REPLACEMENT_ASKED: another mapping, which itself asked to be populated (MAP_POPULATE,
    MAP_LOCKED, mlock, MCL_FUTURE) -- what VM_POPULATE (patch 9) accepts;
    PTE_REPLACEMENT: another mapping that never asked, or a range without lineage."""
    targets = call.targets
    out: list[tuple[int, int, int, Optional[Origin]]] = []
    pos = start
    for s, e, o in (mm.origins.ranges_locked(start, end) if vma_locked else mm.origins.ranges(start, end)):
        if s > pos:
            out.append((pos, s, PTE_REPLACEMENT, None))
        if o.oid in targets or (o.moved_from and not targets.isdisjoint(o.moved_from)):
            mark = 0
        elif o.asked_populate:
            mark = PTE_REPLACEMENT_ASKED
        else:
            mark = PTE_REPLACEMENT
        out.append((s, e, mark, o))
        pos = e
    if pos < end:
        out.append((pos, end, PTE_REPLACEMENT, None))
    return out


def note_replaced(call: "CallInfo", origin: Optional[Origin], mark: int, pages: int) -> None:
    """Count *pages* that *call* populated into a mapping it did not ask for (*mark* non-zero),
    with that mapping's origin as it was then: the oracle's findings name the mapping by it, even
    after the origin was replaced or moved (CallView.replaced)."""
    d = call.replaced
    if d is None:
        d = call.replaced = {}
    oid = origin.oid if origin is not None else 0
    r = d.get((oid, mark))
    if r is None:
        d[(oid, mark)] = [origin.kind if origin else "", origin.call_id if origin else 0,
                          origin.task if origin else "", bool(origin and origin.asked_populate), pages]
    else:
        r[4] += pages


def mark_at(spans: list[tuple[int, int, int, Optional[Origin]]], addr: int) -> tuple[int, Optional[Origin]]:
    """The grade bits and origin of *addr* in :func:`populate_marks` spans."""
    for s, e, m, o in spans:
        if s <= addr < e:
            return m, o
    return PTE_REPLACEMENT, None


def populate_range_locked(mm: "MM", vma: Vma, start: int, end: int, call: "CallInfo") -> None:
    """make_pages_present() / mlock_vma_pages_range() of v3.7: the caller holds mmap_sem (any
    mode) and keeps it; a disk wait happens under the lock."""
    call.populates = True
    call.populate_range = (start, end)
    mm.calls[call.call_id] = call
    ctx = current()
    addr = start
    saved = ctx.progress
    try:
        while addr < end:
            ctx.progress = ("populate", (addr - start) >> 12, (end - start) >> 12)
            n, _ = populate_vma_page_range(mm, vma, addr, end, call, ctx, allow_drop=False)
            if n <= 0:
                return
            addr += n * PAGE_SIZE
    finally:
        ctx.progress = saved


def populate_vma_page_range(mm: "MM", vma: Vma, start: int, end: int, call: "CallInfo", ctx,
                            allow_drop: bool) -> tuple[int, bool]:
    """Fault in [start, end) of one vma. Returns (pages done or -errno, still locked)."""
    k = mm.kernel
    flags = vma.flags
    if k.populate_skips_inaccessible and flags & VM_LOCKONFAULT:
        return (end - start) >> 12, True
    if not vma.accessible():
        return -EFAULT, True
    write = (flags & (VM_WRITE | VM_SHARED)) == VM_WRITE
    batch = k.populate_batch_pages if allow_drop else 0
    return _get_user_pages(mm, vma, start, end, write, call, ctx,
                           allow_retry=allow_drop and k.populate_fault_retry, batch=batch,
                           vma_lock=bool(batch and k.populate_vma_lock and k.per_vma_lock))


def _get_user_pages(mm: "MM", vma: Vma, start: int, end: int, write: bool, call: "CallInfo", ctx,
                    allow_retry: bool, batch: int, vma_lock: bool = False) -> tuple[int, bool]:
    """__get_user_pages() with FOLL_POPULATE semantics: fault every page that is not there.
    Called with mmap_sem held for read; returns (pages done or -errno, mmap_sem still held).
    *vma_lock* (populate_vma_lock): the pages are faulted under the vma's per-VMA read lock
    instead (:func:`_vma_locked_pages`), and mmap_sem is not held on return."""
    clock = mm.clock
    task = ctx.index
    state = PTE_PRESENT | PTE_POPULATE | (PTE_WRITTEN if write else 0) | \
        (PTE_MLOCKED if vma.flags & VM_LOCKED else 0)
    since_check = 0
    cap = mm.kernel.populate_batch_max_pages
    if cap < batch:
        cap = batch
    min_age = mm.kernel.populate_yield_after_us * 1000 * mm.costs.time_scale if batch else 0
    addr = start
    prog = ctx.progress  # (what, pages done before this range, total): advanced per chunk
    file = vma.file
    if file is not None and vma.nonlinear is not None:
        return _get_user_pages_slow(mm, vma, start, end, write, call, task, allow_retry)
    shm = mm.shmem_cache.setdefault(vma.anon_vma, set()) if file is None and vma.flags & VM_SHARED else None
    if file is None:
        cost = mm.costs.cost("anon_page")
    elif write:  # a private file page written: read it, then break COW into an anonymous copy
        cost = mm.costs.cost("file_page") + mm.costs.cost("cow_page")
    else:
        state |= PTE_FILE
        cost = mm.costs.cost("file_page")
    if write:  # a read populate of anonymous memory maps the zero page: no anon_vma yet
        anon_vma_prepare(vma)
    if file is None and vma.flags & VM_SHARED:  # shmem_fault() beyond the object's size: SIGBUS
        size = mm.shmem_pages.get(vma.anon_vma)
        if size is not None:
            limit = vma.start + ((size - vma.pgoff) << 12)
            if start >= limit:
                return -EFAULT, True
            end = min(end, limit)
    guards = mm.guards
    spans = populate_marks(mm, call, start, end)  # the grade of each pte made present below
    if vma_lock:
        return _vma_locked_pages(mm, vma, start, end, write, call, ctx, allow_retry, batch, state, cost,
                                 shm, spans)
    si = 0
    span_end, mark, origin = spans[0][1], spans[0][2], spans[0][3]
    while addr < end:
        while addr >= span_end:
            si += 1
            span_end, mark, origin = spans[si][1], spans[si][2], spans[si][3]
        stop = min(end, span_end, (addr & ~(POPULATE_CHUNK * PAGE_SIZE - 1)) + POPULATE_CHUNK * PAGE_SIZE)
        if batch and addr + (batch - since_check) * PAGE_SIZE < stop:  # a batch smaller than a chunk
            stop = addr + (batch - since_check) * PAGE_SIZE
        if guards:  # a guard marker faults with SIGSEGV: gup stops there (-EFAULT if first)
            g = first_guard(guards, addr, stop)
            if g == addr:
                done = (addr - start) >> 12
                return (done if done else -EFAULT), True
            if g is not None:
                stop = g
        if file is not None:  # a run of page-cache pages at a time; the disk where they are not
            pg0 = vma.file_pgoff(addr)
            if pg0 >= file.npages:  # SIGBUS territory: gup returns what it did, else -EFAULT
                done = (addr - start) >> 12
                return (done if done else -EFAULT), True
            pgn = min(file.npages, pg0 + ((stop - addr) >> 12))
            j = file.cache.find(0, pg0, pgn)
            if j == pg0:
                if filemap_read(file, pg0, mm.costs, clock, mm.mmap_read_unlock if allow_retry else None):
                    call.io_waits += 1  # VM_FAULT_RETRY: the lock was dropped for the read
                    return (addr - start) >> 12, False
                continue
            stop = addr + (((j if j > 0 else pgn) - pg0) << 12)
        _fill_chunk(mm, vma, addr, stop, state, mark, origin, call, task, shm, write, cost)
        since_check += (stop - addr) >> 12
        addr = stop
        if prog is not None:
            ctx.progress = (prog[0], prog[1] + ((addr - start) >> 12), prog[2])
        if batch and since_check >= batch and addr < end:  # bounded: yield to a waiting writer
            since_check = 0
            sem = mm.mmap_sem
            if sem.is_contended():
                first = sem.first_waiter_req_ns() if min_age else None
                if first is None or clock.now_ns() - first >= min_age:
                    mm.mmap_read_unlock()
                    call.yields += 1
                    return (addr - start) >> 12, False
            elif batch < cap:  # nobody waits: check less often
                batch = min(batch * 2, cap)
    return (addr - start) >> 12, True


def _vma_locked_pages(mm: "MM", vma: Vma, start: int, end: int, write: bool, call: "CallInfo", ctx,
                      allow_retry: bool, batch: int, state: int, cost: int, shm: Optional[set[int]],
                      spans: list[tuple[int, int, int, Optional[Origin]]]) -> tuple[int, bool]:
    """The populate_vma_lock loop: [start, end) of *vma* under its per-VMA read lock, taken
    while mmap_sem is still held for read (vma_start_read_locked()), then mmap_sem is dropped.
    Every *batch* pages the vma lock is dropped (a schedule point) and taken again by address
    (lookup_rcu() + vma_start_read(), as lock_vma_under_rcu() does). The run goes on while that
    finds the same vma (vm_id), not write-locked since (vm_lock_seq unchanged): *spans*, the
    grades computed under mmap_sem, hold exactly as long as that. Otherwise it returns, and the
    caller's loop re-takes mmap_sem (waiting behind the writer that marked the vma, as a fault
    falling back does) and looks the vma up again. Returns (pages done or -errno, False): mmap_sem
    is not held on return, nor the vma lock."""
    clock = mm.clock
    locks = mm.vma_locks
    task = ctx.index
    hp = hooks.schedule_point
    prog = ctx.progress
    file = vma.file
    guards = mm.guards
    vm_id = vma.vm_id
    locks.start_read_locked(vma)
    locks.note_holder(vma, ctx)
    seq = vma.vm_lock_seq  # a write lock taken after this point moves it
    held: Optional[Vma] = vma
    mm.mmap_read_unlock()

    def _unlock() -> None:  # a disk wait: the vma lock is dropped, the caller retries under mmap_sem
        nonlocal held
        clock.settle()
        locks.drop_holder(ctx)
        locks.end_read(vma)
        held = None

    addr = start
    since_check = 0
    si = 0
    span_end, mark, origin = spans[0][1], spans[0][2], spans[0][3]
    try:
        while addr < end:
            while addr >= span_end:
                si += 1
                span_end, mark, origin = spans[si][1], spans[si][2], spans[si][3]
            stop = min(end, span_end, (addr & ~(POPULATE_CHUNK * PAGE_SIZE - 1)) + POPULATE_CHUNK * PAGE_SIZE,
                       addr + (batch - since_check) * PAGE_SIZE)
            if guards:
                g = first_guard(guards, addr, stop)
                if g == addr:
                    done = (addr - start) >> 12
                    return (done if done else -EFAULT), False
                if g is not None:
                    stop = g
            if file is not None:
                pg0 = vma.file_pgoff(addr)
                if pg0 >= file.npages:
                    done = (addr - start) >> 12
                    return (done if done else -EFAULT), False
                pgn = min(file.npages, pg0 + ((stop - addr) >> 12))
                j = file.cache.find(0, pg0, pgn)
                if j == pg0:
                    if filemap_read(file, pg0, mm.costs, clock, _unlock if allow_retry else None):
                        call.io_waits += 1  # VM_FAULT_RETRY under FAULT_FLAG_VMA_LOCK: to mmap_sem
                        return (addr - start) >> 12, False
                    continue
                stop = addr + (((j if j > 0 else pgn) - pg0) << 12)
            _fill_chunk(mm, vma, addr, stop, state, mark, origin, call, task, shm, write, cost)
            since_check += (stop - addr) >> 12
            addr = stop
            if prog is not None:
                ctx.progress = (prog[0], prog[1] + ((addr - start) >> 12), prog[2])
            if since_check >= batch and addr < end:  # drop the vma lock, take it again
                since_check = 0
                clock.settle()  # the batch is paid under the lock it was done under
                if locks.write_pending(vma):
                    call.yields += 1  # a writer waits in vma_start_write(): it goes first
                held = None
                locks.drop_holder(ctx)
                locks.end_read(vma)
                if hp is not None:
                    hp("vma_read_unlock", vma)
                v = mm.vmas.lookup_rcu(addr)
                if v is None or not locks.start_read(v):
                    return (addr - start) >> 12, False  # write-locked, being written, gone
                held = v
                locks.note_holder(v, ctx)
                if hp is not None:
                    hp("vma_read_lock", v)
                if v.vm_id != vm_id or v.vm_lock_seq != seq or not v.start <= addr < v.end:
                    return (addr - start) >> 12, False  # replaced or changed: under mmap_sem again
                # the grades, read again under the vma lock: they are what the oracle judges,
                # so they must not be carried over from before the re-take on trust
                spans = populate_marks(mm, call, addr, end, vma_locked=True)
                si = 0
                span_end, mark, origin = spans[0][1], spans[0][2], spans[0][3]
        return (addr - start) >> 12, False
    finally:
        if held is not None:
            clock.settle()
            locks.drop_holder(ctx)
            locks.end_read(held)


def _fill_chunk(mm: "MM", vma: Vma, addr: int, stop: int, state: int, mark: int, origin: Optional[Origin],
                call: "CallInfo", task: int, shm: Optional[set], write: bool, cost: int) -> None:
    """One run of ptes [addr, stop) of a populate, under whichever lock its caller holds
    (mmap_sem for read, or the vma's per-VMA lock): make every absent pte present with the
    call's grade, break COW on present unwritten private pages for a write populate, and pay
    the pages made."""
    made = mm.pt.fill_absent(addr, stop, state | mark, task, call.call_id)
    if mark and made:
        note_replaced(call, origin, mark, made)
    if shm is not None:  # the pages now exist in the shmem object of shared anon memory
        p0 = vma.file_pgoff(addr)
        shm.update(range(p0, p0 + ((stop - addr) >> 12)))
    if write and made < (stop - addr) >> 12:
        _break_cow(mm, vma, addr, stop, call, task, mark, origin)
    call.pages += made
    if made:
        mm.clock.spend(cost * made, "populate")
    else:
        hp = hooks.schedule_point
        if hp is not None:
            hp("populate_batch", call)


def _get_user_pages_slow(mm: "MM", vma: Vma, start: int, end: int, write: bool, call: "CallInfo",
                         task: int, allow_retry: bool) -> tuple[int, bool]:
    """Page by page through handle_mm_fault(), for VM_NONLINEAR vmas."""
    dropped = False

    def _unlock() -> None:
        nonlocal dropped
        dropped = True
        mm.mmap_read_unlock()

    spans = populate_marks(mm, call, start, end)
    addr = start
    while addr < end:
        mark, origin = mark_at(spans, addr)
        try:
            r = handle_mm_fault(mm, vma, addr, write, call.call_id, task, populate=True,
                                unlock=_unlock if allow_retry else None, mark=mark)
        except (SIGBUS, SIGSEGV):
            done = (addr - start) >> 12
            return (done if done else -EFAULT), True
        if r == VM_FAULT_RETRY:
            call.io_waits += 1
            return (addr - start) >> 12, not dropped
        if mark and r:
            note_replaced(call, origin, mark, r)
        call.pages += r
        addr += PAGE_SIZE
    return (addr - start) >> 12, True


def _break_cow(mm: "MM", vma: Vma, start: int, end: int, call: "CallInfo", task: int, mark: int,
               origin: Optional[Origin]) -> None:
    """FOLL_WRITE on present, unwritten private pages: write faults that break COW. A pte an
    earlier populate made present keeps that populate's provenance (see handle_mm_fault())."""
    addr = start
    pt = mm.pt
    while addr < end:
        st = pt.get(addr)
        if st & PTE_PRESENT and not st & PTE_WRITTEN:
            handle_mm_fault(mm, vma, addr, True, call.call_id, task, populate=True, mark=mark)
            if mark and not st & PTE_POPULATE:
                note_replaced(call, origin, mark, 1)
        addr += PAGE_SIZE
