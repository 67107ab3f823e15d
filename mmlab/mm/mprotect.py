"""mprotect() (mm/mprotect.c).

sys_mprotect() is do_mprotect_pkey(): validate, take mmap_sem for write, walk the vmas of
[start, end) and give each part its new protection with mprotect_fixup(), which splits and merges
through vma_modify_flags() (mm/vma.c). Present pages stay present: a PROT_NONE pte is still in
the page table, so mincore() and Rss still count it, as on Linux.

Errors, in Linux's order: both PROT_GROWSDOWN and PROT_GROWSUP, an unaligned start or unknown
prot bits give EINVAL; a length that wraps gives ENOMEM; then under the lock no vma at start, or a
hole inside the range, gives ENOMEM; a protection the vma may not have (VM_MAY* missing, e.g.
PROT_WRITE on a shared mapping of a file opened read-only) gives EACCES; PROT_GROWSDOWN on a vma
without VM_GROWSDOWN gives EINVAL, and PROT_GROWSUP always does (x86 has no VM_GROWSUP); a split
beyond max_map_count gives ENOMEM.

The vma walk changes the vmas one by one, as Linux does: a hole, a vma that refuses the
protection (EACCES) or a split beyond max_map_count stops it with that errno, and the vmas before
it keep their new protection. Only the checks made before the walk (the arguments, no vma at
start, PROT_GROWSDOWN/GROWSUP) leave everything as it was.

Profile switch: ``mprotect_populates_locked`` (v4.9, commit 36f881883c57): a private VM_LOCKED
vma that becomes writable is populated with write faults right away, under the write lock, so
that its COW is broken now rather than at first write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmlab.errors import EACCES, EINVAL, ENOMEM, err
from mmlab.flags import (PAGE_SIZE, PROT_EXEC, PROT_GROWSDOWN, PROT_GROWSUP, PROT_READ, PROT_WRITE,
                         VM_ACCOUNT, VM_EXEC, VM_GROWSDOWN, VM_LOCKED, VM_MAYSHARE, VM_NORESERVE, VM_READ,
                         VM_SHARED, VM_WRITE,
                         page_align)
from mmlab.mm.gup import populate_range_locked
from mmlab.mm.mmap import calc_vm_prot_bits
from mmlab.mm.vma import vma_modify_flags

if TYPE_CHECKING:
    from mmlab.mm.mm_struct import MM

__all__ = ["sys_mprotect", "mprotect_fixup"]

PROT_SEM = 0x8  # accepted by arch_validate_prot() and ignored
_RWX = VM_READ | VM_WRITE | VM_EXEC


def sys_mprotect(mm: "MM", start: int, length: int, prot: int) -> int:
    """do_mprotect_pkey()."""
    call = mm.begin_call("mprotect", (start, length, prot))
    try:
        grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP)
        prot &= ~grows
        if grows == PROT_GROWSDOWN | PROT_GROWSUP:
            raise err(EINVAL, "mprotect")
        if start & (PAGE_SIZE - 1):
            raise err(EINVAL, "mprotect")
        if not length:
            mm.end_call(call, 0)
            return 0
        length = page_align(length)
        end = start + length
        if end <= start or end >= 1 << 64:  # the unsigned sum wrapped
            raise err(ENOMEM, "mprotect")
        if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM):
            raise err(EINVAL, "mprotect")
        vm_prot = calc_vm_prot_bits(prot)
        mm.mmap_write_lock()
        try:
            _mprotect_locked(mm, call, start, end, vm_prot, grows)
        finally:
            mm.mmap_write_unlock()
    except BaseException as e:
        mm.end_call(call, e)
        raise
    mm.end_call(call, 0)
    return 0


def _mprotect_locked(mm: "MM", call, start: int, end: int, vm_prot: int, grows: int) -> None:
    """The vma walk of do_mprotect_pkey(); called with mmap_sem held for write. A failure part
    way leaves the vmas before it changed."""
    vma = mm.vmas.find_vma(start)
    if vma is None:
        raise err(ENOMEM, "mprotect")
    if grows & PROT_GROWSDOWN:
        if vma.start >= end:
            raise err(ENOMEM, "mprotect")
        start = vma.start
        if not vma.flags & VM_GROWSDOWN:
            raise err(EINVAL, "mprotect")
    else:
        if vma.start > start:
            raise err(ENOMEM, "mprotect")
        if grows & PROT_GROWSUP:
            raise err(EINVAL, "mprotect")  # no VM_GROWSUP on x86
    # for_each_vma_range(): each vma is checked and changed before the next is looked at
    pos = start
    while pos < end:
        v = mm.vmas.find_vma(pos)
        if v is None or v.start >= end:
            break
        if v.start > pos:
            raise err(ENOMEM, "mprotect")  # a hole: the vmas before it stay changed
        newflags = vm_prot | (v.flags & ~_RWX)
        if (newflags & ~(newflags >> 4)) & _RWX:  # VM_MAY* shifted onto VM_*
            raise err(EACCES, "mprotect")
        part_end = min(end, v.end)
        newflags = _account(v, newflags)
        if newflags != v.flags:
            splits = (v.start < pos) + (v.end > part_end)
            if splits and mm.map_count + splits > mm.max_map_count:
                raise err(ENOMEM, "mprotect")  # split_vma() at the limit
        mprotect_fixup(mm, call, v, pos, part_end, newflags)
        pos = part_end
    if pos < end:
        raise err(ENOMEM, "mprotect")


def _account(vma, newflags: int) -> int:
    """mprotect_fixup()'s accounting: private memory becoming writable is charged (VM_ACCOUNT);
    an anonymous vma that becomes read-only before it ever had a page (no anon_vma) gives the
    charge back. A vma that keeps VM_ACCOUNT no longer merges with an unaccounted neighbour
    (measured on 6.18: PROT_NONE -> RW -> PROT_NONE of one page merges back only if untouched)."""
    old = vma.flags
    if newflags & VM_WRITE:
        if not old & (VM_ACCOUNT | VM_WRITE | VM_SHARED | VM_NORESERVE):
            newflags |= VM_ACCOUNT
    elif old & VM_ACCOUNT and vma.file is None and not old & VM_MAYSHARE and not vma.anon_vma:
        newflags &= ~VM_ACCOUNT
    return newflags


def mprotect_fixup(mm: "MM", call, vma, start: int, end: int, newflags: int) -> None:
    """mprotect_fixup(): give [start, end) of one vma *newflags*; called with mmap_sem held for
    write, after the caller checked the splits fit."""
    oldflags = vma.flags
    if newflags == oldflags:
        return
    vma = vma_modify_flags(mm, vma, start, end, newflags)
    if mm.kernel.mprotect_populates_locked and \
            (oldflags & (VM_WRITE | VM_SHARED | VM_LOCKED)) == VM_LOCKED and newflags & VM_WRITE:
        for _s, _e, o in mm.origins.ranges(start, end):  # the mappings this call populates
            call.targets.add(o.oid)
        populate_range_locked(mm, vma, start, end, call)
