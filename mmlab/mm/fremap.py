"""remap_file_pages() (mm/fremap.c before 4.0, its emulation in mm/mmap.c since).

remap_file_pages(start, size, 0, pgoff, flags) makes [start, start+size) of a shared file
mapping show the file from page *pgoff* on. Three implementations, chosen by profile switches:

**v3.x, a truly nonlinear vma** (tmpfs files: ``File(tmpfs=True)``). Under the read lock the vma
is found; a remap that changes nothing (pgoff is already the linear offset) succeeds at once.
Otherwise the lock is upgraded (up_read, down_write, look again) to set VM_NONLINEAR; then the
ptes of the range are replaced by file ptes (``Vma.nonlinear``: page -> file pgoff) -- the pages
are zapped, a later fault or populate reads them from the new offsets.

**v3.x, emulated with a linear vma** (regular files: their bdi accounts dirty pages, and
page_mkclean() cannot handle nonlinear vmas): mmap_region() over the range, a new vma mapping
the file at *pgoff* -- a replacement mapping.

**4.0+ emulation** (``fremap_emulated``): always do_mmap(MAP_SHARED|MAP_FIXED|MAP_POPULATE, plus
MAP_LOCKED if the vma is VM_LOCKED, plus the caller's MAP_NONBLOCK) of an ordinary vma with the
old vma's protection, after checking under the write lock that the vma did not change since it
was looked up under the read lock; then mm_populate() after the unlock.

Populating, the part the series changed:

* v3.7 (no ``fremap_fixes``): the nonlinear path populates iff !MAP_NONBLOCK -- so a VM_LOCKED vma
  remapped with MAP_NONBLOCK is left with its remapped range not present (bug 2 of patch 2). The
  emulated path populates iff the vma is VM_LOCKED, ignoring MAP_ANONYMOUS, MAP_NONBLOCK, because mmap_region()
  was never passed MAP_POPULATE (the same bug's other half). And on an already nonlinear
  VM_LOCKED vma, munlock_vma_pages_range() clears VM_LOCKED for a moment with only the read lock
  held (bug 1): a fault racing with it maps a page that is never mlocked.
* ``fremap_fixes`` (patch 2): munlock under the write lock; populate (and lock) if VM_LOCKED, else
  populate iff !MAP_NONBLOCK, on both paths.
* Where: without ``fremap_populate_after_unlock`` a VM_LOCKED vma is populated under whatever lock
  is held (mlock_vma_pages_range()), any other is populated after downgrade_write() under the read
  lock, without dropping it for I/O (make_pages_present()); the emulated path populates inside
  mmap_region(), under the write lock. With it (patch 4) the lock is dropped and mm_populate()
  runs, taking the read lock and dropping it at each disk wait.
* ``vm_populate`` (patch 9): a blocking call marks the vma VM_POPULATE (under the write lock).

Errors: prot != 0, a range that wraps or is empty, no vma at start, a vma that is not shared, and
a range running past its vma are EINVAL. A difference from Linux: the model's MAP_SHARED
anonymous memory has no shmem file behind it, so remap_file_pages() on it is EINVAL here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmlab.clock import hooks
from mmlab.errors import EINVAL, err
from mmlab.flags import (MAP_ANONYMOUS, MAP_FIXED, MAP_LOCKED, MAP_NONBLOCK, MAP_POPULATE, MAP_SHARED, PAGE_SIZE,
                         PROT_EXEC, PROT_READ, PROT_WRITE, VM_EXEC, VM_LOCKED, VM_NONLINEAR,
                         VM_POPULATE, VM_READ, VM_SHARED, VM_WRITE)
from mmlab.mm.gup import mm_populate, populate_range_locked
from mmlab.mm.mmap import check_unmap, do_mmap, mmap_region
from mmlab.mm.vma import Vma

if TYPE_CHECKING:
    from mmlab.mm.mm_struct import MM, CallInfo

__all__ = ["sys_remap_file_pages"]


def sys_remap_file_pages(mm: "MM", start: int, size: int, prot: int, pgoff: int, flags: int) -> int:
    """SYSCALL_DEFINE5(remap_file_pages)."""
    call = mm.begin_call("remap_file_pages", (start, size, prot, pgoff, flags))
    try:
        if prot:
            raise err(EINVAL, "remap_file_pages")
        start &= ~(PAGE_SIZE - 1)
        size &= ~(PAGE_SIZE - 1)
        if start + size <= start or start + size >= 1 << 64:  # wraps, or is empty
            raise err(EINVAL, "remap_file_pages")
        if pgoff < 0 or pgoff + (size >> 12) >= 1 << 64:  # pgoff wraps
            raise err(EINVAL, "remap_file_pages")
        if mm.kernel.fremap_emulated:
            _remap_emulated(mm, call, start, size, pgoff, flags)
        else:
            _remap_v3(mm, call, start, size, pgoff, flags)
    except BaseException as e:
        mm.end_call(call, e)
        raise
    mm.end_call(call, 0)
    return 0


# ---------------------------------------------------------------------------- 4.0+ emulation
def _remap_emulated(mm: "MM", call: "CallInfo", start: int, size: int, pgoff: int, flags: int) -> None:
    """The 4.0+ syscall: look up under the read lock, re-check under the write lock, do_mmap().

    A MAP_SHARED|MAP_ANONYMOUS vma has a file too in Linux (its shmem object, shmem_zero_setup()),
    so it can be remapped: the model maps the range shared and anonymous again and gives it the
    old vma's shmem identity (``anon_vma``) at the new page offset."""
    mm.mmap_read_lock()
    try:
        vma = mm.vmas.vma_lookup(start)
        if vma is None or not vma.flags & VM_SHARED:
            raise err(EINVAL, "remap_file_pages")
        shmem_id = vma.anon_vma if vma.file is None else None
        prot = (PROT_READ if vma.flags & VM_READ else 0) | (PROT_WRITE if vma.flags & VM_WRITE else 0) | \
            (PROT_EXEC if vma.flags & VM_EXEC else 0)
        mflags = (flags & MAP_NONBLOCK) | MAP_SHARED | MAP_FIXED | MAP_POPULATE
        if vma.flags & VM_LOCKED:
            mflags |= MAP_LOCKED
        vm_flags = vma.flags
        file = vma.file
    finally:
        mm.mmap_read_unlock()
    populate = 0
    mm.mmap_write_lock()
    try:
        vma = mm.vmas.vma_lookup(start)
        # Make sure things didn't change under us.
        if vma is None or vma.flags != vm_flags or vma.file is not file:
            raise err(EINVAL, "remap_file_pages")
        if start + size > vma.end:  # the range may span several vmas of the same file and flags
            prev = vma
            for nxt in mm.vmas.range(vma.end, start + size):
                if nxt.start != prev.end or nxt.file is not file or nxt.flags != vm_flags or \
                        (file is None and nxt.anon_vma != shmem_id):
                    raise err(EINVAL, "remap_file_pages")
                prev = nxt
            if prev.end < start + size:
                raise err(EINVAL, "remap_file_pages")
        if file is None:
            ret, populate = do_mmap(mm, call, start, size, prot, mflags | MAP_ANONYMOUS, None, 0)
            new = mm.vmas.vma_lookup(start)
            new.anon_vma, new.pgoff = shmem_id, pgoff
            merged = mm.vmas.try_merge(new)
            if merged is not new:
                mm.vma_start_write(merged)
            # the populate faults only pages inside the shmem object; beyond its size: SIGBUS,
            # which populate ignores
            inside = mm.shmem_pages.get(shmem_id, 0) - pgoff
            populate = min(populate, max(0, inside) * PAGE_SIZE)
        else:
            ret, populate = do_mmap(mm, call, start, size, prot, mflags, file, pgoff)
    finally:
        mm.mmap_write_unlock()
    if populate:
        mm_populate(mm, ret, populate, call)


# ---------------------------------------------------------------------------- v3.x
def _remap_v3(mm: "MM", call: "CallInfo", start: int, size: int, pgoff: int, flags: int) -> None:
    """The v3.7 .. v3.19 syscall, with the series' patches 2, 4 and 9 as switches."""
    k = mm.kernel
    end = start + size
    nonblock = bool(flags & MAP_NONBLOCK)
    has_write = False
    vm_flags = 0
    mm.mmap_read_lock()
    try:
        while True:  # retry: after the lock upgrade everything is looked up again
            vma = mm.vmas.find_vma(start)
            # The vma must be shared, support remapping, and hold the whole range.
            if vma is None or not vma.flags & VM_SHARED or vma.file is None:
                raise err(EINVAL, "remap_file_pages")
            if start < vma.start or end > vma.end:
                raise err(EINVAL, "remap_file_pages")
            if not vma.flags & VM_NONLINEAR:
                if pgoff == vma.pgoff + ((start - vma.start) >> 12):
                    vm_flags = vma.flags  # nothing to remap: exit success
                    break
                if not has_write:
                    has_write = _upgrade(mm)
                    continue
                if vma.file.account_dirty:
                    vm_flags = vma.flags  # mmap_region may free vma; grab the info now
                    _remap_emulated_v3(mm, call, vma, start, size, pgoff, nonblock)
                    break
                mm.vma_start_write(vma)
                vma.flags |= VM_NONLINEAR
                vma.nonlinear = {}
            if k.vm_populate and not nonblock and not vma.flags & VM_POPULATE:
                if not has_write:
                    has_write = _upgrade(mm)
                    continue
                mm.vma_start_write(vma)
                vma.flags |= VM_POPULATE
            if vma.flags & VM_LOCKED:
                if k.fremap_fixes and not has_write:  # patch 2: munlock needs the write lock
                    has_write = _upgrade(mm)
                    continue
                _munlock_range(mm, vma, start, end)
            _remap_pages(mm, vma, start, end, pgoff)
            for _, _, o in mm.origins.ranges(start, end):
                call.targets.add(o.oid)
            vm_flags = vma.flags
            if not k.fremap_populate_after_unlock:
                has_write = _populate_nonlinear_v37(mm, call, vma, start, end, nonblock, has_write)
            break
    finally:
        if has_write:
            mm.mmap_write_unlock()
        else:
            mm.mmap_read_unlock()
    # patch 4: populate after the lock is dropped
    if k.fremap_populate_after_unlock and (vm_flags & VM_LOCKED or not nonblock):
        mm_populate(mm, start, size, call)


def _upgrade(mm: "MM") -> bool:
    """up_read(); down_write(): not atomic -- anything may happen in between."""
    mm.mmap_read_unlock()
    mm.mmap_write_lock()
    return True


def _munlock_range(mm: "MM", vma: Vma, start: int, end: int) -> None:
    """munlock_vma_pages_range() with vm_flags saved and restored around it, as fremap.c does:
    VM_LOCKED is off meanwhile. In v3.7 the caller may hold only the read lock (bug 1 of
    patch 2), so a concurrent fault can see the vma unlocked."""
    saved = vma.flags
    vma.flags = saved & ~VM_LOCKED
    mm.pt.set_mlocked(start, end, False)
    hp = hooks.schedule_point
    if hp is not None:
        hp("fremap_munlock", vma)
    vma.flags = saved


def _remap_pages(mm: "MM", vma: Vma, start: int, end: int, pgoff: int) -> None:
    """generic_file_remap_pages(): install_file_pte() on each page -- zap what is mapped there,
    leave a file pte naming the new offset."""
    n, _ = mm.pt.zap(start, end)
    if n:
        mm.clock.spend(mm.costs.cost("zap_file_page", n), "zap")
    nl = vma.nonlinear
    assert nl is not None
    linear = vma.pgoff - (vma.start >> 12)  # file pgoff of page p is p + linear when linear
    p0 = start >> 12
    for i in range((end - start) >> 12):
        p = p0 + i
        if pgoff + i == p + linear:
            nl.pop(p, None)
        else:
            nl[p] = pgoff + i


def _populate_nonlinear_v37(mm: "MM", call: "CallInfo", vma: Vma, start: int, end: int,
                            nonblock: bool, has_write: bool) -> bool:
    """v3.7's populate at the end of the nonlinear path, under the lock still held. Returns
    whether the write lock is still held."""
    locked = bool(vma.flags & VM_LOCKED)
    if mm.kernel.fremap_fixes:
        populate = locked or not nonblock
    else:
        populate = not nonblock  # bug: MAP_NONBLOCK leaves even a VM_LOCKED vma unpopulated
    if not populate:
        return has_write
    if locked:
        populate_range_locked(mm, vma, start, end, call)  # mlock_vma_pages_range(), lock as held
        return has_write
    if has_write:
        mm.mmap_write_downgrade()
    populate_range_locked(mm, vma, start, end, call)  # make_pages_present() under the read lock
    return False


def _remap_emulated_v3(mm: "MM", call: "CallInfo", vma: Vma, start: int, size: int, pgoff: int,
                       nonblock: bool) -> None:
    """The v3.x emulation for files whose dirty pages are accounted: mmap_region() over the
    range with the old vma's flags. Called with mmap_sem held for write."""
    k = mm.kernel
    vm_flags = vma.flags
    if k.vm_populate and not nonblock:
        vm_flags |= VM_POPULATE
    locked = bool(vm_flags & VM_LOCKED)
    if k.fremap_fixes:
        populate = locked or not nonblock  # MAP_POPULATE is passed, with the caller's MAP_NONBLOCK
    else:
        populate = locked  # bug: mmap_region() is never passed MAP_POPULATE
    check_unmap(mm, start, start + size, extra=1)
    will_populate = populate if not k.fremap_populate_after_unlock else (locked or not nonblock)
    new = mmap_region(mm, call, vma.file, start, size, vm_flags, pgoff,
                      asked_populate=will_populate, kind="remap_file_pages")
    if populate and not k.fremap_populate_after_unlock:
        populate_range_locked(mm, new, start, start + size, call)  # inside mmap_region(), under W
