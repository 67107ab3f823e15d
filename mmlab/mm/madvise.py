"""madvise() and mincore() (mm/madvise.c, mm/mincore.c).

madvise(MADV_DONTNEED) zaps pages under mmap_sem held for read (it never changes vmas), which
is how victims recycle their memory; with ``madvise_vma_lock`` (6.17) a range inside one vma is
zapped under that vma's per-VMA read lock instead, and mmap_lock is not taken at all.
MADV_POPULATE_READ/WRITE (5.14, profiles with ``populate_skips_inaccessible``) fault pages in
and, unlike MAP_POPULATE, report errors; a disk wait drops the read lock and re-takes it
(``populate_fault_retry``).
mincore() reports residency under the read lock. Both check the whole range for holes before
touching anything (Linux applies madvise to the mapped parts first; see the documented
differences of `mmlab diff`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmlab.errors import EINVAL, ENOMEM, EFAULT, err
from mmlab.flags import (MADV_DONTNEED, MADV_POPULATE_READ, MADV_POPULATE_WRITE, PAGE_SIZE, TASK_SIZE,
                         VM_LOCKED, VM_PFNMAP, VM_READ, VM_WRITE, VM_EXEC, Madv)
from mmlab.mm.gup import POPULATE_CHUNK  # noqa: F401  (documented unit)
from mmlab.mm.memory import VM_FAULT_RETRY, handle_mm_fault
from mmlab.mm.vma import check_range_mapped

if TYPE_CHECKING:
    from mmlab.mm.mm_struct import MM, CallInfo

__all__ = ["sys_madvise", "sys_mincore"]

_KNOWN = {int(a) for a in Madv}


def sys_madvise(mm: "MM", start: int, length: int, advice: int) -> int:
    call = mm.begin_call("madvise", (start, length, advice))
    try:
        if start & (PAGE_SIZE - 1) or advice not in _KNOWN:
            raise err(EINVAL, "madvise")
        if advice in (MADV_POPULATE_READ, MADV_POPULATE_WRITE) and not mm.kernel.populate_skips_inaccessible:
            raise err(EINVAL, "madvise")
        length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        end = start + length
        if end < start or end > TASK_SIZE:
            raise err(EINVAL if end < start else ENOMEM, "madvise")
        if not length:
            mm.end_call(call, 0)
            return 0
        if advice == MADV_DONTNEED and mm.kernel.madvise_vma_lock and mm.kernel.per_vma_lock \
                and _dontneed_vma_locked(mm, start, end):
            mm.end_call(call, 0)
            return 0
        mm.mmap_read_lock()
        try:
            # Linux walks the vmas in order (madvise_walk_vmas): a VM_LOCKED vma fails with
            # EINVAL even after a hole, a hole only makes the final result ENOMEM; populate
            # stops at the first hole (ENOMEM) or incompatible vma (EINVAL), whichever is first
            vmas = check_range_mapped(mm, start, end)
            if advice == MADV_DONTNEED and any(v.flags & (VM_LOCKED | VM_PFNMAP) for v in mm.vmas.range(start, end)):
                raise err(EINVAL, "madvise")
            if advice in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
                _populate_precheck(mm, start, end, advice == MADV_POPULATE_WRITE)
            if not vmas:
                raise err(ENOMEM, "madvise")
            if advice == MADV_DONTNEED:
                from mmlab.mm.mmap import zap_detached
                from mmlab.mm.vma import Vma
                parts = []
                for v in vmas:
                    p = Vma(max(start, v.start), min(end, v.end), v.flags, v.file)
                    parts.append(p)
                zap_detached(mm, parts)
            elif advice in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
                _madvise_populate(mm, call, start, end, advice == MADV_POPULATE_WRITE)
        finally:
            mm.mmap_read_unlock()
    except BaseException as e:
        mm.end_call(call, e)
        raise
    mm.end_call(call, 0)
    return 0


def _dontneed_vma_locked(mm: "MM", start: int, end: int) -> bool:
    """try_vma_read_lock() + madvise_dontneed_free() (6.17, ``madvise_vma_lock``): a range inside
    one vma is zapped under that vma's read lock, without mmap_lock. False: fall back to
    mmap_read_lock() (no vma at *start*, the range runs past it, or it is being modified)."""
    vma = mm.vmas.lookup_rcu(start)
    if vma is None or not mm.vma_locks.start_read(vma):
        return False
    try:
        if vma.detached or not (vma.start <= start and end <= vma.end):
            return False
        if vma.flags & (VM_LOCKED | VM_PFNMAP):
            raise err(EINVAL, "madvise")
        from mmlab.mm.mmap import zap_detached
        from mmlab.mm.vma import Vma
        zap_detached(mm, [Vma(start, end, vma.flags, vma.file)])
        return True
    finally:
        mm.vma_locks.end_read(vma)


def _madvise_populate(mm: "MM", call: "CallInfo", start: int, end: int, write: bool) -> None:
    """madvise_populate() / faultin_page_range(): fault [start, end) in, page by page, with the
    read lock held on entry and on return. With ``populate_fault_retry`` a fault that waits for
    the disk drops mmap_lock (VM_FAULT_RETRY); the loop takes it again and looks the vma up
    again by address, so a cold file gives one read hold per disk wait, as Linux's does."""
    retry = mm.kernel.populate_fault_retry
    dropped = False

    def unlock() -> None:
        nonlocal dropped
        dropped = True
        mm.mmap_read_unlock()

    a = start
    v = None
    while a < end:
        if v is None or a >= v.end:
            v = mm.vmas.vma_lookup(a)
            if v is None:  # the range changed while the lock was dropped
                raise err(ENOMEM, "madvise")
            _populate_precheck(mm, a, min(end, v.end), write)
        try:
            r = handle_mm_fault(mm, v, a, write, call.call_id, call.task_index, populate=True,
                                unlock=unlock if retry else None)
        except Exception:
            if dropped:
                mm.mmap_read_lock(how="retake")
            raise err(EFAULT, "madvise") from None
        if r == VM_FAULT_RETRY:
            dropped = False
            call.io_waits += 1
            mm.mmap_read_lock(how="retake")
            call.retakes += 1
            v = None
            continue
        a += PAGE_SIZE


def _populate_precheck(mm: "MM", start: int, end: int, write: bool) -> None:
    """The first failure madvise_populate() meets in address order: ENOMEM at a hole, EINVAL at
    a vma that the populate may not fault (PROT_NONE, or without the access asked for)."""
    pos = start
    for v in mm.vmas.range(start, end):
        if v.start > pos:
            raise err(ENOMEM, "madvise")
        if not v.flags & (VM_READ | VM_WRITE | VM_EXEC) or (write and not v.flags & VM_WRITE) \
                or (not write and not v.flags & VM_READ):
            raise err(EINVAL, "madvise")
        pos = v.end
    if pos < end:
        raise err(ENOMEM, "madvise")


def sys_mincore(mm: "MM", start: int, length: int) -> bytes:
    """mincore(): one byte per page, 1 if resident."""
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
        if not check_range_mapped(mm, start, end):
            raise err(ENOMEM, "mincore")
        return mm.pt.mincore(start, end)
    finally:
        mm.mmap_read_unlock()
