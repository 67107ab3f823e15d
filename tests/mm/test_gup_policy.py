"""bounded's yield policy in __get_user_pages() (mmlab/mm/gup.py): where a populate drops
mmap_sem for a waiter, under each switch. The waiter is staged (is_contended() and the first
waiter's age are set by the test) on a virtual clock, so every count is exact."""

from __future__ import annotations

from typing import Optional

import pytest

from mmlab.clock import DEFAULT_COSTS
from mmlab.flags import MAP_ANONYMOUS, MAP_POPULATE, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE
from mmlab.kernels import get_kernel
from mmlab.mm.mm_struct import MM

SIZE = 4 << 20  # 1024 pages
PAGES = SIZE // PAGE_SIZE
B = "bounded+populate_vma_lock=off+populate_yield_after_us=0"  # under mmap_sem: a yield at every
# batch boundary a waiter is seen at (tests/mm/test_populate_vma_lock.py: under the per-VMA lock)


def _populate(spec: str, contended_after: int = 0, age_us: Optional[float] = 0.0) -> list[int]:
    """Populate SIZE under *spec* with a waiter present once *contended_after* pages are in, that
    has waited *age_us* whenever the populate looks; returns the pages done at each yield."""
    mm = MM.controlled(get_kernel(spec), DEFAULT_COSTS)  # a VirtualClock, no controller: exact
    sem = mm.mmap_sem
    at_yield: list[int] = []

    def is_contended() -> bool:
        c = next((c for c in mm.running.values() if c.populates), None)
        return c is not None and c.pages >= contended_after

    sem.is_contended = is_contended  # type: ignore[method-assign]
    sem.first_waiter_req_ns = lambda: mm.clock.now_ns() - int(age_us * 1000)  # type: ignore[method-assign, operator]
    unlock = mm.mmap_read_unlock

    def read_unlock() -> None:
        c = next((c for c in mm.running.values() if c.populates), None)
        if c is not None and c.pages < PAGES:
            at_yield.append(c.pages)
        unlock()

    mm.mmap_read_unlock = read_unlock  # type: ignore[method-assign]
    a = mm.mmap(0, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)
    assert mm.pt.count_present(a, a + SIZE) == PAGES  # yielding loses no page
    return at_yield


def test_batch_yields_at_every_batch_boundary_while_a_writer_waits() -> None:
    assert _populate(B + "+populate_batch_pages=512") == [512]
    assert _populate(B + "+populate_batch_pages=64") == list(range(64, PAGES, 64))
    assert _populate("v6.18") == []  # today's kernel never yields


def test_a_batch_smaller_than_a_page_table_is_honoured() -> None:
    assert _populate(B + "+populate_batch_pages=100")[:3] == [100, 200, 300]


def test_yield_after_waits_for_the_waiter_to_age() -> None:
    young = _populate("bounded+populate_vma_lock=off+populate_batch_pages=64+populate_yield_after_us=500", age_us=100)
    old = _populate("bounded+populate_vma_lock=off+populate_batch_pages=64+populate_yield_after_us=500", age_us=600)
    assert young == []                                   # nobody waited long enough: no yield
    assert old == list(range(64, PAGES, 64))             # everyone did: every boundary yields


def test_batch_grows_while_nobody_waits_and_restarts_after_a_yield() -> None:
    fixed = _populate(B + "+populate_batch_pages=64", contended_after=600)
    grown = _populate(B + "+populate_batch_pages=64+populate_batch_max_pages=512", contended_after=600)
    assert fixed[0] == 640                               # the first boundary after the waiter came
    # 64, 128, 256, 512 (capped): boundaries at 64, 192, 448, 960 -- the waiter is seen later
    assert grown[0] == 960
    assert fixed == list(range(640, PAGES, 64))


def test_the_shipped_policy_under_mmap_sem_yields_at_every_512_page_boundary_a_writer_waits_at() -> None:
    """bounded's batch and threshold where it populates under mmap_sem: with populate_vma_lock
    off, and after a per-VMA re-take fails (a writer marked the vma)."""
    shipped = "bounded+populate_vma_lock=off"
    assert _populate(shipped, age_us=0) == [512]
    assert _populate(shipped, contended_after=600) == []  # nobody waited at 512; 1024 is the end
