"""mlock, mlock2, munlock, mlockall, munlockall (mm/mlock.c).

The locking half runs under mmap_sem for write: apply_vma_lock_flags() / apply_mlockall_flags()
set VM_LOCKED (and VM_LOCKONFAULT, and in v3.9-rc1 VM_POPULATE) with vma splits and merges and
locked_vm accounting. The populating half runs after up_write(): __mm_populate(), which takes
the read lock and drops it at disk waits -- already so in v3.7 (since 2.6.38), which is why the
series reuses it as mm_populate().

Profile switches: ``mlockall_keeps_def_flags`` (patch 1: v3.7 overwrote def_flags with 0 or
VM_LOCKED), ``mlock_onfault`` (4.4: MLOCK_ONFAULT, MCL_ONFAULT; mlock2 is ENOSYS before it),
``vm_populate`` (patch 9: locking also sets VM_POPULATE).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from mmlab.errors import EAGAIN, EINVAL, ENOMEM, EPERM, EFAULT, err
from mmlab.flags import (MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT, PAGE_SIZE, TASK_SIZE,
                         VM_DROPPABLE, VM_LOCKED, VM_LOCKONFAULT, VM_POPULATE, VM_IO, VM_PFNMAP)
from mmlab.mm.gup import mm_populate
from mmlab.mm.vma import vma_modify_flags

if TYPE_CHECKING:
    from mmlab.mm.mm_struct import MM, CallInfo

__all__ = ["sys_mlock2", "sys_munlock", "sys_mlockall", "sys_munlockall"]

_LOCK_BITS = VM_LOCKED | VM_LOCKONFAULT


def _lock_bits(mm: "MM", onfault: bool) -> int:
    bits = VM_LOCKED | (VM_LOCKONFAULT if onfault else 0)
    if mm.kernel.vm_populate:
        bits |= VM_POPULATE
    return bits


def mlock_fixup(mm: "MM", call: "CallInfo", vma, start: int, end: int, newflags: int) -> None:
    """mlock_fixup(): change the lock bits of [start, end) in one vma; account locked_vm and
    mark (or unmark) the pages already present as mlocked."""
    old = vma.flags
    if old == newflags or old & (VM_IO | VM_PFNMAP | VM_DROPPABLE):  # VM_DROPPABLE: never locked
        return
    pages = (end - start) >> 12
    if newflags & VM_LOCKED and not old & VM_LOCKED:
        mm.locked_vm += pages
    elif not newflags & VM_LOCKED and old & VM_LOCKED:
        mm.locked_vm -= pages
    vma_modify_flags(mm, vma, start, end, newflags)
    mm.pt.set_mlocked(start, end, bool(newflags & VM_LOCKED))
    if newflags & VM_LOCKED and not newflags & VM_LOCKONFAULT:
        for s, e, o in mm.origins.ranges(start, end):
            o.asked_populate = True
            call.targets.add(o.oid)


def _apply_lock_flags(mm: "MM", call: "CallInfo", start: int, end: int, bits: int) -> None:
    """apply_vma_lock_flags(): called with mmap_sem held for write. No vma at start is ENOMEM
    with nothing changed; otherwise the vmas are (un)locked one by one, and a hole (or a split
    beyond max_map_count) stops the walk with ENOMEM, the vmas before it (un)locked -- and, for
    mlock, not populated: do_mlock() returns before __mm_populate()."""
    v = mm.vmas.vma_lookup(start)
    if v is None:
        raise err(ENOMEM, call.name)
    pos = start
    while pos < end:
        v = mm.vmas.find_vma(pos)
        if v is None or v.start >= end:
            break
        if v.start > pos:
            raise err(ENOMEM, call.name)  # a hole
        part_end = min(end, v.end)
        newflags = _new_lock_flags(v.flags, bits)
        if newflags != v.flags and not v.flags & (VM_IO | VM_PFNMAP | VM_DROPPABLE):
            splits = (v.start < pos) + (v.end > part_end)
            if splits and mm.map_count + splits > mm.max_map_count:  # split_vma() checks map_count
                raise err(ENOMEM, call.name)
        mlock_fixup(mm, call, v, pos, part_end, newflags)
        pos = part_end
    if pos < end:
        raise err(ENOMEM, call.name)


def _new_lock_flags(flags: int, bits: int) -> int:
    """The vma flags after (un)locking with *bits*; munlock keeps VM_POPULATE: the flag is never
    cleared (patch 9)."""
    return (flags & ~_LOCK_BITS) | bits


def _count_locked_pages(mm: "MM", start: int, end: int) -> int:
    """count_mm_mlocked_page_nr()."""
    n = 0
    for v in mm.vmas.range(start, end):
        if v.flags & VM_LOCKED:
            n += (min(end, v.end) - max(start, v.start)) >> 12
    return n


def sys_mlock2(mm: "MM", start: int, length: int, flags: int, name: str = "mlock2") -> int:
    """do_mlock(): lock under the write lock, then __mm_populate(ignore_errors=0)."""
    call = mm.begin_call(name, (start, length, flags))
    try:
        if name == "mlock2" and not mm.kernel.mlock_onfault:
            raise err(errno.ENOSYS, name)
        if flags & ~MLOCK_ONFAULT:
            raise err(EINVAL, name)
        if not mm.can_do_mlock():
            raise err(EPERM, name)
        length = (length + (start & (PAGE_SIZE - 1)) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        start &= ~(PAGE_SIZE - 1)
        end = start + length
        if end < start or end > TASK_SIZE:
            raise err(ENOMEM if end > TASK_SIZE else EINVAL, name)
        if not length:
            mm.end_call(call, 0)
            return 0
        onfault = bool(flags & MLOCK_ONFAULT)
        mm.mmap_write_lock()
        try:
            locked = (length >> 12) + mm.locked_vm
            limit = mm.rlimit_memlock >> 12
            if locked > limit and not mm.cap_ipc_lock:
                locked -= _count_locked_pages(mm, start, end)
            if locked > limit and not mm.cap_ipc_lock:
                raise err(ENOMEM, name)
            _apply_lock_flags(mm, call, start, end, _lock_bits(mm, onfault))
        finally:
            mm.mmap_write_unlock()
        # do_mlock() calls __mm_populate() for MLOCK_ONFAULT too; 6.x populate_vma_page_range()
        # skips the VM_LOCKONFAULT vmas, so that is a read hold that faults nothing
        if not onfault or mm.kernel.populate_skips_inaccessible:
            r = mm_populate(mm, start, length, call, ignore_errors=False)
            if r:
                raise err(ENOMEM if -r == EFAULT else EAGAIN if -r == ENOMEM else -r, name)
    except BaseException as e:
        mm.end_call(call, e)
        raise
    mm.end_call(call, 0)
    return 0


def sys_munlock(mm: "MM", start: int, length: int) -> int:
    call = mm.begin_call("munlock", (start, length))
    try:
        length = (length + (start & (PAGE_SIZE - 1)) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        start &= ~(PAGE_SIZE - 1)
        end = start + length
        if end < start or end > TASK_SIZE:
            raise err(ENOMEM if end > TASK_SIZE else EINVAL, "munlock")
        if length:
            mm.mmap_write_lock()
            try:
                _apply_lock_flags(mm, call, start, end, 0)
            finally:
                mm.mmap_write_unlock()
    except BaseException as e:
        mm.end_call(call, e)
        raise
    mm.end_call(call, 0)
    return 0


def sys_mlockall(mm: "MM", flags: int) -> int:
    """sys_mlockall(): apply_mlockall_flags() under the write lock, then mm_populate(0, TASK_SIZE)
    for MCL_CURRENT (with MCL_ONFAULT it faults nothing where ``populate_skips_inaccessible``;
    older profiles here skip the call)."""
    call = mm.begin_call("mlockall", (flags,))
    k = mm.kernel
    try:
        valid = MCL_CURRENT | MCL_FUTURE | (MCL_ONFAULT if k.mlock_onfault else 0)
        if not flags or flags & ~valid or flags == MCL_ONFAULT:
            raise err(EINVAL, "mlockall")
        if not mm.can_do_mlock():
            raise err(EPERM, "mlockall")
        onfault = bool(flags & MCL_ONFAULT)
        mm.mmap_write_lock()
        try:
            if flags & MCL_CURRENT and mm.total_vm > (mm.rlimit_memlock >> 12) and not mm.cap_ipc_lock:
                raise err(ENOMEM, "mlockall")
            _apply_mlockall_flags(mm, call, flags, onfault)
        finally:
            mm.mmap_write_unlock()
        if flags & MCL_CURRENT and (not onfault or k.populate_skips_inaccessible):
            mm_populate(mm, 0, TASK_SIZE, call)  # with MCL_ONFAULT: a read hold that skips every vma
    except BaseException as e:
        mm.end_call(call, e)
        raise
    mm.end_call(call, 0)
    return 0


def _apply_mlockall_flags(mm: "MM", call: "CallInfo", flags: int, onfault: bool) -> None:
    bits = _lock_bits(mm, onfault)
    if mm.kernel.mlockall_keeps_def_flags:
        mm.def_flags &= ~(_LOCK_BITS | VM_POPULATE)
        if flags & MCL_FUTURE:
            mm.def_flags |= bits
    else:  # v3.7: def_flags = 0 or VM_LOCKED, wiping e.g. s390's VM_NOHUGEPAGE
        mm.def_flags = bits if flags & MCL_FUTURE else 0
    if not flags & MCL_CURRENT:
        return
    for v in list(mm.vmas):
        if v.detached:
            continue
        mlock_fixup(mm, call, v, v.start, v.end, (v.flags & ~_LOCK_BITS) | bits)


def sys_munlockall(mm: "MM") -> int:
    call = mm.begin_call("munlockall", ())
    mm.mmap_write_lock()
    try:
        if mm.kernel.mlockall_keeps_def_flags:
            mm.def_flags &= ~(_LOCK_BITS | VM_POPULATE)
        else:  # v3.7: do_mlockall(0) sets def_flags = 0
            mm.def_flags = 0
        for v in list(mm.vmas):
            if v.detached:
                continue
            mlock_fixup(mm, call, v, v.start, v.end, v.flags & ~_LOCK_BITS)
    finally:
        mm.mmap_write_unlock()
    mm.end_call(call, 0)
    return 0
