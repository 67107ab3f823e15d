"""The vma index and the origin map answer exactly as a brute-force scan of the same contents,
through any sequence of inserts, removals, splits, merges, assigns and clears (their lookups
take shortcuts through sortedcontainers' layout for speed; this pins the answers)."""

from __future__ import annotations

from typing import Optional

from hypothesis import given, settings, strategies as st

from mmlab.mm.vma import OriginMap, Vma, VmaTree

P = 4096
BASE = 0x10000000
SLOTS = 64  # addresses are BASE + slot * P, slot in [0, SLOTS)

ops = st.lists(st.tuples(st.sampled_from(["insert", "remove", "split", "merge"]),
                         st.integers(0, SLOTS - 1), st.integers(1, 8)), max_size=120)


def _find_vma_brute(vmas: list[Vma], addr: int) -> Optional[Vma]:
    return min((v for v in vmas if v.end > addr), key=lambda v: v.start, default=None)


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, SLOTS - 1), min_size=4), ops, st.integers(1, 4), st.booleans())
def test_vma_tree_lookups_match_brute_force(first: set[int], seq: list[tuple[str, int, int]], load: int,
                                            public: bool) -> None:
    t = VmaTree(BASE + SLOTS * P)
    if load > 1:  # tiny sublists, so the lookups cross sublist boundaries all the time
        t._d._list._reset(load)
    if public:  # the fallback through sortedcontainers' public API answers the same
        t._k._maxes = t._k._lists = None
    live: list[Vma] = []
    for slot in sorted(first):  # one-page vmas, some adjacent (mergeable), some apart
        v = Vma(BASE + slot * P, BASE + (slot + 1) * P, 0x3)
        t.insert(v)
        live.append(v)
    for op, slot, n in [("check", 0, 0), *seq]:
        start, end = BASE + slot * P, BASE + min(SLOTS, slot + n) * P
        if slot % 5 == 0 and len(t):  # a positional lookup builds sortedcontainers' _index: updates
            t._d.peekitem(0)          # then go through the library until a split or join drops it
        hit = [v for v in live if v.start < end and v.end > start]
        if op == "insert" and not hit:
            v = Vma(start, end, 0x3)
            t.insert(v)
            live.append(v)
        elif op == "remove" and hit:
            t.remove(hit[0])
            live.remove(hit[0])
        elif op == "split" and hit and hit[0].start < start < hit[0].end:
            _, hi = t.split(hit[0], start)
            live.append(hi)
        elif op == "merge" and hit:
            v = hit[0]
            survivor = t.try_merge(v)
            live[:] = [x for x in live if not x.detached]
            assert survivor in live
        live.sort(key=lambda v: v.start)
        _check_keys(t._d._list)  # the in-place updates (_Keys.put/drop) keep sortedcontainers' invariants
        assert list(t) == live
        for slot2 in range(-1, SLOTS + 1):
            a = BASE + slot2 * P
            assert t.find_vma(a) is _find_vma_brute(live, a)
            assert t.find_vma(a + 7) is _find_vma_brute(live, a + 7)
            b = a + 3 * P
            assert t.range(a, b) == [v for v in live if v.start < b and v.end > a]
        for i, v in enumerate(live):
            assert t.prev(v) is (live[i - 1] if i else None)
            assert t.next(v) is (live[i + 1] if i + 1 < len(live) else None)
        for length in (P, 3 * P, 9 * P):
            got = t._search_down(BASE + SLOTS * P, length)
            want = _search_down_brute(live, BASE + SLOTS * P, length, t.mmap_min_addr)
            assert got == want


def _check_keys(sl: object) -> None:
    """SortedList's invariants (its own _check() refuses the tiny loads used here)."""
    lists, maxes = sl._lists, sl._maxes  # type: ignore[attr-defined]
    assert len(lists) == len(maxes) and all(lists) and sl._len == sum(map(len, lists))  # type: ignore[attr-defined]
    flat = [k for lst in lists for k in lst]
    assert flat == sorted(flat) and maxes == [lst[-1] for lst in lists]
    assert all(len(lst) <= 2 * sl._load for lst in lists)  # type: ignore[attr-defined]
    if sl._index and sl._load >= 4:  # type: ignore[attr-defined]
        sl._check()  # type: ignore[attr-defined]  # the positional index too


def _search_down_brute(live: list[Vma], top: int, length: int, floor: int) -> Optional[int]:
    """The highest start s with s + length <= top, s >= floor, and [s, s + length) free."""
    s = (top - length) & ~(P - 1)
    while s >= floor:
        if not any(v.start < s + length and v.end > s for v in live):
            return s
        # jump below the highest vma in the way
        s = min(v.start for v in live if v.start < s + length and v.end > s) - length
    return None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, SLOTS - 1), st.integers(1, 12)), max_size=80),
       st.integers(1, 4), st.booleans())
def test_origin_map_matches_a_page_array(seq: list[tuple[bool, int, int]], load: int, public: bool) -> None:
    om = OriginMap()
    if load > 1:
        om._d._list._reset(load)
    if public:
        om._k._maxes = om._k._lists = None
    pages: list[Optional[int]] = [None] * SLOTS
    first = [(True, slot, 1) for slot in range(0, SLOTS, 3)]  # many small intervals from the start
    for assign, slot, n in [*first, *seq]:
        end = min(SLOTS, slot + n)
        if assign:
            o = om.new(0, "mmap", False, "t")
            om.assign(BASE + slot * P, BASE + end * P, o)
            pages[slot:end] = [o.oid] * (end - slot)
        else:
            om.clear(BASE + slot * P, BASE + end * P)
            pages[slot:end] = [None] * (end - slot)
        _check_keys(om._d._list)
        for i in range(SLOTS):
            o = om.at(BASE + i * P + 5)
            assert (o.oid if o else None) == pages[i]
        for lo in range(0, SLOTS, 5):
            for hi in (lo + 1, lo + 7, SLOTS):
                hi = min(hi, SLOTS)
                got = [(s, e, o.oid) for s, e, o in om.ranges(BASE + lo * P, BASE + hi * P)]
                assert got == _runs(pages, lo, hi)
        assert set(om.info) == {p for p in pages if p is not None}  # no leaked or lost origins


def _runs(pages: list[Optional[int]], lo: int, hi: int) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    i = lo
    while i < hi:
        if pages[i] is None:
            i += 1
            continue
        j = i
        while j < hi and pages[j] == pages[i]:
            j += 1
        out.append((BASE + i * P, BASE + j * P, pages[i]))  # type: ignore[arg-type]
        i = j
    return out
