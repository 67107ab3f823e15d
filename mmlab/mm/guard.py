"""Guard markers: MADV_GUARD_INSTALL / MADV_GUARD_REMOVE (mm/madvise.c, 6.13; profile switch
``madv_guard``).

A guard marker is a non-present pte (PTE_MARKER_GUARD) that makes every access to its page fail
with SIGSEGV: the page fault handler (do_pte_missing() finding the marker) and get_user_pages()
(-EFAULT: MADV_POPULATE_*, mlock's populate) alike. Markers live in the page table, so they share
its life: MADV_DONTNEED, MADV_FREE and mprotect() keep them, mremap() carries them with the ptes,
and only an unmap of the range (munmap, a MAP_FIXED mapping over it, the tail of a shrinking
mremap) or MADV_GUARD_REMOVE clears them.

The model keeps them beside the page table, as ``mm.guards``: a sorted list of page addresses
(empty in nearly every process, so the paths that must clear or honour them test one list).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import Optional

from mmlab.flags import PAGE_SIZE

__all__ = ["guard_install", "guard_remove", "first_guard", "guard_move", "guards_in"]


def guards_in(guards: list[int], start: int, end: int) -> tuple[int, int]:
    """The index range of the markers in [start, end)."""
    return bisect_left(guards, start), bisect_left(guards, end)


def first_guard(guards: list[int], start: int, end: int) -> Optional[int]:
    """The lowest guarded page in [start, end), or None."""
    i = bisect_left(guards, start)
    if i < len(guards) and guards[i] < end:
        return guards[i]
    return None


def guard_install(guards: list[int], start: int, end: int) -> None:
    """Install a marker on every page of [start, end) (the caller zapped the pages)."""
    i, j = guards_in(guards, start, end)
    guards[i:j] = range(start, end, PAGE_SIZE)


def guard_remove(guards: list[int], start: int, end: int) -> None:
    """Clear the markers of [start, end): MADV_GUARD_REMOVE, or an unmap of the range."""
    i, j = guards_in(guards, start, end)
    if i < j:
        del guards[i:j]


def guard_move(guards: list[int], old: int, new: int, length: int) -> None:
    """move_page_tables(): the markers of [old, old+length) go to [new, new+length)."""
    i, j = guards_in(guards, old, old + length)
    if i == j:
        return
    moved = [g - old + new for g in guards[i:j]]
    del guards[i:j]
    guard_remove(guards, new, new + length)
    for g in moved:
        insort(guards, g)
