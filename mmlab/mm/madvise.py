"""madvise() and mincore() (mm/madvise.c, mm/mincore.c).

sys_madvise() is do_madvise(): after the argument checks (an unknown advice, an unaligned start
or a wrapping range: EINVAL) it walks the vmas of the range in order (madvise_walk_vmas()) and
applies the advice to each mapped part with madvise_vma_behavior(). A hole does not stop the
walk: it only makes the final result ENOMEM. An advice a vma refuses stops the walk with its
errno, and the parts before it keep the advice -- Linux checks as it goes, not before.

What each advice does to the state the model has, and which vmas refuse it:

* MADV_DONTNEED zaps the pages (VM_LOCKED, VM_PFNMAP: EINVAL); MADV_DONTNEED_LOCKED (5.18) zaps
  VM_LOCKED vmas too. Guard markers survive both. They run under mmap_sem held for read -- which
  is how victims recycle their memory -- or, with ``madvise_vma_lock`` (6.17), for a range inside
  one vma, under that vma's per-VMA read lock without mmap_lock (MADV_FREE too). MADV_FREE (4.5) is accepted on private
  anonymous memory only (EINVAL on shared, file-backed and VM_LOCKED vmas) and, with no memory
  pressure, changes nothing visible: lazily freed pages stay mapped until reclaim.
* MADV_NORMAL/SEQUENTIAL/RANDOM, DONTFORK/DOFORK, DONTDUMP/DODUMP, WIPEONFORK/KEEPONFORK (4.14),
  MERGEABLE/UNMERGEABLE and HUGEPAGE/NOHUGEPAGE change vm_flags (VM_SEQ_READ, VM_RAND_READ,
  VM_DONTCOPY, VM_DONTDUMP, VM_WIPEONFORK, VM_MERGEABLE, VM_HUGEPAGE, VM_NOHUGEPAGE: smaps
  VmFlags sr rr dc dd wf mg hg nh), splitting and merging vmas as mprotect does
  (madvise_update_vma(); a split beyond max_map_count is EAGAIN). They take mmap_sem for write.
  Refusals: DOFORK on VM_IO, WIPEONFORK on a file or shared vma, KEEPONFORK and DODUMP on
  VM_DROPPABLE, DODUMP on VM_SPECIAL: EINVAL. MERGEABLE leaves KSM-incompatible vmas (shared,
  VM_IO/PFNMAP/MIXEDMAP/DONTEXPAND, VM_DROPPABLE) as they are. The model has no fork, coredump,
  KSM daemon or THP faults, so these flags are state only (a VM_HUGEPAGE vma whose aligned 2 MiB
  range is touched gets one huge page on Linux here; the model faults small pages).
* MADV_WILLNEED on a file vma reads the range into the page cache (the model marks it cached at
  once; Linux starts the read and does not wait). MADV_COLD and MADV_PAGEOUT (5.4) refuse
  VM_LOCKED and VM_PFNMAP vmas (EINVAL). COLD changes nothing the model shows; PAGEOUT reclaims
  the clean page-cache pages -- of a disk file, of tmpfs/memfd, of shared anonymous memory --
  that the range maps and nothing else maps (reclaim_pages(): the pte goes and the page leaves
  the cache, so mincore says 0); dirty pages (written through a mapping: the model knows it from
  the ptes that map them now) only start writeback or, for shmem, stay, and private anonymous
  pages stay (this machine has no swap).
* MADV_REMOVE punches a hole in the file behind a shared writable mapping (shmem, or a disk file
  system with FALLOC_FL_PUNCH_HOLE): VM_LOCKED is EINVAL, no file behind a private anonymous
  vma is EINVAL, a vma that is not shared-and-may-write is EACCES. The pages of the range leave
  every shared mapping of the file in this mm; a tmpfs file loses them from its page cache. On
  the disk's ext4 (large folios) a punch inside a folio zeroes it and keeps it cached, which is
  what mincore shows here, so a disk file keeps its cache.
* MADV_GUARD_INSTALL / MADV_GUARD_REMOVE (6.13, ``madv_guard``): see :mod:`mmlab.mm.guard`.
  Install refuses VM_SPECIAL and VM_LOCKED vmas (EINVAL), zaps the pages of the range and puts a
  marker on each; remove refuses only VM_SPECIAL (a VM_LOCKED range may lose its guards).
* MADV_POPULATE_READ/WRITE (5.14, profiles with ``populate_skips_inaccessible``) fault pages in
  address order, under mmap_sem read, and stop at the first failure: a hole is ENOMEM, a vma
  without the access asked for (or PROT_NONE) EINVAL, a page that faults with a signal (a guard,
  beyond EOF) EFAULT; the pages before it stay populated. A disk wait drops the read lock and
  re-takes it (``populate_fault_retry``), looking the vma up again by address. The mappings of
  the range when the call starts are what it asked to populate (its targets); each page gets its
  grade (gup.populate_marks()) when it is faulted in.

mincore() reports, per page, a present pte -- or, for a file vma, a page of the file in the page
cache, however it got there (another mapping, read-ahead, MADV_WILLNEED), as mincore_page() does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from mmlab.errors import EACCES, EAGAIN, EFAULT, EINVAL, ENOMEM, SIGBUS, SIGSEGV, err
from mmlab.flags import (
    MADV_COLD, MADV_DODUMP, MADV_DOFORK, MADV_DONTDUMP, MADV_DONTFORK, MADV_DONTNEED,
    MADV_DONTNEED_LOCKED, MADV_FREE, MADV_GUARD_INSTALL, MADV_GUARD_REMOVE, MADV_HUGEPAGE,
    MADV_KEEPONFORK, MADV_MERGEABLE, MADV_NOHUGEPAGE, MADV_PAGEOUT, MADV_POPULATE_READ,
    MADV_POPULATE_WRITE, MADV_REMOVE, MADV_UNMERGEABLE, MADV_WILLNEED, MADV_WIPEONFORK, PAGE_SIZE,
    TASK_SIZE, VM_DONTCOPY, VM_DONTDUMP, VM_DONTEXPAND, VM_DROPPABLE, VM_EXEC, VM_HUGEPAGE, VM_IO,
    VM_LOCKED, VM_MAYBE_GUARD, VM_MAYSHARE, VM_MAYWRITE, VM_MERGEABLE, VM_MIXEDMAP, VM_NOHUGEPAGE, VM_PFNMAP,
    VM_RAND_READ, VM_READ, VM_SEQ_READ, VM_SHARED, VM_SPECIAL, VM_WIPEONFORK, VM_WRITE,
)
from mmlab.mm.guard import guard_install, guard_remove
from mmlab.mm.pagetable import PTE_FILE, PTE_WRITTEN
from mmlab.mm.gup import mark_at, note_replaced, populate_marks
from mmlab.mm.memory import VM_FAULT_RETRY, handle_mm_fault
from mmlab.mm.vma import Vma, anon_vma_prepare, check_range_mapped, vma_modify_flags

if TYPE_CHECKING:
    from mmlab.kernels import Kernel
    from mmlab.mm.mm_struct import MM, CallInfo

__all__ = ["sys_madvise", "sys_mincore", "madvise_behavior_valid", "vma_is_anonymous"]

MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL = 0, 1, 2

# advices that change vm_flags through madvise_update_vma(), under mmap_sem held for write
_UPDATES_VMA = {MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_DONTFORK, MADV_DOFORK,
                MADV_DONTDUMP, MADV_DODUMP, MADV_WIPEONFORK, MADV_KEEPONFORK, MADV_MERGEABLE,
                MADV_UNMERGEABLE, MADV_HUGEPAGE, MADV_NOHUGEPAGE}
_ALWAYS = {MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED, MADV_DONTNEED, MADV_REMOVE,
           MADV_DONTFORK, MADV_DOFORK, MADV_MERGEABLE, MADV_UNMERGEABLE, MADV_HUGEPAGE,
           MADV_NOHUGEPAGE, MADV_DONTDUMP, MADV_DODUMP}
_KSM_INCOMPATIBLE = VM_SHARED | VM_MAYSHARE | VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_MIXEDMAP | VM_DROPPABLE


def madvise_behavior_valid(k: "Kernel", advice: int) -> bool:
    """madvise_behavior_valid() of the profile's kernel."""
    if advice in _ALWAYS:
        return True
    return {
        MADV_FREE: k.madv_free,
        MADV_WIPEONFORK: k.madv_wipeonfork, MADV_KEEPONFORK: k.madv_wipeonfork,
        MADV_COLD: k.madv_cold_pageout, MADV_PAGEOUT: k.madv_cold_pageout,
        MADV_POPULATE_READ: k.populate_skips_inaccessible, MADV_POPULATE_WRITE: k.populate_skips_inaccessible,
        MADV_DONTNEED_LOCKED: k.madv_dontneed_locked,
        MADV_GUARD_INSTALL: k.madv_guard, MADV_GUARD_REMOVE: k.madv_guard,
    }.get(advice, False)


def vma_is_anonymous(vma: Vma) -> bool:
    """vma_is_anonymous(): private anonymous memory (a shared anonymous vma is shmem)."""
    return vma.file is None and not vma.flags & VM_MAYSHARE


def sys_madvise(mm: "MM", start: int, length: int, advice: int) -> int:
    """do_madvise()."""
    call = mm.begin_call("madvise", (start, length, advice))
    try:
        if not madvise_behavior_valid(mm.kernel, advice) or start & (PAGE_SIZE - 1):
            raise err(EINVAL, "madvise")
        end = start + ((length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
        if end >= 1 << 64:  # PAGE_ALIGN(len) or start + len wrapped
            raise err(EINVAL, "madvise")
        if end == start:
            mm.end_call(call, 0)
            return 0
        k = mm.kernel
        if advice in (MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE) and k.madvise_vma_lock \
                and k.per_vma_lock:
            e = _dontneed_free_vma_locked(mm, start, end, advice)
            if e is not None:
                if e:
                    raise err(e, "madvise")
                mm.end_call(call, 0)
                return 0
        write = advice in _UPDATES_VMA
        if write:
            mm.mmap_write_lock()
        else:
            mm.mmap_read_lock()
        try:
            if advice in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
                for _s, _e, o in mm.origins.ranges(start, end):  # what the call asks for, under the lock
                    call.targets.add(o.oid)
                e = _madvise_populate(mm, call, start, end, advice == MADV_POPULATE_WRITE)
            else:
                e = _madvise_walk_vmas(mm, start, end, _visitor(mm, call, advice))
        finally:
            if write:
                mm.mmap_write_unlock()
            else:
                mm.mmap_read_unlock()
        if e:
            raise err(e, "madvise")
    except BaseException as ex:
        mm.end_call(call, ex)
        raise
    mm.end_call(call, 0)
    return 0


def _madvise_walk_vmas(mm: "MM", start: int, end: int, visit: Callable[[Vma, int, int], int]) -> int:
    """madvise_walk_vmas(): visit the mapped part of every vma in [start, end) in order; stop at
    the first errno a visit returns; ENOMEM at the end if there was a hole. Returns an errno or 0."""
    unmapped = 0
    vma = mm.vmas.find_vma(start)
    while True:
        if vma is None:
            return ENOMEM
        if start < vma.start:
            unmapped = ENOMEM
            start = vma.start
            if start >= end:
                break
        part_end = min(vma.end, end)
        e = visit(vma, start, part_end)
        if e:
            return e
        if part_end >= end:
            break
        start = part_end
        vma = mm.vmas.find_vma(start)
    return unmapped


Visit = Callable[[Vma, int, int], int]


def _visitor(mm: "MM", call: "CallInfo", advice: int) -> Visit:
    """madvise_vma_behavior() for one advice: a function of (vma, start, end) -> errno or 0."""
    if advice in (MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE):
        return lambda v, s, e: _dontneed_free(mm, v, s, e, advice)
    if advice == MADV_WILLNEED:
        return lambda v, s, e: _willneed(v, s, e)
    if advice == MADV_COLD:
        return lambda v, s, e: EINVAL if v.flags & (VM_LOCKED | VM_PFNMAP) else 0
    if advice == MADV_PAGEOUT:
        return lambda v, s, e: _pageout(mm, v, s, e)
    if advice == MADV_REMOVE:
        return lambda v, s, e: _remove(mm, v, s, e)
    if advice == MADV_GUARD_INSTALL:
        return lambda v, s, e: _guard_install(mm, v, s, e)
    if advice == MADV_GUARD_REMOVE:
        return lambda v, s, e: _guard_remove(mm, v, s, e)
    return lambda v, s, e: _update_vma(mm, v, s, e, advice)


def _new_flags(vma: Vma, advice: int) -> int:
    """The vm_flags madvise_vma_behavior() gives *vma* for a flag-changing advice, or -errno."""
    f = vma.flags
    if advice == MADV_NORMAL:
        return f & ~(VM_RAND_READ | VM_SEQ_READ)
    if advice == MADV_SEQUENTIAL:
        return (f & ~VM_RAND_READ) | VM_SEQ_READ
    if advice == MADV_RANDOM:
        return (f & ~VM_SEQ_READ) | VM_RAND_READ
    if advice == MADV_DONTFORK:
        return f | VM_DONTCOPY
    if advice == MADV_DOFORK:
        return -EINVAL if f & VM_IO else f & ~VM_DONTCOPY
    if advice == MADV_WIPEONFORK:  # anonymous memory only
        return -EINVAL if vma.file is not None or f & VM_SHARED else f | VM_WIPEONFORK
    if advice == MADV_KEEPONFORK:
        return -EINVAL if f & VM_DROPPABLE else f & ~VM_WIPEONFORK
    if advice == MADV_DONTDUMP:
        return f | VM_DONTDUMP
    if advice == MADV_DODUMP:
        return -EINVAL if f & (VM_SPECIAL | VM_DROPPABLE) else f & ~VM_DONTDUMP
    if advice == MADV_MERGEABLE:  # ksm_madvise(): incompatible vmas keep their flags
        return f if f & _KSM_INCOMPATIBLE else f | VM_MERGEABLE
    if advice == MADV_UNMERGEABLE:
        return f & ~VM_MERGEABLE
    if advice == MADV_HUGEPAGE:  # hugepage_madvise()
        return (f & ~VM_NOHUGEPAGE) | VM_HUGEPAGE
    assert advice == MADV_NOHUGEPAGE
    return (f & ~VM_HUGEPAGE) | VM_NOHUGEPAGE


def _update_vma(mm: "MM", vma: Vma, start: int, end: int, advice: int) -> int:
    """madvise_update_vma(): split and merge so that [start, end) gets the new flags."""
    newflags = _new_flags(vma, advice)
    if newflags < 0:
        return -newflags
    if newflags == vma.flags:
        return 0
    splits = (vma.start < start) + (vma.end > end)
    if splits and mm.map_count + splits > mm.max_map_count:
        return EAGAIN  # split_vma()'s -ENOMEM, which madvise reports as EAGAIN
    vma_modify_flags(mm, vma, start, end, newflags)
    return 0


def _dontneed_free(mm: "MM", vma: Vma, start: int, end: int, advice: int) -> int:
    """madvise_dontneed_free(): the vma checks, then zap (DONTNEED) or lazy free (FREE)."""
    forbidden = VM_PFNMAP | (0 if advice == MADV_DONTNEED_LOCKED else VM_LOCKED)
    if vma.flags & forbidden:
        return EINVAL
    if advice == MADV_FREE:
        return 0 if vma_is_anonymous(vma) else EINVAL  # madvise_free_single_vma()
    from mmlab.mm.mmap import zap_detached
    zap_detached(mm, [Vma(start, end, vma.flags, vma.file)])
    return 0


def _dontneed_free_vma_locked(mm: "MM", start: int, end: int, advice: int) -> Optional[int]:
    """try_vma_read_lock() + madvise_dontneed_free() (6.17, ``madvise_vma_lock``): a range inside
    one vma is handled under that vma's read lock, without mmap_lock. Returns the errno (0: done),
    or None to fall back to mmap_read_lock() (no vma at *start*, the range runs past it, or the
    vma is being modified)."""
    vma = mm.vmas.lookup_rcu(start)
    if vma is None or not mm.vma_locks.start_read(vma):
        return None
    try:
        if vma.detached or not (vma.start <= start and end <= vma.end):
            return None
        return _dontneed_free(mm, vma, start, end, advice)
    finally:
        mm.vma_locks.end_read(vma)


def _pageout(mm: "MM", vma: Vma, start: int, end: int) -> int:
    """madvise_pageout(): reclaim what can be reclaimed without swap -- clean page-cache (or
    shmem) pages mapped only here."""
    if vma.flags & (VM_LOCKED | VM_PFNMAP):
        return EINVAL
    if vma_is_anonymous(vma):
        return 0  # no swap
    f = vma.file
    gone = []
    for addr, st, _task, _call in mm.pt.iter_present(start, end):
        if (f is None or st & PTE_FILE) and not st & PTE_WRITTEN:
            pgoff = vma.file_pgoff(addr)
            if not _mapped_elsewhere(mm, vma, pgoff, addr):
                gone.append((addr, pgoff))
    from mmlab.mm.mmap import zap_detached
    for addr, pgoff in gone:
        zap_detached(mm, [Vma(addr, addr + PAGE_SIZE, vma.flags, f)])
        if f is not None:
            f.cache[pgoff] = 0
        else:  # a clean page of shared anonymous memory leaves its shmem object too
            mm.shmem_cache.get(vma.anon_vma, set()).discard(pgoff)
    return 0


def _mapped_elsewhere(mm: "MM", vma: Vma, pgoff: int, here: int) -> bool:
    """Does a present pte other than the one at *here* map page *pgoff* of *vma*'s file (or
    shmem object) (folio_mapcount)?"""
    f = vma.file
    for v in mm.vmas:
        same = v.file is f if f is not None else (v.file is None and v.anon_vma == vma.anon_vma)
        if same and v.pgoff <= pgoff < v.pgoff + v.pages:
            a = v.start + ((pgoff - v.pgoff) << 12)
            if a != here and mm.pt.present(a) and v.file_pgoff(a) == pgoff:
                return True
    return False


def _willneed(vma: Vma, start: int, end: int) -> int:
    """madvise_willneed(): read a file vma's range into the page cache (vfs_fadvise WILLNEED)."""
    f = vma.file
    if f is None or getattr(f, "tmpfs", False):
        return 0  # anonymous memory and shmem: swap-in only, and there is no swap here
    lo = vma.file_pgoff(start)
    hi = min(f.npages, lo + ((end - start) >> 12))
    if hi > lo:
        f.cache[lo:hi] = b"\x01" * (hi - lo)
    return 0


def _remove(mm: "MM", vma: Vma, start: int, end: int) -> int:
    """madvise_remove(): punch a hole in the file behind a shared writable mapping."""
    if vma.flags & VM_LOCKED:
        return EINVAL
    if vma_is_anonymous(vma):
        return EINVAL  # no file
    if (vma.flags & (VM_SHARED | VM_MAYWRITE)) != VM_SHARED | VM_MAYWRITE:
        return EACCES
    from mmlab.mm.mmap import zap_detached
    f = vma.file
    lo = vma.file_pgoff(start)
    hi = lo + ((end - start) >> 12)
    # unmap_mapping_range(): every shared mapping of the punched file range loses its pages
    pieces = []
    for v in mm.vmas:
        if v.flags & VM_SHARED and (v.file is f if f is not None else v.anon_vma == vma.anon_vma):
            a = max(v.start, v.start + ((lo - v.pgoff) << 12))
            b = min(v.end, v.start + ((hi - v.pgoff) << 12))
            if a < b:
                pieces.append(Vma(a, b, v.flags, v.file))
    zap_detached(mm, pieces)
    if f is None:  # shared anonymous memory: the pages leave its shmem object
        mm.shmem_cache.get(vma.anon_vma, set()).difference_update(range(lo, hi))
    if f is not None:
        for p in range(lo, min(hi, f.npages)):
            f.data.pop(p, None)
        if f.tmpfs:
            n = max(0, min(hi, f.npages) - lo)
            f.cache[lo:lo + n] = bytes(n)
    return 0


def _guard_install(mm: "MM", vma: Vma, start: int, end: int) -> int:
    """madvise_guard_install(): zap the range, then put a guard marker on every page."""
    if vma.flags & (VM_SPECIAL | VM_LOCKED):
        return EINVAL
    anon_vma_prepare(vma)  # the range is no longer empty from the page table's point of view
    vma.flags |= VM_MAYBE_GUARD  # the whole vma, no split: smaps "gu", sticky, ignored by merges
    from mmlab.mm.mmap import zap_detached
    zap_detached(mm, [Vma(start, end, vma.flags, vma.file)])
    guard_install(mm.guards, start, end)
    return 0


def _guard_remove(mm: "MM", vma: Vma, start: int, end: int) -> int:
    """madvise_guard_remove(): clear the markers; allowed on VM_LOCKED vmas (non-destructive)."""
    if vma.flags & VM_SPECIAL:
        return EINVAL
    guard_remove(mm.guards, start, end)
    return 0


def _madvise_populate(mm: "MM", call: "CallInfo", start: int, end: int, write: bool) -> int:
    """madvise_populate(): faultin_page_range() in address order; returns the errno where it
    stopped (ENOMEM at a hole, EINVAL at a vma it may not fault, EFAULT at a signal) or 0."""
    retry = mm.kernel.populate_fault_retry
    dropped = False

    def unlock() -> None:
        nonlocal dropped
        dropped = True
        mm.mmap_read_unlock()

    addr = start
    vma: Optional[Vma] = None
    spans: list = []
    while addr < end:
        if vma is None or addr >= vma.end:
            vma = mm.vmas.vma_lookup(addr)
            if vma is None:
                return ENOMEM
            f = vma.flags
            if not f & (VM_READ | VM_WRITE | VM_EXEC) or (write and not f & VM_WRITE) \
                    or (not write and not f & VM_READ):
                return EINVAL
            spans = populate_marks(mm, call, addr, min(end, vma.end))  # lineage holds still until a drop
        mark, origin = mark_at(spans, addr)
        try:
            r = handle_mm_fault(mm, vma, addr, write, call.call_id, call.task_index, populate=True,
                                unlock=unlock if retry else None, mark=mark)
        except (SIGSEGV, SIGBUS):
            if dropped:  # the caller unlocks what it locked
                mm.mmap_read_lock(how="retake")
            return EFAULT
        if r == VM_FAULT_RETRY:  # the lock was dropped for a disk read: take it, look up again
            dropped = False
            call.io_waits += 1
            mm.mmap_read_lock(how="retake")
            call.retakes += 1
            vma = None
            continue
        if mark and r:
            note_replaced(call, origin, mark, r)
        addr += PAGE_SIZE
    return 0


def sys_mincore(mm: "MM", start: int, length: int) -> bytes:
    """mincore(): one byte per page, 1 if resident: a present pte, or for a file vma a page of
    the file in the page cache (mincore_page())."""
    if start & (PAGE_SIZE - 1):
        raise err(EINVAL, "mincore")
    length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    end = start + length
    if end > TASK_SIZE or end < start:
        raise err(ENOMEM, "mincore")
    if not length:
        return b""
    mm.mmap_read_lock()
    try:
        vmas = check_range_mapped(mm, start, end)
        if not vmas:
            raise err(ENOMEM, "mincore")
        vec = mm.pt.mincore(start, end)
        for v in vmas:
            if v.file is not None:
                vec = _page_cache(vec, start, v, max(start, v.start), min(end, v.end))
            elif v.flags & VM_SHARED:
                vec = _shmem_cache(vec, start, mm.shmem_cache.get(v.anon_vma, set()), v,
                                   max(start, v.start), min(end, v.end))
        return vec
    finally:
        mm.mmap_read_unlock()


def _shmem_cache(vec: bytes, base: int, pages: set[int], vma: Vma, start: int, end: int) -> bytes:
    """OR in the pages of a shared anonymous vma's shmem object (mincore_page() of its file):
    they stay after MADV_DONTNEED or a partial munmap took their ptes."""
    i, n = (start - base) >> 12, (end - start) >> 12
    lo = vma.file_pgoff(start)
    part = bytes(vec[i + k] | (lo + k in pages) for k in range(n))
    return vec[:i] + part + vec[i + n:]


def _page_cache(vec: bytes, base: int, vma: Vma, start: int, end: int) -> bytes:
    """OR the page-cache residency of *vma*'s file into vec[start - base: end - base]."""
    f = vma.file
    i, n = (start - base) >> 12, (end - start) >> 12
    if vma.nonlinear is None:
        lo = vma.file_pgoff(start)
        cached = bytes(f.cache[lo:lo + n]).ljust(n, b"\x00")
    else:
        cached = bytes(f.cache[p] if p < f.npages else 0
                       for p in (vma.file_pgoff(start + (k << 12)) for k in range(n)))
    part = bytes(a | b for a, b in zip(vec[i:i + n], cached))
    return vec[:i] + part + vec[i + n:]
