"""The shortcuts of the one-page mmap+munmap path answer as the general path does: try_merge's
one-descent neighbour lookup (_Keys.around), OriginMap.clear's whole-interval and gap cases,
and mmap_region / detach_range reusing check_unmap()'s lookup."""

from __future__ import annotations

from typing import Optional

from hypothesis import given, settings, strategies as st
from sortedcontainers import SortedDict

from mmlab.clock import ZERO_COSTS
from mmlab.flags import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PAGE_SIZE as P, PROT_READ, PROT_WRITE
from mmlab.mm.mm_struct import MM
from mmlab.mm.vma import OriginMap, _Keys

BASE = 0x10000000
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


@settings(max_examples=80, deadline=None)
@given(st.sets(st.integers(0, 80), max_size=60), st.integers(1, 4), st.booleans())
def test_around_is_lower_and_higher(keys: set[int], load: int, public: bool) -> None:
    d: SortedDict = SortedDict()
    if load > 1:  # tiny sublists: neighbours across sublist boundaries
        d._list._reset(load)
    for k in keys:
        d[k] = None
    kk = _Keys(d)
    if public:
        kk._maxes = kk._lists = None
    for x in range(-1, 83):
        lo: Optional[int] = max((k for k in keys if k < x), default=None)
        hi: Optional[int] = min((k for k in keys if k > x), default=None)
        assert kk.around(x) == (lo, hi), x


def test_origin_clear_of_a_whole_interval_drops_the_origin() -> None:
    om = OriginMap()
    a, b = om.new(1, "mmap", False, "t"), om.new(2, "mmap", False, "t")
    om.assign(BASE, BASE + 2 * P, a)
    om.assign(BASE + 2 * P, BASE + 3 * P, b)
    om.clear(BASE + 2 * P, BASE + 3 * P)  # exactly b's interval
    assert b.oid not in om.info and om.at(BASE + 2 * P) is None
    assert [(s, e, o.oid) for s, e, o in om.ranges(BASE, BASE + 4 * P)] == [(BASE, BASE + 2 * P, a.oid)]
    om.clear(BASE, BASE + P)  # the front of a's interval: the rest keeps a
    assert [(s, e, o.oid) for s, e, o in om.ranges(BASE, BASE + 4 * P)] == [(BASE + P, BASE + 2 * P, a.oid)]
    om.clear(BASE + 3 * P, BASE + 9 * P)  # a gap: nothing changes
    assert len(om) == 1 and set(om.info) == {a.oid}


def _state(mm: MM) -> tuple:
    maps = [(v.start, v.end, v.flags) for v in mm.maps()]
    lineage = [(s, e, o.kind) for s, e, o in mm.origins.ranges(0, 1 << 47)]
    return maps, lineage, mm.total_vm, mm.locked_vm, len(mm.origins.info)


def test_munmap_of_a_whole_vma_ends_as_a_piecewise_munmap() -> None:
    """One munmap of exactly one vma (the shortcut) and two munmaps of its halves (the split
    path) leave the same vmas, lineage and accounting; a neighbour is untouched by either."""
    out = []
    for piecewise in (False, True):
        mm = MM("v6.18", ZERO_COSTS, layout="bare")
        mm.mmap(BASE, 4 * P, RW, ANON | MAP_FIXED)
        mm.mmap(BASE + 4 * P, 2 * P, PROT_READ, ANON | MAP_FIXED)  # a different vma next to it
        for a in range(BASE, BASE + 4 * P, P):
            mm.touch(a, True)
        if piecewise:
            mm.munmap(BASE, 2 * P)
            mm.munmap(BASE + 2 * P, 2 * P)
        else:
            mm.munmap(BASE, 4 * P)
        assert list(mm.pt.iter_present(BASE, BASE + 4 * P)) == []
        assert mm.check_invariants() == []
        out.append(_state(mm))
    assert out[0] == out[1]
    assert out[0][0] == [(BASE + 4 * P, BASE + 6 * P, out[0][0][0][2])]


def test_mmap_into_a_gap_and_over_a_mapping() -> None:
    """mmap_region() skips the detach for a fresh gap, and still replaces what is there."""
    mm = MM("v6.18", ZERO_COSTS, layout="bare")
    x = mm.mmap(0, P, RW, ANON)
    assert mm.origins.at(x) is not None and mm.origins.at(x).kind == "mmap"
    first = mm.origins.at(x).oid
    mm.touch(x, True)
    y = mm.mmap(x, P, PROT_READ, ANON | MAP_FIXED)  # over the mapping: detach and zap
    assert y == x and mm.origins.at(x).oid != first and first not in mm.origins.info
    assert list(mm.pt.iter_present(x, x + P)) == []
    assert [(v.start, v.end) for v in mm.maps()] == [(x, x + P)]
    assert mm.check_invariants() == []
