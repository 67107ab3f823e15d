"""The oracle grades populated pages by provenance and lineage, and reports planted breakage.

Every test here builds a state by hand (zero costs, one thread) and checks what the oracle says;
a planted broken invariant must come back FORBIDDEN with the call history that led to it.
"""

from __future__ import annotations

import pytest

from mmlab import (MAP_ANONYMOUS, MAP_FIXED, MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE, MM, PAGE_SIZE,
                   PROT_READ, PROT_WRITE, ZERO_COSTS)
from mmlab.harness.oracle import FORBIDDEN, INTERESTING, OK, capture, check, format_history, judge
from mmlab.mm.gup import populate_marks
from mmlab.mm.pagetable import PTE_POPULATE, PTE_PRESENT

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
N = 64  # pages


def _last(mm: MM, name: str):
    return next(c for c in reversed(mm.call_history) if c.name == name)


def _populate_for(mm: MM, call, addr: int, pages: int) -> None:
    """Plant what a populate by *call* would leave: PTE_POPULATE pages with its provenance and
    the grade the populate gives them now (populate_marks: the call's targets against the lineage)."""
    for s, e, mark, _o in populate_marks(mm, call, addr, addr + pages * PAGE_SIZE):
        mm.pt.fill_absent(s, e, PTE_PRESENT | PTE_POPULATE | mark, 1, call.call_id)


def test_own_populate_is_ok(kmm: MM) -> None:
    kmm.mmap(0, N * PAGE_SIZE, RW, ANON | MAP_POPULATE)
    v = check(kmm)
    assert v.outcome == OK, v.report()
    assert v.pages[OK] == N and v.wrong_pages == 0


def test_split_and_merge_keep_identity(kmm: MM) -> None:
    """mlock of the middle splits the vma; pages the original call populated stay OK."""
    a = kmm.mmap(0, N * PAGE_SIZE, RW, ANON | MAP_POPULATE)
    kmm.mlock(a + 8 * PAGE_SIZE, 8 * PAGE_SIZE)
    kmm.munlock(a + 8 * PAGE_SIZE, 8 * PAGE_SIZE)
    v = check(kmm)
    assert v.outcome == OK, v.report()
    assert v.pages[OK] == N


def test_replacement_that_never_asked_is_forbidden(kmm: MM) -> None:
    a = kmm.mmap(0, N * PAGE_SIZE, RW, ANON)
    populator = _last(kmm, "mmap")
    kmm.mmap(a, N * PAGE_SIZE, RW, ANON | MAP_FIXED)  # the replacement: not populated
    _populate_for(kmm, populator, a, N // 2)  # the old call populates the new mapping
    v = check(kmm)
    assert v.outcome == FORBIDDEN
    assert v.wrong_pages == N // 2
    kinds = {f.kind for f in v.findings if f.grade == FORBIDDEN}
    assert kinds == {"replacement-populated"}
    assert "replacement populated" in v.report()


def test_replacement_that_asked_is_interesting(kmm: MM) -> None:
    a = kmm.mmap(0, N * PAGE_SIZE, RW, ANON)
    populator = _last(kmm, "mmap")
    kmm.mmap(a, N * PAGE_SIZE, RW, ANON | MAP_FIXED | MAP_POPULATE)  # populates itself
    kmm.pt.zap(a, a + 4 * PAGE_SIZE)
    _populate_for(kmm, populator, a, 4)
    v = check(kmm)
    assert v.outcome == INTERESTING, v.report()
    assert v.pages[INTERESTING] == 4 and v.pages[OK] == N - 4 and v.wrong_pages == 0


def test_populated_page_outside_any_vma_is_forbidden(mm: MM) -> None:
    a = mm.mmap(0, N * PAGE_SIZE, RW, ANON | MAP_POPULATE)
    call = _last(mm, "mmap")
    mm.munmap(a, N * PAGE_SIZE)
    _populate_for(mm, call, a, 1)
    v = check(mm)
    assert v.outcome == FORBIDDEN
    assert "outside-vma" in {f.kind for f in v.findings}


def test_planted_broken_invariant_is_forbidden_with_history(mm: MM) -> None:
    mm.mmap(0, N * PAGE_SIZE, RW, ANON | MAP_LOCKED)
    mm.locked_vm += 1  # accounting no longer matches the vmas
    v = check(mm)
    assert v.outcome == FORBIDDEN
    inv = [f for f in v.findings if f.kind == "invariant"]
    assert inv and "locked_vm" in inv[0].message
    text = v.report()
    assert "call history" in text and "mmap(" in text and "W[" in text


def test_locked_mapping_not_fully_present_is_forbidden(mm: MM) -> None:
    a = mm.mmap(0, N * PAGE_SIZE, RW, ANON | MAP_LOCKED)
    mm.pt.zap(a + PAGE_SIZE, a + 3 * PAGE_SIZE)  # pages vanish with no call doing it
    v = check(mm)
    assert v.outcome == FORBIDDEN
    f = [f for f in v.findings if f.kind == "locked-not-present"]
    assert f and f[0].pages == 2


def test_locked_range_changed_by_another_call_is_not_an_error(mm: MM) -> None:
    """munmap of part of a locked mapping by a later call: what is left is still complete."""
    a = mm.mmap(0, N * PAGE_SIZE, RW, ANON | MAP_LOCKED)
    mm.munmap(a + PAGE_SIZE, 2 * PAGE_SIZE)
    assert check(mm).outcome == OK


def test_lost_mapping_is_forbidden(mm: MM) -> None:
    a = mm.mmap(0, N * PAGE_SIZE, RW, ANON)
    vma = mm.vmas.vma_lookup(a)
    mm.vmas.remove(vma)  # gone without munmap
    mm.origins.clear(a, a + N * PAGE_SIZE)
    mm.total_vm -= N
    v = check(mm)
    assert v.outcome == FORBIDDEN
    lost = [f for f in v.findings if f.kind == "mapping-lost"]
    assert lost and lost[0].pages == N


def test_unmapped_mapping_is_not_lost(mm: MM) -> None:
    a = mm.mmap(0, N * PAGE_SIZE, RW, ANON)
    mm.munmap(a, N * PAGE_SIZE)
    assert check(mm).outcome == OK


@pytest.mark.parametrize("kernel", ["v3.7", "v3.9-rc1", "bounded"])
def test_verdict_does_not_depend_on_the_kernel_name(kernel: str) -> None:
    """The same planted state is graded the same under every profile: the oracle reads the snapshot only."""
    verdicts = []
    for k in ("v3.9", kernel):
        mm = MM(k, ZERO_COSTS)
        a = mm.mmap(0, N * PAGE_SIZE, RW, ANON)
        populator = _last(mm, "mmap")
        mm.mmap(a, N * PAGE_SIZE, RW, ANON | MAP_FIXED)
        _populate_for(mm, populator, a, 3)
        v = judge(capture(mm))
        verdicts.append((v.outcome, v.pages))
    assert verdicts[0] == verdicts[1] == (FORBIDDEN, {OK: 0, INTERESTING: 0, FORBIDDEN: 3})


def test_history_names_task_call_and_lock_modes(mm: MM) -> None:
    mm.mmap(0, N * PAGE_SIZE, RW, ANON | MAP_POPULATE)
    lines = format_history(capture(mm))
    assert any("mmap(" in s and "W[" in s and "R.populate[" in s for s in lines), lines
