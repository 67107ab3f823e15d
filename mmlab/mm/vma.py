"""Vma, the vma index (find_vma, split, merge, get_unmapped_area), and mapping lineage.

Models struct vm_area_struct and the mm's vma tree (the rbtree of v3.x, the maple tree of 6.x):
an ordered index keyed by vm_start with O(log n) find_vma() that stays fast at max_map_count.
Mutations happen under mmap_sem write; the per-VMA-lock fault path reads the index without
mmap_sem, as the kernel does under RCU, so the index has its own small lock (``mt_lock``) that is
held only for the lookup or the update itself.

Identity. Every vma gets a ``vm_id`` that is never reused: __split_vma() gives the new part a new
id, vma_merge() keeps the surviving vma's id. Lineage -- "which mapping call put this address
range here" -- is kept apart from the vmas in an :class:`OriginMap`, because Linux merges vmas of
different mappings and the race oracle must still tell them apart: split, merge, mprotect and
mlock keep a range's origin; a new mmap over it, or a mapping moved in by mremap, replaces it.
"""

from __future__ import annotations

import itertools
import threading
from bisect import bisect_left, bisect_right, insort
from typing import Callable, Iterator, Optional

from sortedcontainers import SortedDict

from mmlab.errors import ENOMEM, err
from mmlab.flags import (
    PAGE_SIZE, TASK_SIZE, VM_EXEC, VM_GROWSDOWN, VM_IO, VM_LOCKED, VM_LOCKONFAULT, VM_PFNMAP,
    VM_READ, VM_SHARED, VM_WRITE, VM_NONLINEAR, VM_POPULATE, VM_NORESERVE, VM_MAYSHARE, VM_MAYBE_GUARD,
)

__all__ = ["Vma", "VmaTree", "OriginMap", "Origin", "vm_flags_str"]

_vm_ids = itertools.count(1)
_anon_vma_ids = itertools.count(1)


class Vma:
    """One vm_area_struct. ``pgoff`` is the file page offset of ``start`` (or start >> 12 for anon)."""

    __slots__ = ("start", "end", "flags", "file", "pgoff", "vm_id", "anon_vma", "vm_lock_seq",
                 "vm_refcnt", "detached", "nonlinear", "name")

    def __init__(self, start: int, end: int, flags: int, file: object = None, pgoff: int = 0,
                 name: str = "") -> None:
        self.start = start
        self.end = end
        self.flags = flags
        self.file = file
        self.pgoff = pgoff
        self.vm_id = next(_vm_ids)
        self.anon_vma = 0  # anon_vma_prepare() assigns one at the first anonymous fault
        self.vm_lock_seq = -1
        self.vm_refcnt = 0
        self.detached = False
        self.nonlinear: Optional[dict[int, int]] = None  # v3.7 remap_file_pages: page -> file pgoff
        self.name = name

    @property
    def pages(self) -> int:
        return (self.end - self.start) >> 12

    def file_pgoff(self, addr: int) -> int:
        """linear_page_index(), or the nonlinear pte's file offset for a VM_NONLINEAR vma."""
        if self.nonlinear is not None:
            got = self.nonlinear.get(addr >> 12)
            if got is not None:
                return got
        return self.pgoff + ((addr - self.start) >> 12)

    def accessible(self) -> bool:
        return bool(self.flags & (VM_READ | VM_WRITE | VM_EXEC))

    def copy(self, start: int, end: int) -> "Vma":
        """A new vma over part of this one (for __split_vma); the copy gets a new vm_id."""
        v = Vma(start, end, self.flags, self.file, self.pgoff + ((start - self.start) >> 12), self.name)
        v.anon_vma = self.anon_vma
        if self.nonlinear is not None:
            v.nonlinear = {p: o for p, o in self.nonlinear.items() if start >> 12 <= p < end >> 12}
        return v

    def __repr__(self) -> str:
        f = f" {self.file}" if self.file is not None else ""
        return f"<vma#{self.vm_id} {self.start:#x}-{self.end:#x} {vm_flags_str(self.flags)}{f}>"


def vm_flags_str(flags: int) -> str:
    """rwxp plus the smaps VmFlags mnemonics that matter here."""
    s = ("r" if flags & VM_READ else "-") + ("w" if flags & VM_WRITE else "-") + \
        ("x" if flags & VM_EXEC else "-") + ("s" if flags & VM_MAYSHARE else "p")  # show_map_vma()
    extra = [m for bit, m in ((VM_LOCKED, "lo"), (VM_LOCKONFAULT, "lf"), (VM_GROWSDOWN, "gd"),
                              (VM_POPULATE, "po"), (VM_NONLINEAR, "nl"), (VM_IO, "io"),
                              (VM_PFNMAP, "pf"), (VM_NORESERVE, "nr")) if flags & bit]
    return s + ("[" + ",".join(extra) + "]" if extra else "")


def anon_vma_prepare(vma: Vma) -> None:
    if not vma.anon_vma:
        vma.anon_vma = next(_anon_vma_ids)


def shmem_zero_setup(vma: Vma) -> None:
    """shmem_zero_setup(): a MAP_SHARED|MAP_ANONYMOUS mapping gets a shmem file of its own, so it
    merges only with pieces of itself. The model has no shmem file; the identity lives in
    ``anon_vma`` (which can_merge() then requires to be equal) and pgoff starts at 0."""
    vma.anon_vma = next(_anon_vma_ids)


def can_merge(a: Vma, b: Vma) -> bool:
    """is_mergeable_vma() + is_mergeable_anon_vma() for a directly below b."""
    if a.end != b.start or (a.flags ^ b.flags) & ~VM_MAYBE_GUARD or a.file is not b.file or a.name != b.name:
        return False
    if a.file is None and a.flags & VM_SHARED:  # shared anonymous: the same shmem object, in order
        return a.anon_vma == b.anon_vma and a.pgoff + a.pages == b.pgoff
    if a.nonlinear is not None or b.nonlinear is not None or a.flags & (VM_IO | VM_PFNMAP):
        return False
    if a.pgoff + a.pages != b.pgoff:  # can_vma_merge_after(): anonymous vmas too (a moved one
        return False                  # keeps the pgoff of where it was mapped)
    return not a.anon_vma or not b.anon_vma or a.anon_vma == b.anon_vma


class _Keys:
    """Neighbour queries on a SortedDict's keys at the cost of one or two C bisects.

    SortedDict answers them in O(log n) too, but through its positional index (peekitem,
    irange: a dozen Python calls, more as the tree deepens), and find_vma runs in every syscall
    and fault. sortedcontainers keeps the keys as sorted sublists ``_lists`` with their last
    keys in ``_maxes``, both list objects that live as long as the dict (mutated in place), so a
    query bisects ``_maxes`` for the sublist and the sublist for the key. Without that layout
    (another sortedcontainers), the same answers come from the public API.
    """

    __slots__ = ("_lists", "_maxes", "_sl", "_d")

    def __init__(self, d: SortedDict) -> None:
        sl = d._list  # the SortedList of keys
        self._sl = sl
        self._d = d
        ok = all(isinstance(getattr(sl, a, None), list) for a in ("_lists", "_maxes", "_index")) and \
            all(hasattr(sl, a) for a in ("_load", "_len", "_expand", "_delete"))
        self._lists: Optional[list[list[int]]] = sl._lists if ok else None
        self._maxes: Optional[list[int]] = sl._maxes if ok else None

    # Updates: ``d[key] = value`` and ``del d[key]`` are three Python frames each in
    # sortedcontainers (__setitem__ -> SortedList.add -> _expand); the common case -- no positional
    # index built (``_index`` empty), no sublist to split or join -- is done here in one, the
    # rest by the library's own code. Every syscall that maps or unmaps does two to four of them.

    def put(self, key: int, value: object) -> None:
        """``d[key] = value``."""
        d = self._d
        maxes = self._maxes
        sl = self._sl
        if maxes is None or not maxes or sl._index or key in d:
            d[key] = value
            return
        pos = bisect_right(maxes, key)
        if pos == len(maxes):
            pos -= 1
            lst = self._lists[pos]  # type: ignore[index]
            lst.append(key)
            maxes[pos] = key
        else:
            lst = self._lists[pos]  # type: ignore[index]
            insort(lst, key)
        if len(lst) > sl._load << 1:
            sl._expand(pos)  # split the sublist
        sl._len += 1
        dict.__setitem__(d, key, value)

    def drop(self, key: int) -> object:
        """``d.pop(key)``: KeyError if absent."""
        d = self._d
        maxes = self._maxes
        sl = self._sl
        if maxes is None or sl._index:
            return d.pop(key)
        value = dict.pop(d, key)
        pos = bisect_left(maxes, key)
        lst = self._lists[pos]  # type: ignore[index]
        idx = bisect_left(lst, key)
        left = len(lst) - 1
        if left > sl._load >> 1 or (left and len(maxes) == 1):  # _delete()'s cases with no join
            del lst[idx]
            sl._len -= 1
            maxes[pos] = lst[-1]
        else:
            sl._delete(pos, idx)  # joins sublists, or drops the last one
        return value

    def floor_higher(self, x: int) -> tuple[Optional[int], Optional[int]]:
        """(the greatest key <= x, the smallest key > x); None where there is none."""
        maxes = self._maxes
        if maxes is None:
            sl = self._sl
            i = sl.bisect_right(x)
            return (sl[i - 1] if i else None), (sl[i] if i < len(sl) else None)
        pos = bisect_right(maxes, x)
        if pos == len(maxes):
            return (maxes[-1] if maxes else None), None
        lst = self._lists[pos]  # type: ignore[index]
        idx = bisect_right(lst, x)
        if idx:
            return lst[idx - 1], lst[idx]
        return (maxes[pos - 1] if pos else None), lst[0]

    def lower(self, x: int) -> Optional[int]:
        """The greatest key < x."""
        maxes = self._maxes
        if maxes is None:
            sl = self._sl
            i = sl.bisect_left(x)
            return sl[i - 1] if i else None
        pos = bisect_left(maxes, x)
        if pos == len(maxes):
            return maxes[-1] if maxes else None
        lst = self._lists[pos]  # type: ignore[index]
        idx = bisect_left(lst, x)
        if idx:
            return lst[idx - 1]
        return maxes[pos - 1] if pos else None

    def around(self, x: int) -> tuple[Optional[int], Optional[int]]:
        """(the greatest key < x, the smallest key > x) in one descent; None where there is none."""
        maxes = self._maxes
        if maxes is None:
            return self.lower(x), self.floor_higher(x)[1]
        pos = bisect_left(maxes, x)
        if pos == len(maxes):
            return (maxes[-1] if maxes else None), None
        lists = self._lists
        lst = lists[pos]  # type: ignore[index]
        idx = bisect_left(lst, x)
        lo = lst[idx - 1] if idx else (maxes[pos - 1] if pos else None)
        j = idx + 1 if lst[idx] == x else idx  # idx < len(lst): maxes[pos] >= x
        if j < len(lst):
            return lo, lst[j]
        return lo, (lists[pos + 1][0] if pos + 1 < len(maxes) else None)  # type: ignore[index]

    def between(self, lo: int, hi: int) -> list[int]:
        """Keys k with lo <= k < hi, ascending."""
        maxes = self._maxes
        if maxes is None:
            return list(self._sl.irange(lo, hi, inclusive=(True, False)))
        out: list[int] = []
        pos = bisect_left(maxes, lo)
        if pos == len(maxes):
            return out
        lists = self._lists
        lst = lists[pos]  # type: ignore[index]
        idx = bisect_left(lst, lo)
        while True:
            for k in lst[idx:]:
                if k >= hi:
                    return out
                out.append(k)
            pos += 1
            if pos == len(maxes):
                return out
            lst = lists[pos]  # type: ignore[index]
            idx = 0

    def below(self, hi: int) -> Iterator[int]:
        """Keys k < hi, descending (a generator: do not change the dict while iterating)."""
        maxes = self._maxes
        if maxes is None:
            yield from self._sl.irange(maximum=hi, inclusive=(True, False), reverse=True)
            return
        lists = self._lists
        pos = bisect_left(maxes, hi)
        if pos == len(maxes):
            pos -= 1
            idx = len(lists[pos]) if pos >= 0 else 0  # type: ignore[index]
        else:
            idx = bisect_left(lists[pos], hi)  # type: ignore[index]
        while pos >= 0:
            lst = lists[pos]  # type: ignore[index]
            for i in range(idx - 1, -1, -1):
                yield lst[i]
            pos -= 1
            if pos >= 0:
                idx = len(lists[pos])  # type: ignore[index]


class VmaTree:
    """The ordered vma index. ``mt_lock`` guards the index for lockless (RCU-style) readers."""

    def __init__(self, mmap_base: int, mmap_min_addr: int = 0x10000) -> None:
        self._d: SortedDict = SortedDict()
        self._k = _Keys(self._d)
        self.mt_lock = threading.Lock()
        self.mmap_base = mmap_base
        self.mmap_min_addr = mmap_min_addr
        self.free_area_cache = mmap_base
        self.stack_guard_gap = 0  # bytes kept free below a VM_GROWSDOWN vma (vm_start_gap())
        # vma_start_write(), set by an MM with per-VMA locks: try_merge() write-locks a
        # neighbour before it expands or removes it, as vma_merge() does (its per-VMA readers
        # -- a fault, a populate under populate_vma_lock -- drain first)
        self.start_write: Optional[Callable[[Vma], None]] = None

    def __len__(self) -> int:
        return len(self._d)

    def __iter__(self) -> Iterator[Vma]:
        return iter(list(self._d.values()))

    # ---------------------------------------------------------------- lookups
    def find_vma(self, addr: int) -> Optional[Vma]:
        """find_vma(): the first vma with vm_end > addr, or None."""
        lo, hi = self._k.floor_higher(addr)
        d = self._d
        if lo is not None:
            v: Vma = d[lo]
            if v.end > addr:
                return v
        return d[hi] if hi is not None else None

    def vma_lookup(self, addr: int) -> Optional[Vma]:
        v = self.find_vma(addr)
        return v if v is not None and v.start <= addr else None

    def lookup_rcu(self, addr: int) -> Optional[Vma]:
        """vma_lookup() without mmap_sem, as lock_vma_under_rcu() does."""
        with self.mt_lock:
            return self.vma_lookup(addr)

    def find_vma_intersection(self, start: int, end: int) -> Optional[Vma]:
        v = self.find_vma(start)
        return v if v is not None and v.start < end else None

    def range(self, start: int, end: int) -> list[Vma]:
        """Every vma intersecting [start, end), in address order."""
        v = self.find_vma(start)
        if v is None or v.start >= end:
            return []
        if v.end >= end:  # vmas do not overlap: the next one starts at or after v.end
            return [v]
        d = self._d
        return [d[k] for k in self._k.between(v.start, end)]

    def prev(self, vma: Vma) -> Optional[Vma]:
        k = self._k.lower(vma.start)
        return self._d[k] if k is not None else None

    def next(self, vma: Vma) -> Optional[Vma]:
        k = self._k.floor_higher(vma.start)[1]
        return self._d[k] if k is not None else None

    # ---------------------------------------------------------------- updates
    def insert(self, vma: Vma) -> None:
        with self.mt_lock:
            self._k.put(vma.start, vma)

    def remove(self, vma: Vma) -> None:
        with self.mt_lock:
            self._k.drop(vma.start)
        vma.detached = True

    def rekey(self, vma: Vma, new_start: int, new_end: int) -> None:
        """Change a vma's bounds in place (vma_expand / vma_shrink / adjust)."""
        with self.mt_lock:
            if new_start != vma.start:
                del self._d[vma.start]
                if vma.file is not None or vma.pgoff:
                    vma.pgoff += (new_start - vma.start) >> 12
                vma.start = new_start
                self._d[new_start] = vma
            vma.end = new_end

    def split(self, vma: Vma, addr: int) -> tuple[Vma, Vma]:
        """__split_vma(): [start, addr) keeps the vma (and its id), [addr, end) is a new vma."""
        hi = vma.copy(addr, vma.end)
        with self.mt_lock:
            vma.end = addr
            if vma.nonlinear is not None:
                vma.nonlinear = {p: o for p, o in vma.nonlinear.items() if p < addr >> 12}
            self._k.put(addr, hi)
        return vma, hi

    def try_merge(self, vma: Vma) -> Vma:
        """vma_merge() with the neighbours; returns the surviving vma."""
        pk, nk = self._k.around(vma.start)  # a merge with prev leaves the next key as it was
        d = self._d
        p = d[pk] if pk is not None else None
        if p is not None and can_merge(p, vma):
            if self.start_write is not None:
                self.start_write(p)
            if not p.anon_vma:
                p.anon_vma = vma.anon_vma
            self.remove(vma)
            with self.mt_lock:
                p.end = vma.end
                p.flags |= vma.flags & VM_MAYBE_GUARD  # sticky: the merged vma keeps it
            vma = p
        n = d[nk] if nk is not None else None
        if n is not None and can_merge(vma, n):
            if self.start_write is not None:
                self.start_write(n)
                self.start_write(vma)
            if not vma.anon_vma:
                vma.anon_vma = n.anon_vma
            self.remove(n)
            with self.mt_lock:
                vma.end = n.end
                vma.flags |= n.flags & VM_MAYBE_GUARD
        return vma

    # ---------------------------------------------------------------- placement
    def get_unmapped_area(self, length: int, hint: int = 0) -> int:
        """arch_get_unmapped_area_topdown(): a hint if it fits, else the highest gap below
        mmap_base, searched from ``free_area_cache`` down (as 3.x did), then from mmap_base.
        Neither may end within ``stack_guard_gap`` below a VM_GROWSDOWN vma (vm_start_gap())."""
        if length > TASK_SIZE - self.mmap_min_addr:
            raise err(ENOMEM, "get_unmapped_area")
        if hint:
            hint = hint & ~(PAGE_SIZE - 1)
            if self.mmap_min_addr <= hint and hint + length <= TASK_SIZE:
                v = self.find_vma(hint)
                if v is None or hint + length <= v.start - (self.stack_guard_gap if v.flags & VM_GROWSDOWN else 0):
                    return hint
        for top in (min(self.free_area_cache, self.mmap_base), self.mmap_base):
            addr = self._search_down(top, length)
            if addr is not None:
                self.free_area_cache = addr
                return addr
        raise err(ENOMEM, "get_unmapped_area")

    def _search_down(self, top: int, length: int) -> Optional[int]:
        hi = top
        d = self._d
        if self.stack_guard_gap:  # the search may start right at a stack (free_area_cache)
            v0 = d.get(top)
            if v0 is not None and v0.flags & VM_GROWSDOWN:
                hi = top - self.stack_guard_gap
        # the walk's first step with one bisect (the gap right below top: the hole munmap just
        # left, or the one under the lowest mapping), before starting the descending generator
        k0 = self._k.lower(top)
        if k0 is None:
            return hi - length if hi - self.mmap_min_addr >= length else None
        first: Vma = d[k0]
        if first.end <= hi and hi - first.end >= length:
            return hi - length
        for k in self._k.below(top):
            v: Vma = d[k]
            if v.end <= hi and hi - v.end >= length:
                return hi - length
            hi = min(hi, v.start - self.stack_guard_gap if v.flags & VM_GROWSDOWN else v.start)
            if hi - self.mmap_min_addr < length:
                return None
        if hi - self.mmap_min_addr >= length:
            return hi - length
        return None

    def unmapped(self, start: int, end: int) -> None:
        """arch_unmap_area_topdown(): a new hole at a high address is searched first next time."""
        if end > self.free_area_cache:
            self.free_area_cache = min(end, self.mmap_base)


class Origin:
    """One mapping call's claim on an address range: the lineage the race oracle checks."""

    __slots__ = ("oid", "call_id", "kind", "asked_populate", "task", "moved_from")

    def __init__(self, oid: int, call_id: int, kind: str, asked_populate: bool, task: str) -> None:
        self.oid = oid
        self.call_id = call_id
        self.kind = kind
        self.asked_populate = asked_populate
        self.task = task
        # the origins (and their ancestors) of a mapping mremap() moved here: a call that asked
        # to populate one of them asked for this mapping too (it is the same mapping, moved)
        self.moved_from: frozenset[int] = frozenset()

    def __repr__(self) -> str:
        return f"<origin#{self.oid} {self.kind} by {self.task} call#{self.call_id}{' populate' if self.asked_populate else ''}>"


class OriginMap:
    """Non-overlapping [start, end) -> origin id intervals; unlike vmas, these never merge.

    Changed and read under mmap_sem (write / read); the intervals themselves are also changed
    under ``lock``, so a reader holding only a per-VMA read lock (a populate under
    populate_vma_lock) can read the lineage of its vma's range with :meth:`ranges_locked`: that
    range cannot change while the vma lock is held, the index around it can."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._d: SortedDict = SortedDict()  # start -> (end, oid)
        self._k = _Keys(self._d)
        self.info: dict[int, Origin] = {}
        self._refs: dict[int, int] = {}
        self._ids = itertools.count(1)

    def new(self, call_id: int, kind: str, asked_populate: bool, task: str) -> Origin:
        o = Origin(next(self._ids), call_id, kind, asked_populate, task)
        self.info[o.oid] = o
        self._refs[o.oid] = 0
        return o

    def _drop_ref(self, oid: int) -> None:
        n = self._refs[oid] - 1
        if n:
            self._refs[oid] = n
        else:
            del self._refs[oid]
            del self.info[oid]

    def _add(self, s: int, e: int, oid: int) -> None:
        self._k.put(s, (e, oid))
        self._refs[oid] += 1

    def clear(self, start: int, end: int) -> None:
        with self.lock:
            self._clear(start, end)

    def _clear(self, start: int, end: int) -> None:
        d = self._d
        s, nxt = self._k.floor_higher(start)
        if s is not None and s < start:
            e, oid = d[s]
            if e > start:  # the interval straddling start
                d[s] = (start, oid)
                if e > end:
                    self._add(end, e, oid)
                    return
        elif s is not None:  # an interval begins at start: often it is the whole range (munmap)
            e, oid = d[s]
            if e >= end:
                self._k.drop(s)
                if e > end:
                    self._add(end, e, oid)
                self._drop_ref(oid)
                return
        if nxt is None or nxt >= end:  # nothing begins inside (start, end): a gap (mmap)
            if s is None or s < start:
                return
        for s in self._k.between(start, end):
            e, oid = self._k.drop(s)  # type: ignore[misc]
            self._refs[oid] -= 1
            if e > end:
                self._add(end, e, oid)
            if not self._refs[oid]:
                del self._refs[oid]
                del self.info[oid]

    def assign(self, start: int, end: int, origin: Origin) -> None:
        with self.lock:
            self._clear(start, end)
            self._add(start, end, origin.oid)

    def extend(self, start: int, end: int, like_addr: int) -> None:
        """Give [start, end) the origin of the range at *like_addr* (growth of the same mapping)."""
        o = self.at(like_addr)
        if o is not None:
            with self.lock:
                self._clear(start, end)
                self._add(start, end, o.oid)

    def move(self, old: int, new: int, length: int) -> None:
        """mremap moves ranges; they arrive as what they were (the caller re-assigns if needed)."""
        parts = self.ranges(old, old + length)
        with self.lock:
            self._clear(old, old + length)
            self._clear(new, new + length)
            for s, e, o in parts:
                self._refs.setdefault(o.oid, 0)
                self.info[o.oid] = o
                self._add(new + (s - old), new + (e - old), o.oid)

    def at(self, addr: int) -> Optional[Origin]:
        s = self._k.floor_higher(addr)[0]
        if s is not None:
            e, oid = self._d[s]
            if e > addr:
                return self.info[oid]
        return None

    def ranges_locked(self, start: int, end: int) -> list[tuple[int, int, Origin]]:
        """:meth:`ranges` for a reader that does not hold mmap_sem (see the class doc)."""
        with self.lock:
            return self.ranges(start, end)

    def ranges(self, start: int, end: int) -> list[tuple[int, int, Origin]]:
        out = []
        d = self._d
        info = self.info
        s = self._k.lower(start)  # an interval straddling start
        if s is not None:
            e, oid = d[s]
            if e > start:
                out.append((start, min(e, end), info[oid]))
        for s in self._k.between(start, end):
            e, oid = d[s]
            out.append((s, min(e, end), info[oid]))
        return out

    def __len__(self) -> int:
        return len(self._d)


def vma_modify_flags(mm, vma: Vma, start: int, end: int, newflags: int) -> Vma:
    """vma_modify_flags() (mm/vma.c): give [start, end) of *vma* new flags, splitting at the
    edges and merging with the neighbours. Called with mmap_sem held for write, after the
    caller checked that the splits fit under max_map_count. Returns the vma now holding start."""
    if vma.flags == newflags:
        return vma
    mm.vma_start_write(vma)
    if vma.start < start:
        _, vma = mm.vmas.split(vma, start)
    if vma.end > end:
        vma, _ = mm.vmas.split(vma, end)
    vma.flags = newflags
    return mm.vmas.try_merge(vma)


def check_range_mapped(mm, start: int, end: int) -> list[Vma]:
    """The vmas covering [start, end), or None if there is a hole (the caller's ENOMEM)."""
    vmas = mm.vmas.range(start, end)
    pos = start
    for v in vmas:
        if v.start > pos:
            return []
        pos = v.end
    if pos < end:
        return []
    return vmas


def splits_needed(vmas: list[Vma], start: int, end: int, changes) -> int:
    """How many __split_vma() calls a flags change over [start, end) needs (0, 1 or 2)."""
    n = 0
    if vmas and vmas[0].start < start and changes(vmas[0]):
        n += 1
    if vmas and vmas[-1].end > end and changes(vmas[-1]):
        n += 1
    return n
