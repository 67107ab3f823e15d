"""The page table: per page present / written / mlocked, with the provenance of each present page.

Laid out like the kernel's: one page-table page (a "pte table") per 2 MiB PMD, holding 512
entries, allocated on first use and freed when a zap empties it. An entry is one state byte
(PTE_* bits below, the populate's grade among them), the task index that made the page present (2 bytes) and the id of the call
that did it (4 bytes): 7 bytes per present-able page, provenance included, so a 64 GiB populate
fits in well under 1 GiB. Whole-table fills and zaps are slice assignments, so a populate of a
large range costs a few operations per 2 MiB rather than per page.
"""

from __future__ import annotations

import functools
import threading
from array import array
from typing import Iterator

from mmlab.flags import PAGE_SHIFT, PTRS_PER_PTE

__all__ = ["PageTable", "PTE_PRESENT", "PTE_WRITTEN", "PTE_MLOCKED", "PTE_POPULATE", "PTE_FILE",
           "PTE_REPLACEMENT_ASKED", "PTE_REPLACEMENT", "PTE_GRADE"]

PTE_PRESENT = 0x01
PTE_WRITTEN = 0x02  # written (COW broken for private mappings; dirty)
PTE_MLOCKED = 0x04
PTE_POPULATE = 0x08  # made present by a populate (mm_populate/mlock), not by the task's own access
PTE_FILE = 0x10  # maps a page-cache page (not an anonymous or COW copy)
# What the populating call was to the mapping it filled, fixed when the pte was made present
# (gup.populate_marks()) and carried with the pte (move_page_tables(), mlock, mprotect, a COW
# break): neither bit -- a mapping the call asked for; PTE_REPLACEMENT_ASKED -- another mapping
# that had itself asked to be populated; PTE_REPLACEMENT -- another mapping that never asked.
PTE_REPLACEMENT_ASKED = 0x20
PTE_REPLACEMENT = 0x40
PTE_GRADE = PTE_REPLACEMENT_ASKED | PTE_REPLACEMENT

_PMD_PAGES = PTRS_PER_PTE
_PMD_SHIFT = PAGE_SHIFT + 9
_ZERO_STATE = bytes(_PMD_PAGES)
_ZERO_U32 = array("I", bytes(4 * _PMD_PAGES))
_ZERO_U16 = array("H", bytes(2 * _PMD_PAGES))
_PRESENT_TABLE = bytes((1 if i & PTE_PRESENT else 0) for i in range(256))
_ZERO_PAGE_TABLE = bytes((1 if i & PTE_PRESENT and not i & (PTE_WRITTEN | PTE_FILE) else 0) for i in range(256))
_MLOCKED_TABLE = bytes((1 if i & PTE_MLOCKED else 0) for i in range(256))
_CLEAR_MLOCK = bytes((i & ~PTE_MLOCKED) for i in range(256))
_SET_MLOCK = bytes((i | PTE_MLOCKED) if i & PTE_PRESENT else i for i in range(256))


class PteTable:
    __slots__ = ("state", "call", "task", "present")

    def __init__(self) -> None:
        self.state = bytearray(_PMD_PAGES)
        self.call = array("I", _ZERO_U32)
        self.task = array("H", _ZERO_U16)
        self.present = 0


def _ptl(fn):
    """Updates run under the page table lock (pte_offset_map_lock()): two populates (or a fault
    and a populate) hold mmap_sem for read together and may fill the same pte table."""
    @functools.wraps(fn)
    def locked(self, *args):
        with self.ptl:
            return fn(self, *args)
    return locked


class PageTable:
    """Sparse page table keyed by PMD index; methods take page-aligned addresses."""

    def __init__(self) -> None:
        self.pmds: dict[int, PteTable] = {}
        self.nr_present = 0
        self.ptl = threading.Lock()

    # --------------------------------------------------------------- single pages
    def get(self, addr: int) -> int:
        t = self.pmds.get(addr >> _PMD_SHIFT)
        return t.state[(addr >> PAGE_SHIFT) & 511] if t is not None else 0

    def present(self, addr: int) -> bool:
        return bool(self.get(addr) & PTE_PRESENT)

    def provenance(self, addr: int) -> tuple[int, int, int]:
        """(state, task index, call id) of one page."""
        t = self.pmds.get(addr >> _PMD_SHIFT)
        if t is None:
            return (0, 0, 0)
        i = (addr >> PAGE_SHIFT) & 511
        return (t.state[i], t.task[i], t.call[i])

    @_ptl
    def set(self, addr: int, state: int, task: int, call: int) -> None:
        """Install (or update) one pte."""
        key = addr >> _PMD_SHIFT
        t = self.pmds.get(key)
        if t is None:
            t = self.pmds[key] = PteTable()
        i = (addr >> PAGE_SHIFT) & 511
        if not t.state[i] & PTE_PRESENT:
            t.present += 1
            self.nr_present += 1
        t.state[i] = state
        t.task[i] = task
        t.call[i] = call

    @_ptl
    def update_state(self, addr: int, state: int) -> None:
        t = self.pmds[addr >> _PMD_SHIFT]
        t.state[(addr >> PAGE_SHIFT) & 511] = state

    # --------------------------------------------------------------- ranges
    def _spans(self, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        """(pmd key, first index, last index + 1) for each page table [start, end) touches."""
        p = start >> PAGE_SHIFT
        e = end >> PAGE_SHIFT
        while p < e:
            key = p >> 9
            i = p & 511
            j = min(512, i + (e - p))
            yield key, i, j
            p += j - i

    @_ptl
    def fill_absent(self, start: int, end: int, state: int, task: int, call: int) -> int:
        """Make every non-present page of [start, end) present with one provenance.
        Returns the number of pages made present (present pages keep theirs)."""
        made = 0
        pmds = self.pmds
        for key, i, j in self._spans(start, end):
            t = pmds.get(key)
            n = j - i
            if t is None:
                t = pmds[key] = PteTable()
            if t.present == 0 or t.state[i:j].count(0) == n:
                t.state[i:j] = bytes((state,)) * n
                t.call[i:j] = array("I", (call,)) * n
                t.task[i:j] = array("H", (task,)) * n
                t.present += n
                made += n
            else:
                st = t.state
                for k in range(i, j):
                    if not st[k] & PTE_PRESENT:
                        st[k] = state
                        t.call[k] = call
                        t.task[k] = task
                        t.present += 1
                        made += 1
        self.nr_present += made
        return made

    def count_present(self, start: int, end: int) -> int:
        n = 0
        for key, i, j in self._spans(start, end):
            t = self.pmds.get(key)
            if t is not None and t.present:
                n += (j - i) - t.state[i:j].translate(_PRESENT_TABLE).count(0)
        return n

    def count_zero_page(self, start: int, end: int) -> int:
        """Present ptes that were never written and map no file page: in a private anonymous vma,
        the shared zero page, which smaps does not count in Rss (vm_normal_page() skips it)."""
        n = 0
        for key, i, j in self._spans(start, end):
            t = self.pmds.get(key)
            if t is not None and t.present:
                n += (j - i) - t.state[i:j].translate(_ZERO_PAGE_TABLE).count(0)
        return n

    def first_absent(self, start: int, end: int) -> int:
        """Address of the first non-present page in [start, end), or end."""
        for key, i, j in self._spans(start, end):
            t = self.pmds.get(key)
            if t is None or t.present == 0:
                return (key << _PMD_SHIFT) + (i << PAGE_SHIFT)
            k = t.state[i:j].translate(_PRESENT_TABLE).find(0)
            if k >= 0:
                return (key << _PMD_SHIFT) + ((i + k) << PAGE_SHIFT)
        return end

    def zap(self, start: int, end: int) -> tuple[int, int]:
        """zap_page_range(): clear [start, end). Returns (pages zapped, of which mlocked).

        A range within one PMD that has no page table has nothing to zap: that is answered
        without the page table lock (one dict lookup, atomic like the locked check would be),
        which is most small munmaps."""
        key = start >> _PMD_SHIFT
        if key == (end - 1) >> _PMD_SHIFT and key not in self.pmds:
            return 0, 0
        return self._zap(start, end)

    @_ptl
    def _zap(self, start: int, end: int) -> tuple[int, int]:
        zapped = locked = 0
        pmds = self.pmds
        for key, i, j in self._spans(start, end):
            t = pmds.get(key)
            if t is None or not t.present:
                continue
            seg = t.state[i:j]
            n = (j - i) - seg.translate(_PRESENT_TABLE).count(0)
            if not n:
                continue
            locked += (j - i) - seg.translate(_MLOCKED_TABLE).count(0)
            zapped += n
            if n == t.present:
                del pmds[key]  # free_pte_range(): the table is empty now
            else:
                t.state[i:j] = bytes(j - i)
                t.present -= n
        self.nr_present -= zapped
        return zapped, locked

    @_ptl
    def set_mlocked(self, start: int, end: int, on: bool) -> None:
        table = _SET_MLOCK if on else _CLEAR_MLOCK
        for key, i, j in self._spans(start, end):
            t = self.pmds.get(key)
            if t is not None and t.present:
                t.state[i:j] = t.state[i:j].translate(table)

    def mincore(self, start: int, end: int) -> bytes:
        out = bytearray()
        for key, i, j in self._spans(start, end):
            t = self.pmds.get(key)
            if t is None or not t.present:
                out += bytes(j - i)
            else:
                out += t.state[i:j].translate(_PRESENT_TABLE)
        return bytes(out)

    def iter_present(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """(addr, state, task, call) for every present page in [start, end)."""
        for key, i, j in self._spans(start, end):
            t = self.pmds.get(key)
            if t is None or not t.present:
                continue
            st = t.state
            base = key << _PMD_SHIFT
            for k in range(i, j):
                s = st[k]
                if s & PTE_PRESENT:
                    yield base + (k << PAGE_SHIFT), s, t.task[k], t.call[k]

    def move(self, old: int, new: int, length: int) -> None:
        """move_page_tables(): carry ptes (and provenance) from [old, +length) to [new, +length)."""
        moved = list(self.iter_present(old, old + length))
        self.zap(old, old + length)
        for addr, s, task, call in moved:
            self.set(new + (addr - old), s, task, call)

    def memory_bytes(self) -> int:
        """Bytes held by page-table storage (state + task + call per entry)."""
        return len(self.pmds) * _PMD_PAGES * 7
