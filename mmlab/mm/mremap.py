"""mremap() (mm/mremap.c).

sys_mremap() takes mmap_sem for write and does one of four things:

* shrink: unmap the tail [addr+new_len, addr+old_len) (with ``munmap_downgrade``, 4.20+, the zap
  runs after downgrade_write(), under the read lock, as the kernel's shrink path does);
* grow in place, when [addr, addr+old_len) ends its vma and the hole after it is big enough: the
  vma is expanded (and merged with the next vma when they now touch and match);
* move (MREMAP_MAYMOVE, or MREMAP_FIXED to a chosen address, unmapping whatever is there):
  move_vma() makes a new vma at the destination, moves the page-table entries with their
  provenance (``mm.pt.move``) and unmaps the old range. The moved mapping is a replacement at
  its destination: it gets a new vm_id and a new Origin;
* MREMAP_DONTUNMAP (``mremap_dontunmap``, 5.7+): a move that leaves the old vma in place, empty
  and unlocked.

Growth of a VM_LOCKED vma populates the new tail [new_addr+old_len, new_addr+new_len). Before
the series (v3.7) move_vma() and the in-place path called mlock_vma_pages_range() under the write
lock; with ``mremap_populate_after_unlock`` (patch 6) they only set ``locked`` and sys_mremap()
calls mm_populate() after up_write(). Growth beyond RLIMIT_MEMLOCK (no CAP_IPC_LOCK) is EAGAIN
(vma_to_resize(), unchanged by the series).

Errors follow LTP mremap01-05 and kselftest mremap_test: unknown flags, MREMAP_FIXED without
MREMAP_MAYMOVE, MREMAP_DONTUNMAP with a size change, an unaligned old or new address, new_len 0,
overlapping old and new ranges with MREMAP_FIXED, and duplicating (old_len 0) a private mapping
are EINVAL; no vma at old_addr, or an old range running past its vma, is EFAULT; growth that
cannot be done in place without MREMAP_MAYMOVE is ENOMEM, and so is running out of room or out
of max_map_count.

Differences from Linux, on purpose:
* the model checks everything before it changes anything. Linux's MREMAP_FIXED unmaps the
  destination (and the tail of a shrinking source) before it looks at the source vma, so a
  failing call there may already have unmapped them; here a failing call changes nothing;
* every profile checks old_addr up front (EFAULT), as 6.x does; v3.7 let a shrink of an unmapped
  range succeed silently. Every profile refuses to duplicate a private mapping (4.17+);
* with ``mremap_move_multi_vma`` (6.17) an MREMAP_FIXED move without a size change may span
  several vmas and the holes between them (remap_move()); before, and for every other mremap,
  an old range running past its vma is EFAULT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from mmlab.errors import EAGAIN, EFAULT, EINVAL, ENOMEM, err
from mmlab.flags import (MAP_PRIVATE, MAP_SHARED, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, PAGE_SIZE, TASK_SIZE,
                         VM_LOCKED, VM_LOCKONFAULT, VM_MAYSHARE, VM_PFNMAP, VM_SHARED, page_align)
from mmlab.mm.gup import mm_populate, populate_range_locked
from mmlab.mm.guard import guard_move
from mmlab.mm.mmap import check_unmap, detach_range, get_unmapped_area, zap_detached
from mmlab.mm.vma import Vma, vma_modify_flags

if TYPE_CHECKING:
    from mmlab.mm.mm_struct import MM, CallInfo

__all__ = ["sys_mremap"]

_LOCK_BITS = VM_LOCKED | VM_LOCKONFAULT


class _Result:
    """What the locked part of mremap hands back: the address, the range to populate after
    the lock is dropped, and the mode the lock is held in now ("W", or "R" after a downgrade)."""

    __slots__ = ("addr", "populate", "mode")

    def __init__(self, addr: int) -> None:
        self.addr = addr
        self.populate: Optional[tuple[int, int]] = None
        self.mode = "W"


def sys_mremap(mm: "MM", addr: int, old_len: int, new_len: int, flags: int, new_addr: int) -> int:
    """sys_mremap()."""
    call = mm.begin_call("mremap", (addr, old_len, new_len, flags, new_addr))
    k = mm.kernel
    try:
        known = MREMAP_MAYMOVE | MREMAP_FIXED | (MREMAP_DONTUNMAP if k.mremap_dontunmap else 0)
        if flags & ~known:
            raise err(EINVAL, "mremap")
        if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
            raise err(EINVAL, "mremap")
        if flags & MREMAP_DONTUNMAP and (not flags & MREMAP_MAYMOVE or old_len != new_len):
            raise err(EINVAL, "mremap")
        if addr & (PAGE_SIZE - 1):
            raise err(EINVAL, "mremap")
        old_len = page_align(old_len)
        new_len = page_align(new_len)
        if not new_len or new_len >= 1 << 64:
            raise err(EINVAL, "mremap")
        mm.mmap_write_lock()
        res: Optional[_Result] = None
        try:
            res = _mremap_locked(mm, call, addr, old_len, new_len, flags, new_addr)
        finally:
            if res is not None and res.mode == "R":
                mm.mmap_read_unlock()
            else:
                mm.mmap_write_unlock()
        if res.populate is not None:
            mm_populate(mm, res.populate[0], res.populate[1], call)
    except BaseException as e:
        mm.end_call(call, e)
        raise
    mm.end_call(call, res.addr)
    return res.addr


def _mremap_locked(mm: "MM", call: "CallInfo", addr: int, old_len: int, new_len: int, flags: int,
                   new_addr: int) -> _Result:
    """The body of sys_mremap(); called with mmap_sem held for write."""
    if flags & (MREMAP_FIXED | MREMAP_DONTUNMAP):
        _check_new_addr(addr, old_len, new_addr, new_len)  # EINVAL comes before EFAULT
    vma = mm.vmas.vma_lookup(addr)
    if vma is None:
        raise err(EFAULT, "mremap")
    if flags & MREMAP_FIXED and old_len == new_len and addr + old_len > vma.end \
            and mm.kernel.mremap_move_multi_vma:
        return _remap_move(mm, call, addr, old_len, new_addr, flags)
    if flags & (MREMAP_FIXED | MREMAP_DONTUNMAP):
        return _mremap_to(mm, call, addr, old_len, new_addr, new_len, flags)
    if old_len >= new_len:  # always allow a shrinking remap: that just unmaps the tail
        res = _Result(addr)
        if old_len == new_len:
            return res
        check_unmap(mm, addr + new_len, addr + old_len)
        pieces = detach_range(mm, addr + new_len, addr + old_len)
        if pieces and mm.kernel.munmap_downgrade:
            mm.mmap_write_downgrade()
            res.mode = "R"
        zap_detached(mm, pieces)
        return res
    _vma_to_resize(mm, vma, addr, old_len, new_len, flags)
    delta = new_len - old_len
    if old_len == vma.end - addr and _vma_expandable(mm, vma, delta):
        return _expand_in_place(mm, call, vma, addr, old_len, new_len)
    if not flags & MREMAP_MAYMOVE:
        raise err(ENOMEM, "mremap")
    dest = _get_unmapped_area(mm, vma, addr, new_len, 0)
    _check_move_vma(mm)
    return _move_vma(mm, call, vma, addr, old_len, new_len, dest, flags)


def _get_unmapped_area(mm: "MM", vma: Vma, addr: int, length: int, hint: int) -> int:
    """get_unmapped_area() for the moved mapping: its file, pgoff and sharing decide the
    placement as they do for mmap (THP alignment included)."""
    pgoff = vma.pgoff + ((addr - vma.start) >> 12)
    return get_unmapped_area(mm, vma.file, hint, length, pgoff,
                             MAP_SHARED if vma.flags & VM_MAYSHARE else MAP_PRIVATE)


def _remap_move(mm: "MM", call: "CallInfo", addr: int, length: int, new_addr: int, flags: int) -> _Result:
    """remap_move() (6.17, ``mremap_move_multi_vma``): MREMAP_FIXED without a size change moves
    every vma of [addr, addr+len) -- split at the ends as needed -- each to new_addr plus its
    distance from the first, so the holes between them stay holes (only each moved piece's
    destination is unmapped). No vma at addr is EFAULT (checked by the caller). The vmas move
    one by one: one that fails stops the call, the ones before it moved."""
    end = addr + length
    res: Optional[_Result] = None
    target = new_addr
    last_end = 0
    pos = addr
    while pos < end:
        vma = mm.vmas.find_vma(pos)
        if vma is None or vma.start >= end:
            break
        a = max(vma.start, pos)
        n = min(end, vma.end) - a
        offset = vma.start - last_end if res is not None else 0
        last_end = vma.end
        r = _mremap_to(mm, call, a, n, target + offset, n, flags)
        if res is None:
            res = r
        target = r.addr + n
        pos = a + n
    assert res is not None
    return res


def _vma_to_resize(mm: "MM", vma: Vma, addr: int, old_len: int, new_len: int, flags: int) -> None:
    """vma_to_resize(): may [addr, addr+old_len) of *vma* become new_len long? Raises if not."""
    if not old_len and not vma.flags & (VM_SHARED | VM_MAYSHARE):
        raise err(EINVAL, "mremap")  # duplicating a private mapping makes no sense (4.17+)
    if flags & MREMAP_DONTUNMAP and vma.flags & VM_PFNMAP:
        raise err(EINVAL, "mremap")
    if old_len > vma.end - addr:  # we can't remap across vm area boundaries
        raise err(EFAULT, "mremap")
    if new_len == old_len:
        return
    if vma.pgoff + ((addr - vma.start) >> 12) + (new_len >> 12) >= 1 << 64:
        raise err(EINVAL, "mremap")
    if vma.flags & VM_PFNMAP:
        raise err(EFAULT, "mremap")
    if not mm.mlock_future_ok(vma.flags, new_len - old_len):
        raise err(EAGAIN, "mremap")


def _vma_expandable(mm: "MM", vma: Vma, delta: int) -> bool:
    """vma_expandable(): the hole after *vma* holds *delta* more bytes, inside TASK_SIZE."""
    end = vma.end + delta
    nxt = mm.vmas.next(vma)
    if nxt is not None and nxt.start < end:
        return False
    return end <= TASK_SIZE


def _check_move_vma(mm: "MM") -> None:
    """move_vma()'s first check: stay 3 maps below max_map_count, since the unmap of the old
    range may split a vma in three."""
    if mm.map_count >= mm.max_map_count - 3:
        raise err(ENOMEM, "mremap")


def _expand_in_place(mm: "MM", call: "CallInfo", vma: Vma, addr: int, old_len: int,
                     new_len: int) -> _Result:
    """The in-place growth of sys_mremap() (vma_merge_extend() in 6.x, vma_adjust() in 3.x)."""
    res = _Result(addr)
    delta = new_len - old_len
    pages = delta >> 12
    old_end = vma.end
    mm.vma_start_write(vma)
    mm.vmas.rekey(vma, vma.start, old_end + delta)
    mm.origins.extend(old_end, old_end + delta, old_end - PAGE_SIZE)  # the same mapping, grown
    mm.total_vm += pages
    locked = bool(vma.flags & VM_LOCKED)
    if locked:
        mm.locked_vm += pages
    vma = mm.vmas.try_merge(vma)
    if locked:
        _populate_tail(mm, call, res, addr, old_len, new_len)
    return res


def _check_new_addr(addr: int, old_len: int, new_addr: int, new_len: int) -> None:
    """The new_addr checks of mremap_to() (3.x) / check_mremap_params() (6.x): made before the
    vma at addr is looked up, so an overlap is EINVAL even when nothing is mapped at addr."""
    if new_addr & (PAGE_SIZE - 1):
        raise err(EINVAL, "mremap")
    if new_len > TASK_SIZE or new_addr > TASK_SIZE - new_len:
        raise err(EINVAL, "mremap")
    if addr + old_len > new_addr and new_addr + new_len > addr:  # old and new overlap
        raise err(EINVAL, "mremap")


def _mremap_to(mm: "MM", call: "CallInfo", addr: int, old_len: int, new_addr: int, new_len: int,
               flags: int) -> _Result:
    """mremap_to(): MREMAP_FIXED (and MREMAP_DONTUNMAP). Every check first, then the unmaps."""
    _check_new_addr(addr, old_len, new_addr, new_len)
    if mm.map_count + 2 >= mm.max_map_count - 3:
        raise err(ENOMEM, "mremap")
    fixed = bool(flags & MREMAP_FIXED)
    if fixed and new_addr <= addr < new_addr + new_len:
        # Only with old_len 0 does this pass the overlap check: unmapping the destination
        # would remove the source, and vma_to_resize() then finds nothing there.
        raise err(EFAULT, "mremap")
    if fixed:
        check_unmap(mm, new_addr, new_addr + new_len)
    shrink = old_len > new_len
    if shrink:
        check_unmap(mm, addr + new_len, addr + old_len)
        eff_old = new_len
    else:
        eff_old = old_len
    vma = mm.vmas.vma_lookup(addr)
    assert vma is not None
    _vma_to_resize(mm, vma, addr, eff_old, new_len, flags)
    if fixed:
        dest = new_addr
    else:  # MREMAP_DONTUNMAP alone: new_addr is a hint
        dest = _get_unmapped_area(mm, vma, addr, new_len, new_addr)
    _check_move_vma(mm)
    # Nothing can fail from here on.
    if fixed:
        zap_detached(mm, detach_range(mm, new_addr, new_addr + new_len))
    if shrink:
        zap_detached(mm, detach_range(mm, addr + new_len, addr + old_len))
    vma = mm.vmas.vma_lookup(addr)  # the unmaps may have split it
    assert vma is not None
    return _move_vma(mm, call, vma, addr, eff_old, new_len, dest, flags)


def _move_vma(mm: "MM", call: "CallInfo", vma: Vma, old_addr: int, old_len: int, new_len: int,
              new_addr: int, flags: int) -> _Result:
    """move_vma(): copy_vma() at *new_addr*, move_page_tables(), unmap the old range (unless
    MREMAP_DONTUNMAP, or old_len is 0: a duplicate of a shared mapping). Called with mmap_sem
    held for write, after every check passed."""
    res = _Result(new_addr)
    vm_flags = vma.flags
    locked = bool(vm_flags & VM_LOCKED)
    mm.vma_start_write(vma)
    new_pgoff = vma.pgoff + ((old_addr - vma.start) >> 12)
    if vma.file is None and not vm_flags & VM_MAYSHARE and not vma.anon_vma:
        new_pgoff = new_addr >> 12  # copy_vma(): never faulted, so it may merge where it lands
    new = Vma(new_addr, new_addr + new_len, vm_flags, vma.file, new_pgoff, vma.name)
    new.anon_vma = vma.anon_vma
    if vma.nonlinear is not None:
        shift = (new_addr - old_addr) >> 12
        lo, hi = old_addr >> 12, (old_addr + old_len) >> 12
        new.nonlinear = {p + shift: o for p, o in vma.nonlinear.items() if lo <= p < hi}
    if mm.kernel.per_vma_lock:
        new.vm_lock_seq = mm.vma_locks.mm_lock_seq
    # move_page_tables(): the ptes go with their provenance
    if old_len:
        mm.pt.move(old_addr, new_addr, old_len)
        if mm.guards:  # guard markers are ptes: they move with the page tables
            guard_move(mm.guards, old_addr, new_addr, old_len)
    if flags & MREMAP_DONTUNMAP:
        # The old range stays mapped, empty; VM_LOCKED[ONFAULT] is cleared on the whole old
        # vma, without a split (vm_flags_clear(vma, VM_LOCKED_MASK), as `mmlab diff` saw
        # 6.18 do). Linux leaves locked_vm alone there; the model keeps its accounting exact.
        if vma.flags & VM_LOCKED:
            mm.locked_vm -= vma.pages
        mm.vma_start_write(vma)
        vma.flags &= ~_LOCK_BITS
        mm.pt.set_mlocked(vma.start, vma.end, False)
    elif old_len:
        zap_detached(mm, detach_range(mm, old_addr, old_addr + old_len))
    mm.vmas.insert(new)
    mm.total_vm += new_len >> 12
    if locked:
        mm.locked_vm += new_len >> 12
    grows = locked and new_len > old_len and not vm_flags & VM_LOCKONFAULT
    origin = mm.origins.new(call.call_id, "mremap", grows, call.task)  # a replacement here
    mm.origins.assign(new_addr, new_addr + new_len, origin)
    call.targets.add(origin.oid)
    merged = mm.vmas.try_merge(new)
    if merged is not new:
        mm.vma_start_write(merged)
    if locked:
        _populate_tail(mm, call, res, new_addr, old_len, new_len)
    return res


def _populate_tail(mm: "MM", call: "CallInfo", res: _Result, new_addr: int, old_len: int,
                   new_len: int) -> None:
    """Growth of a VM_LOCKED vma: fault in [new_addr+old_len, new_addr+new_len) -- now, under
    the write lock (v3.7's mlock_vma_pages_range()), or after up_write() (patch 6)."""
    if new_len <= old_len:
        return
    start, end = new_addr + old_len, new_addr + new_len
    vma = mm.vmas.vma_lookup(start)
    if vma is None or vma.flags & VM_LOCKONFAULT:
        return
    for _, _, o in mm.origins.ranges(start, end):
        o.asked_populate = True
        call.targets.add(o.oid)
    if mm.kernel.mremap_populate_after_unlock:
        res.populate = (start, end - start)
    else:
        populate_range_locked(mm, vma, start, end, call)
