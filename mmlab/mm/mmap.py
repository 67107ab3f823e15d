"""mmap, munmap, brk and stack growth (mm/mmap.c, mm/util.c).

sys_mmap() is vm_mmap_pgoff(): take mmap_sem for write, do_mmap() (checks, get_unmapped_area,
mmap_region), and populate. Where the population runs is the heart of the series:

* ``populate_after_unlock`` off (v3.7): mmap_region() itself calls mlock_vma_pages_range() or
  make_pages_present() -- the whole range is faulted in with mmap_sem held for write;
* on (patch 3, v3.9+): do_mmap() only returns ``populate = len``; vm_mmap_pgoff() drops the write
  lock and then calls mm_populate(), under the read lock, dropping it at each disk wait.

munmap detaches the vmas under the write lock and zaps their pages; with ``munmap_downgrade``
(4.20+) the zap runs after downgrade_write(), under the read lock. brk growth under MCL_FUTURE
populates like mmap (``brk_populate_after_unlock``, patch 5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from mmlab.errors import (EACCES, EBADF, EEXIST, EINVAL, ENOMEM, EOVERFLOW, EAGAIN, EPERM, err)
from mmlab.flags import (
    MAP_ANONYMOUS, MAP_DROPPABLE, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_GROWSDOWN, MAP_LOCKED, MAP_NONBLOCK,
    MAP_NORESERVE, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MAP_SHARED_VALIDATE, PAGE_SIZE, PROT_EXEC,
    PROT_READ, PROT_WRITE, TASK_SIZE, VM_EXEC, VM_GROWSDOWN, VM_LOCKED, VM_LOCKONFAULT,
    VM_MAYEXEC, VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE, VM_NORESERVE, VM_POPULATE, VM_READ,
    VM_SHARED, VM_WRITE, VM_ACCOUNT, VM_DONTDUMP, VM_DROPPABLE, VM_WIPEONFORK, page_align,
)
from mmlab.mm.filemap import File
from mmlab.mm.gup import mm_populate, populate_range_locked
from mmlab.mm.guard import guard_remove
from mmlab.mm.pagetable import PTE_MLOCKED
from mmlab.mm.vma import Vma, shmem_zero_setup

if TYPE_CHECKING:
    from mmlab.kernels import Kernel
    from mmlab.mm.mm_struct import MM, CallInfo

__all__ = ["sys_mmap", "sys_munmap", "sys_brk", "do_mmap", "check_unmap", "detach_range",
           "zap_detached", "expand_stack", "calc_vm_prot_bits", "MAP_KNOWN"]

PROT_KNOWN = PROT_READ | PROT_WRITE | PROT_EXEC
MAP_KNOWN = (0x0F | MAP_FIXED | MAP_ANONYMOUS | MAP_GROWSDOWN | 0x0800 | 0x1000 | MAP_LOCKED |
             MAP_NORESERVE | MAP_POPULATE | MAP_NONBLOCK | 0x20000 | 0x40000 | 0x80000 | MAP_FIXED_NOREPLACE)
# LEGACY_MAP_MASK: what MAP_SHARED_VALIDATE accepts of a file without mmap_supported_flags (no
# MAP_SYNC, no MAP_FIXED_NOREPLACE): SHARED, PRIVATE, FIXED, ANONYMOUS, 32BIT, DENYWRITE,
# EXECUTABLE, GROWSDOWN, LOCKED, NORESERVE, POPULATE, NONBLOCK, STACK, HUGETLB, UNINITIALIZED,
# and the MAP_HUGE_ size bits
LEGACY_MAP_MASK = (0x03 | MAP_FIXED | MAP_ANONYMOUS | 0x40 | 0x0800 | 0x1000 | MAP_GROWSDOWN | MAP_LOCKED |
                   MAP_NORESERVE | MAP_POPULATE | MAP_NONBLOCK | 0x20000 | 0x40000 | 0x4000000 | (0x3F << 26))
PMD_SIZE = 1 << 21
_VM_DATA_DEFAULT = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC


def calc_vm_prot_bits(prot: int) -> int:
    return (VM_READ if prot & PROT_READ else 0) | (VM_WRITE if prot & PROT_WRITE else 0) | \
        (VM_EXEC if prot & PROT_EXEC else 0)


def sys_mmap(mm: "MM", addr: int, length: int, prot: int, flags: int, file: Optional[File],
             offset: int) -> int:
    """vm_mmap_pgoff()."""
    call = mm.begin_call("mmap", (addr, length, prot, flags, getattr(file, "name", None), offset))
    try:
        if offset & (PAGE_SIZE - 1):
            raise err(EINVAL, "mmap")
        if file is None and not flags & MAP_ANONYMOUS:  # ksys_mmap_pgoff(): fget(fd) comes first
            raise err(EBADF, "mmap")
        mm.mmap_write_lock()
        try:
            ret, populate = do_mmap(mm, call, addr, length, prot, flags, file, offset >> 12)
        finally:
            mm.mmap_write_unlock()
        if populate:
            mm_populate(mm, ret, populate, call)
    except BaseException as e:
        mm.end_call(call, e)
        raise
    mm.end_call(call, ret)
    return ret


def do_mmap(mm: "MM", call: "CallInfo", addr: int, length: int, prot: int, flags: int,
            file: Optional[File], pgoff: int, vm_extra: int = 0) -> tuple[int, int]:
    """do_mmap(): called with mmap_sem held for write. Returns (addr, bytes to populate after
    the lock is dropped). Raises OSError before changing anything."""
    k = mm.kernel
    if not length:
        raise err(EINVAL, "mmap")
    if prot & ~(PROT_KNOWN | 0x03000000):
        raise err(EINVAL, "mmap")
    maptype = flags & 0x0F
    length = page_align(length)
    if not length or length > TASK_SIZE:
        raise err(ENOMEM, "mmap")
    if pgoff + (length >> 12) > (1 << 52):
        raise err(EOVERFLOW, "mmap")
    if mm.map_count > mm.max_map_count:
        raise err(ENOMEM, "mmap")
    anon = bool(flags & MAP_ANONYMOUS)
    if not anon:
        if file is None:
            raise err(EBADF, "mmap")
    else:
        file = None
    vm_flags = calc_vm_prot_bits(prot) | mm.def_flags | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | vm_extra
    if flags & MAP_GROWSDOWN:
        vm_flags |= VM_GROWSDOWN
    if flags & MAP_LOCKED:
        vm_flags |= VM_LOCKED
        if k.vm_populate:
            vm_flags |= VM_POPULATE
    if k.vm_populate and (flags & (MAP_POPULATE | MAP_NONBLOCK)) == MAP_POPULATE:
        vm_flags |= VM_POPULATE
    if not k.mlock_onfault:
        vm_flags &= ~VM_LOCKONFAULT
    # placement (__get_unmapped_area(), then the MAP_FIXED_NOREPLACE check), before the
    # MAP_LOCKED, RLIMIT_MEMLOCK and map type / file mode checks, as do_mmap() orders them
    if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
        if addr & (PAGE_SIZE - 1):
            raise err(EINVAL, "mmap")
        if addr + length > TASK_SIZE or addr < mm.vmas.mmap_min_addr:
            raise err(ENOMEM if addr + length > TASK_SIZE else EPERM, "mmap")
        if flags & MAP_FIXED_NOREPLACE and not flags & MAP_FIXED:
            if mm.vmas.find_vma_intersection(addr, addr + length) is not None:
                raise err(EEXIST, "mmap")
    else:
        if file is None and length & (PMD_SIZE - 1):  # small anonymous: no THP alignment, one call less
            addr = mm.vmas.get_unmapped_area(length, addr)
        else:
            addr = get_unmapped_area(mm, file, addr, length, pgoff, flags)
    if flags & MAP_LOCKED and not mm.can_do_mlock():
        raise err(EPERM, "mmap")
    if not mm.mlock_future_ok(vm_flags, length):
        raise err(EAGAIN, "mmap")
    _check_map_type(k, maptype, flags, prot, file)
    if maptype == MAP_DROPPABLE:
        _droppable_checks(flags, vm_flags, anon)
        vm_flags |= VM_DROPPABLE | VM_NORESERVE | VM_WIPEONFORK | VM_DONTDUMP
    elif maptype != MAP_PRIVATE:
        vm_flags |= VM_SHARED | VM_MAYSHARE
        if file is not None and not file.writable:
            vm_flags &= ~(VM_MAYWRITE | VM_SHARED)
    if flags & MAP_NORESERVE:
        vm_flags |= VM_NORESERVE
    if vm_flags & (VM_NORESERVE | VM_SHARED | VM_WRITE) == VM_WRITE:  # accountable_mapping()
        vm_flags |= VM_ACCOUNT
    if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):  # mmap_region(): what it replaces, or ENOMEM
        hit = check_unmap(mm, addr, addr + length, extra=1)
    else:
        # a gap get_unmapped_area() found (THP-aligned inside a padded gap or not): nothing in it
        # to split or detach, so of check_unmap() only the map_count limit for the new vma is left
        if mm.map_count + 1 > mm.max_map_count:
            raise err(ENOMEM, "mmap")
        hit = []
    if anon and maptype != MAP_SHARED:  # private or droppable
        pgoff = addr >> 12
    elif anon:
        pgoff = 0  # a shared anonymous mapping is offset 0 of its own shmem file
    if vm_flags & VM_LOCKONFAULT:
        populate = 0
    elif k.vm_populate:
        populate = length if vm_flags & VM_POPULATE else 0
    elif vm_flags & VM_LOCKED or (flags & (MAP_POPULATE | MAP_NONBLOCK)) == MAP_POPULATE:
        populate = length
    else:
        populate = 0
    vma = mmap_region(mm, call, file, addr, length, vm_flags, pgoff, asked_populate=bool(populate), hit=hit)
    if populate and not k.populate_after_unlock:
        populate_range_locked(mm, vma, addr, addr + length, call)  # v3.7: under the write lock
        return addr, 0
    return addr, populate


EOPNOTSUPP_ = 95


def _check_map_type(k: "Kernel", maptype: int, flags: int, prot: int, file: Optional[File]) -> None:
    """do_mmap()'s switch on the map type, after placement: for a file, MAP_SHARED_VALIDATE
    refuses flags outside LEGACY_MAP_MASK (EOPNOTSUPP), and the open mode must allow the
    mapping (EACCES); anonymous memory knows MAP_SHARED, MAP_PRIVATE and (``map_droppable``)
    MAP_DROPPABLE (else EINVAL)."""
    if file is not None:
        if maptype not in (MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE):
            raise err(EINVAL, "mmap")
        if maptype == MAP_SHARED_VALIDATE and flags & ~LEGACY_MAP_MASK:
            raise err(EOPNOTSUPP_, "mmap")
        if maptype != MAP_PRIVATE and prot & PROT_WRITE and not file.writable:
            raise err(EACCES, "mmap")
        if not file.readable:
            raise err(EACCES, "mmap")
    elif maptype not in (MAP_SHARED, MAP_PRIVATE) and not (maptype == MAP_DROPPABLE and k.map_droppable):
        raise err(EINVAL, "mmap")


def _droppable_checks(flags: int, vm_flags: int, anon: bool) -> None:
    """do_mmap()'s MAP_DROPPABLE case (6.11, ``map_droppable``): anonymous memory only (a file is
    EINVAL), and neither locked, huge nor a stack. The vma gets VM_DROPPABLE, VM_NORESERVE,
    VM_WIPEONFORK and VM_DONTDUMP; mlock() leaves it unlocked (mlock_fixup())."""
    if not anon or flags & (MAP_LOCKED | MAP_HUGETLB_) or vm_flags & VM_GROWSDOWN:
        raise err(EINVAL, "mmap")


MAP_HUGETLB_ = 0x40000


def get_unmapped_area(mm: "MM", file: Optional[File], addr: int, length: int, pgoff: int,
                      flags: int) -> int:
    """__get_unmapped_area() without MAP_FIXED: where a new mapping of *length* goes.

    With ``thp_get_unmapped_area`` a mapping of a file on the disk's file system (ext4 here: its
    file_operations.get_unmapped_area is thp_get_unmapped_area) goes through
    __thp_get_unmapped_area(); tmpfs/memfd and shared anonymous memory (shmem_get_unmapped_area,
    huge=never here) do not. With ``thp_align_anon`` a hint-less private anonymous mapping whose
    length is a multiple of 2 MiB does too. Otherwise: the hint if it fits, else top-down."""
    k = mm.kernel
    if file is not None:
        if k.thp_get_unmapped_area and not file.tmpfs:
            r = _thp_get_unmapped_area(mm, addr, length, pgoff << 12)
            if r:
                return r
    elif k.thp_align_anon and not addr and not length & (PMD_SIZE - 1) and not flags & MAP_SHARED:
        r = _thp_get_unmapped_area(mm, 0, length, 0)
        if r:
            return r
    return mm.vmas.get_unmapped_area(length, addr)


def _thp_get_unmapped_area(mm: "MM", addr: int, length: int, off: int) -> int:
    """__thp_get_unmapped_area() (mm/huge_memory.c): when [off, off+len) holds a whole aligned
    2 MiB of the file, search for len + 2 MiB (at the hint if that much fits there, else top-down)
    and place the mapping so that the file offset and the address agree modulo 2 MiB. 0 if not
    applicable or nothing that long fits (the caller then searches for len alone)."""
    off_end = off + length
    off_align = (off + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    if off_end <= off_align or off_end - off_align < PMD_SIZE:
        return 0
    try:
        ret = mm.vmas.get_unmapped_area(length + PMD_SIZE, addr)
    except OSError:
        return 0
    if ret == addr:
        return addr  # the hint had room for the padded length: no alignment
    off_sub = (off - ret) & (PMD_SIZE - 1)
    if not off_sub:  # MMF_TOPDOWN: take the top of the padded gap
        return ret + PMD_SIZE
    return ret + off_sub


def mmap_region(mm: "MM", call: "CallInfo", file: Optional[File], addr: int, length: int,
                vm_flags: int, pgoff: int, asked_populate: bool, kind: str = "mmap",
                hit: Optional[list[Vma]] = None) -> Vma:
    """mmap_region(): replace whatever is in [addr, addr+len), insert and merge the new vma,
    account it. Called with mmap_sem held for write, after check_unmap() passed; *hit* is what
    check_unmap() returned (the vmas in the range), if nothing changed since."""
    end = addr + length
    if hit is None or hit:  # an empty range (a fresh gap) has nothing to detach or zap
        pieces = detach_range(mm, addr, end, hit)
        zap_detached(mm, pieces)  # the old mapping's pages go, under the write lock
    vma = Vma(addr, end, vm_flags, file, pgoff)
    if file is None and vm_flags & VM_SHARED:
        shmem_zero_setup(vma)
        mm.shmem_pages[vma.anon_vma] = length >> 12  # the object's size: mremap growth past it SIGBUSes
    vma.vm_lock_seq = mm.vma_locks.mm_lock_seq if mm.kernel.per_vma_lock else -1
    mm.vmas.insert(vma)
    mm.total_vm += length >> 12
    if vm_flags & VM_LOCKED:
        mm.locked_vm += length >> 12
    origin = mm.origins.new(call.call_id, kind, asked_populate, call.task)
    mm.origins.assign(addr, end, origin)
    call.targets.add(origin.oid)
    merged = mm.vmas.try_merge(vma)
    if merged is not vma:
        mm.vma_start_write(merged)
    return merged


def check_unmap(mm: "MM", start: int, end: int, extra: int = 0) -> list[Vma]:
    """The ENOMEM checks of do_vmi_munmap(), made before anything changes: an unmap that
    splits one vma in three fails at max_map_count ("make sure that map_count on return from
    munmap() will not exceed its limit; but let map_count go just above its limit temporarily");
    one that only trims vmas does not. *extra* counts the vma the caller (mmap_region) will add.
    Returns the vmas intersecting [start, end), for detach_range()."""
    hit = mm.vmas.range(start, end)
    splits = 0
    if hit:
        splits += hit[0].start < start
        splits += hit[-1].end > end
        if splits == 2 and len(hit) == 1 and mm.map_count >= mm.max_map_count:
            raise err(ENOMEM, "munmap")
    if extra and mm.map_count + splits - len(hit) + extra > mm.max_map_count:
        raise err(ENOMEM, "mmap")
    return hit


def detach_range(mm: "MM", start: int, end: int, hit: Optional[list[Vma]] = None) -> list[Vma]:
    """Split at the edges and detach every vma in [start, end) (vms_gather_munmap_vmas).
    *hit*: the vmas intersecting the range, as check_unmap() just returned them (else looked up)."""
    out: list[Vma] = []
    vmas = mm.vmas
    if hit is None:
        hit = vmas.range(start, end)
    if not hit:
        return out
    v = hit[0]
    if v.start < start:
        mm.vma_start_write(v)
        _, v = vmas.split(v, start)
        hit = [v, *hit[1:]]
    for v in hit:
        mm.vma_start_write(v)
        if v.end > end:
            v, _ = vmas.split(v, end)
        vmas.remove(v)
        mm.total_vm -= v.pages
        if v.flags & VM_LOCKED:
            mm.locked_vm -= v.pages
        out.append(v)
    mm.origins.clear(start, end)
    vmas.unmapped(start, end)
    if mm.guards:  # an unmap clears the guard markers with the page tables
        guard_remove(mm.guards, start, end)
    return out


def zap_detached(mm: "MM", pieces: list[Vma]) -> int:
    """unmap_region(): zap the pages of detached vmas, charging the zap cost. Returns pages."""
    total = 0
    costs = mm.costs
    for v in pieces:
        n, locked = mm.pt.zap(v.start, v.end)
        if not n:
            continue
        total += n
        if v.file is not None and v.flags & VM_SHARED:
            ns = costs.cost("zap_file_page", n)
        else:
            ns = costs.cost("zap_locked_page", locked) + costs.cost("zap_anon_page", n - locked)
        mm.clock.spend(ns, "zap")
    return total


def sys_munmap(mm: "MM", addr: int, length: int) -> int:
    """__vm_munmap(): detach under the write lock; zap under it, or after downgrade_write()."""
    call = mm.begin_call("munmap", (addr, length))
    try:
        if addr & (PAGE_SIZE - 1) or addr > TASK_SIZE or length > TASK_SIZE - addr:
            raise err(EINVAL, "munmap")
        length = page_align(length)
        if not length:
            raise err(EINVAL, "munmap")
        mm.mmap_write_lock()
        locked = "W"
        try:
            hit = check_unmap(mm, addr, addr + length)
            pieces = detach_range(mm, addr, addr + length, hit)
            if pieces and mm.kernel.munmap_downgrade:
                mm.mmap_write_downgrade()
                locked = "R"
            zap_detached(mm, pieces)
        finally:
            if locked == "W":
                mm.mmap_write_unlock()
            else:
                mm.mmap_read_unlock()
    except BaseException as e:
        mm.end_call(call, e)
        raise
    mm.end_call(call, 0)
    return 0


def sys_brk(mm: "MM", brk: int) -> int:
    """sys_brk(): returns the new break, or the old one on failure (brk never sets errno). A shrink
    zaps under the read lock after downgrade_write() with ``munmap_downgrade`` (4.20)."""
    call = mm.begin_call("brk", (brk,))
    k = mm.kernel
    populate = 0
    downgraded = False
    mm.mmap_write_lock()
    try:
        origbrk = mm.brk_cur
        if brk < mm.start_brk:
            mm.end_call(call, origbrk)
            return origbrk
        newbrk = page_align(brk)
        oldbrk = page_align(mm.brk_cur)
        if oldbrk == newbrk:
            mm.brk_cur = brk
            mm.end_call(call, brk)
            return brk
        if brk <= mm.brk_cur:
            try:
                check_unmap(mm, newbrk, oldbrk)
            except OSError:
                mm.end_call(call, origbrk)
                return origbrk
            pieces = detach_range(mm, newbrk, oldbrk)
            mm.brk_cur = brk
            if pieces and k.munmap_downgrade:  # do_vmi_align_munmap(unlock=true): zap under read
                mm.mmap_write_downgrade()
                downgraded = True
            zap_detached(mm, pieces)
            mm.end_call(call, brk)
            return brk
        nxt = mm.vmas.find_vma(oldbrk)
        if nxt is not None and newbrk + PAGE_SIZE > nxt.start:
            mm.end_call(call, origbrk)
            return origbrk
        vm_flags = _VM_DATA_DEFAULT | VM_ACCOUNT | mm.def_flags  # do_brk_flags()
        if not k.mlock_onfault:
            vm_flags &= ~VM_LOCKONFAULT
        if not mm.mlock_future_ok(vm_flags, newbrk - oldbrk) or mm.map_count >= mm.max_map_count:
            mm.end_call(call, origbrk)
            return origbrk
        vma = _do_brk_flags(mm, call, oldbrk, newbrk, vm_flags)
        mm.brk_cur = brk
        if mm.def_flags & VM_LOCKED:
            if k.brk_populate_after_unlock:
                populate = newbrk - oldbrk
            elif not vm_flags & VM_LOCKONFAULT:
                populate_range_locked(mm, vma, oldbrk, newbrk, call)
    finally:
        if downgraded:
            mm.mmap_read_unlock()
        else:
            mm.mmap_write_unlock()
    if populate:
        mm_populate(mm, oldbrk, populate, call)
    mm.end_call(call, brk)
    return brk


def _do_brk_flags(mm: "MM", call: "CallInfo", start: int, end: int, vm_flags: int) -> Vma:
    """do_brk_flags(): expand the brk vma if it ends at *start* and matches, else add one."""
    prev = mm.vmas.find_vma(start - 1) if start > mm.start_brk else None
    n = (end - start) >> 12
    mm.total_vm += n
    if vm_flags & VM_LOCKED:
        mm.locked_vm += n
    if prev is not None and prev.end == start and prev.flags == vm_flags and prev.file is None \
            and prev.name == "[heap]":
        mm.vma_start_write(prev)
        mm.vmas.rekey(prev, prev.start, end)
        mm.origins.extend(start, end, start - PAGE_SIZE)
        o = mm.origins.at(start)
        if o is not None:
            call.targets.add(o.oid)
        return prev
    vma = Vma(start, end, vm_flags, None, start >> 12, name="[heap]")
    mm.vmas.insert(vma)
    origin = mm.origins.new(call.call_id, "brk", bool(vm_flags & VM_LOCKED), call.task)
    mm.origins.assign(start, end, origin)
    call.targets.add(origin.oid)
    return vma


def expand_stack(mm: "MM", vma: Vma, addr: int) -> Vma:
    """find_extend_vma()/expand_downwards(): grow a VM_GROWSDOWN vma down to *addr*.

    Called with mmap_sem held for read (as 3.x did, under the anon_vma lock). A VM_LOCKED stack
    is populated right here without dropping the lock (patch 8): stack growth is bounded."""
    from mmlab.errors import SIGSEGV
    from mmlab.current import current

    new_start = addr & ~(PAGE_SIZE - 1)
    with mm.anon_vma_lock:  # two faults may grow the stack at once, both under the read lock
        if new_start >= vma.start:  # another fault grew it meanwhile
            return vma
        if vma.end - new_start > mm.rlimit_stack:  # acct_stack_growth()
            raise SIGSEGV(addr, "RLIMIT_STACK")
        prev = mm.vmas.prev(vma)
        gap = mm.kernel.stack_guard_gap * PAGE_SIZE
        if prev is not None and new_start - prev.end < gap and \
                (gap == PAGE_SIZE or (not prev.flags & VM_GROWSDOWN and prev.accessible())):
            # expand_downwards(): 4.12+ keeps stack_guard_gap from an accessible, non-stack
            # prev; before, the guard page was the stack's own lowest page
            raise SIGSEGV(addr, "stack guard gap")
        grow = (vma.start - new_start) >> 12
        if vma.flags & VM_LOCKED and not mm.mlock_future_ok(vma.flags, grow << 12):
            raise SIGSEGV(addr, "RLIMIT_MEMLOCK")
        old_start = vma.start
        mm.vmas.rekey(vma, new_start, vma.end)
        mm.origins.extend(new_start, old_start, old_start)
        mm.total_vm += grow
        if vma.flags & VM_LOCKED:
            mm.locked_vm += grow
    if vma.flags & VM_LOCKED:
        if not vma.flags & VM_LOCKONFAULT:
            ctx = current()
            call = mm.begin_call("stack-growth", (addr,)) if not ctx.call_id else None
            from mmlab.mm.mm_struct import CallInfo  # noqa: F401
            c = call or _ctx_call(mm)
            populate_range_locked(mm, vma, new_start, old_start, c)
            if call is not None:
                mm.end_call(call, 0)
    return vma


def _ctx_call(mm: "MM") -> "CallInfo":
    from mmlab.current import current
    from mmlab.mm.mm_struct import CallInfo
    ctx = current()
    return CallInfo(ctx.call_id, ctx.name, ctx.index, ctx.call_name or "fault", (), mm.clock.now_ns())
