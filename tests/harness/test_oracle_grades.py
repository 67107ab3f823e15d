"""A page's grade is fixed when it is populated, and follows the page.

Every state here is made by the model itself, one thread plus a racer run inside the populate's
lock drop (a schedule-point hook on the read lock's release: deterministic, no timing): a cold
file populate drops mmap_sem for each disk read, and the racer changes the range meanwhile.
Then later calls (mremap moves, mlock, mlockall + munlockall, mprotect, madvise) must not change
the grade of any page that survives them; and a call's own populate -- madvise(MADV_POPULATE_*),
or a populate whose own mapping mremap moved while it ran -- is OK.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmlab import MM, ZERO_COSTS
from mmlab.clock import hooks
from mmlab.flags import (MADV_DONTNEED, MADV_POPULATE_READ, MADV_POPULATE_WRITE, MAP_ANONYMOUS, MAP_FIXED,
                         MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MCL_CURRENT, MREMAP_FIXED, MREMAP_MAYMOVE,
                         PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE)
from mmlab.harness.oracle import FORBIDDEN, INTERESTING, OK, capture, check, page_grades
from mmlab.mm.filemap import File

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
TARGET = 0x10000000  # the populated range
FILE_PAGES = 32
REPL = TARGET + 8 * P  # the replacement: 8 pages in the middle of it
REPL_PAGES = 8
ELSEWHERE = 0x20000000  # where later calls move things


def _in_lock_drop(mm: MM, call: str, racer: Callable[[], None], nth: int = 1) -> Callable[[str, object], None]:
    """A schedule-point hook: at the *nth* release of a read hold of *call* on the populating
    thread (the populate dropping mmap_sem for a disk read), run *racer* in another thread and
    wait for it -- the replacement happens exactly inside the populate's window."""
    main = threading.current_thread().name
    seen = [0]

    def hook(kind: str, obj: object) -> None:
        if kind != "lock_released" or threading.current_thread().name != main or seen[0] >= nth:
            return
        _, rec = obj  # type: ignore[misc]
        if rec.call == call and rec.mode == "R":
            seen[0] += 1
            if seen[0] == nth:
                errors: list[BaseException] = []

                def run() -> None:
                    try:
                        racer()
                    except BaseException as e:  # noqa: BLE001 - re-raised on the populating thread
                        errors.append(e)
                t = threading.Thread(target=run, name="racer")
                t.start()
                t.join(30)
                assert not t.is_alive()
                if errors:
                    raise errors[0]
    return hook


def _with_hook(hook: Callable[[str, object], None], fn: Callable[[], object]) -> object:
    hooks.schedule_point = hook
    try:
        return fn()
    finally:
        hooks.schedule_point = None


def _populated_replacement(kernel: str, repl_flags: int = 0) -> MM:
    """A cold file MAP_POPULATE of TARGET whose middle was replaced (mmap MAP_FIXED, anonymous,
    *repl_flags* added) while the populate waited for the disk; the populate then went on, by
    address, into the replacement."""
    mm = MM(kernel, ZERO_COSTS)
    f = File("cold", FILE_PAGES * P)

    def replace() -> None:
        mm.mmap(REPL, REPL_PAGES * P, RW, ANON | MAP_FIXED | repl_flags)
        if repl_flags & MAP_POPULATE:  # it populated itself: empty it again, still a mapping that asked
            mm.madvise(REPL, REPL_PAGES * P, MADV_DONTNEED)
    hook = _in_lock_drop(mm, "mmap", replace)
    a = _with_hook(hook, lambda: mm.mmap(TARGET, FILE_PAGES * P, PROT_READ, MAP_SHARED | MAP_POPULATE | MAP_FIXED, f))
    assert a == TARGET
    return mm


def _grades(mm: MM) -> dict[int, str]:
    return {addr: g for addr, g, _k, _c, _s, _o in page_grades(capture(mm))}


# ------------------------------------------------------------------ the states themselves
def test_v39_populated_replacement_is_forbidden() -> None:
    mm = _populated_replacement("v3.9")
    v = check(mm)
    assert v.outcome == FORBIDDEN, v.report()
    assert v.pages[FORBIDDEN] == REPL_PAGES and v.pages[OK] == FILE_PAGES - REPL_PAGES
    [f] = [f for f in v.findings if f.grade == FORBIDDEN]
    assert f.kind == "replacement-populated" and (f.start, f.end) == (REPL, REPL + REPL_PAGES * P)
    assert "never asked to populate" in f.message


# ------------------------------------------------------------------ item 1: later calls change nothing
def _move_replacement(mm: MM) -> int:
    return mm.mremap(REPL, REPL_PAGES * P, REPL_PAGES * P, MREMAP_MAYMOVE | MREMAP_FIXED, ELSEWHERE)


LATER: dict[str, Callable[[MM], object]] = {
    "mremap-move": _move_replacement,
    "mremap-move-and-grow": lambda mm: mm.mremap(REPL, REPL_PAGES * P, 2 * REPL_PAGES * P, MREMAP_MAYMOVE),
    "mlock-one-page": lambda mm: mm.mlock(REPL, P),
    "mlock-all-of-it": lambda mm: mm.mlock(REPL, REPL_PAGES * P),
    "mlockall-munlockall": lambda mm: (mm.mlockall(MCL_CURRENT), mm.munlockall()),
    "mprotect-read-only": lambda mm: mm.mprotect(REPL, REPL_PAGES * P, PROT_READ),
    "madvise-populate-write": lambda mm: mm.madvise(REPL, REPL_PAGES * P, MADV_POPULATE_WRITE),
    "move-then-mlock": lambda mm: mm.mlock(_move_replacement(mm), P),
}


@pytest.mark.parametrize("later", list(LATER))
@pytest.mark.parametrize("kernel", ["v3.9", "v6.18"])
def test_populated_replacement_stays_forbidden(kernel: str, later: str) -> None:
    mm = _populated_replacement(kernel)
    assert check(mm).outcome == FORBIDDEN
    if later == "madvise-populate-write" and not mm.kernel.populate_skips_inaccessible:
        with pytest.raises(OSError):  # MADV_POPULATE_WRITE is 5.14+: EINVAL, and nothing changes
            LATER[later](mm)
    else:
        LATER[later](mm)
    v = check(mm)
    assert v.outcome == FORBIDDEN, v.report()
    assert v.pages[FORBIDDEN] == REPL_PAGES and v.pages[INTERESTING] == 0, v.report()


@pytest.mark.parametrize("later", ["mremap-move", "mlock-one-page", "mlockall-munlockall", "mprotect-read-only"])
def test_replacement_that_asked_stays_interesting(later: str) -> None:
    """v3.9-rc1 (VM_POPULATE) populates a MAP_POPULATE replacement: INTERESTING, and it stays so
    (an mremap move does not make it OK, an mlock does not make it FORBIDDEN)."""
    mm = _populated_replacement("v3.9-rc1", MAP_POPULATE)
    before = check(mm)
    assert before.outcome == INTERESTING and before.pages[INTERESTING] == REPL_PAGES, before.report()
    LATER[later](mm)
    v = check(mm)
    assert v.outcome == INTERESTING and v.pages[INTERESTING] == REPL_PAGES and v.pages[FORBIDDEN] == 0, v.report()


def test_description_names_the_mapping_as_it_was_when_populated() -> None:
    """After mlock (which makes the replacement 'asked') the finding still says it never asked,
    and names the mmap that made it, not the mremap that moved it."""
    mm = _populated_replacement("v3.9")
    repl_call = next(c for c in mm.call_history if c.name == "mmap" and c.args[0] == REPL)
    mm.mlock(_move_replacement(mm), P)
    [f] = [f for f in check(mm).findings if f.grade == FORBIDDEN]
    assert f"mmap by racer call#{repl_call.call_id}, never asked to populate" in f.message, f.message
    assert (f.start, f.end) == (ELSEWHERE, ELSEWHERE + REPL_PAGES * P)


# ------------------------------------------------------------------ item 2: a call's own work is OK
@pytest.mark.parametrize("advice", [MADV_POPULATE_READ, MADV_POPULATE_WRITE])
def test_madvise_populate_of_own_mapping_is_ok(mm: MM, advice: int) -> None:
    a = mm.mmap(0, 16 * P, RW, ANON)
    mm.madvise(a, 16 * P, advice)
    v = check(mm)
    assert v.outcome == OK, v.report()
    assert v.pages[OK] == 16


def test_own_mapping_moved_while_the_populate_runs_is_ok() -> None:
    """A cold file populate of 4 read-ahead windows; after the first window, mremap moves the
    populated first quarter elsewhere. Those pages were populated into the call's own mapping:
    OK where they are now."""
    mm = MM("v3.9", ZERO_COSTS)
    npages = 4 * ZERO_COSTS.readahead_pages
    f = File("cold", npages * P)
    quarter = npages // 4 * P
    moved: list[int] = []
    hook = _in_lock_drop(mm, "mmap", lambda: moved.append(
        mm.mremap(TARGET, quarter, quarter, MREMAP_MAYMOVE | MREMAP_FIXED, ELSEWHERE)), nth=2)
    _with_hook(hook, lambda: mm.mmap(TARGET, npages * P, PROT_READ, MAP_SHARED | MAP_POPULATE | MAP_FIXED, f))
    assert moved == [ELSEWHERE]
    assert mm.pt.count_present(ELSEWHERE, ELSEWHERE + quarter) == quarter // P  # they did move
    v = check(mm)
    assert v.outcome == OK, v.report()
    assert v.pages[OK] == npages


def test_populate_of_own_mapping_after_mremap_moved_it_is_ok() -> None:
    """mlockall(MCL_CURRENT) locks an anonymous mapping, then -- while its populate waits for a
    cold file below it -- mremap moves that mapping higher up. The populate reaches it at its new
    place: the mapping mlockall asked for, moved. OK."""
    mm = MM("v3.9", ZERO_COSTS, layout="bare")
    f = File("cold", 16 * P)
    mm.mmap(TARGET, 16 * P, PROT_READ, MAP_SHARED | MAP_FIXED, f)
    own = mm.mmap(TARGET + (1 << 24), 8 * P, RW, ANON | MAP_FIXED)
    dest = ELSEWHERE
    hook = _in_lock_drop(mm, "mlockall", lambda: mm.mremap(own, 8 * P, 8 * P, MREMAP_MAYMOVE | MREMAP_FIXED, dest))
    _with_hook(hook, lambda: mm.mlockall(MCL_CURRENT))
    assert mm.pt.count_present(dest, dest + 8 * P) == 8  # populated at the new place
    v = check(mm)
    assert v.outcome == OK, v.report()


def test_mlock_of_an_already_locked_mapping_populates_its_own() -> None:
    """While a MAP_LOCKED cold file populate waits for the disk, another thread mlock()s the same
    range: the vma is VM_LOCKED already, so mlock_fixup() changes nothing -- but mlock's own
    populate asked for that range, and the pages it fills are OK (not a replacement that asked)."""
    mm = MM("v6.18", ZERO_COSTS)
    npages = 2 * ZERO_COSTS.readahead_pages
    f = File("cold", npages * P)
    hook = _in_lock_drop(mm, "mmap", lambda: mm.mlock(TARGET, npages * P))
    _with_hook(hook, lambda: mm.mmap(TARGET, npages * P, PROT_READ, MAP_SHARED | MAP_LOCKED | MAP_FIXED, f))
    mlock = next(c for c in mm.call_history if c.name == "mlock")
    assert mlock.pages > 0  # mlock did populate some of them
    v = check(mm)
    assert v.outcome == OK, v.report()


# ------------------------------------------------------------------ random later calls
@dataclass
class _Tracked:
    """Where each populated page of the start state is now, and its grade then."""

    pages: dict[int, tuple[int, str]]  # address now -> (call id, grade at the start)

    def move(self, old: int, length: int, new: int, keep_old: bool = False) -> None:
        moving = {a: v for a, v in self.pages.items() if old <= a < old + length}
        for a in list(self.pages):
            if new <= a < new + length or a in moving:
                del self.pages[a]
        for a, v in moving.items():
            self.pages[new + (a - old)] = v

    def drop(self, start: int, end: int) -> None:
        for a in [a for a in self.pages if start <= a < end]:
            del self.pages[a]


_RANGES = [(REPL, REPL_PAGES), (REPL + 2 * P, 3), (TARGET, 4), (TARGET, FILE_PAGES), (ELSEWHERE, REPL_PAGES),
           (ELSEWHERE + P, 2), (ELSEWHERE + 0x100000, REPL_PAGES)]
_SPOTS = [ELSEWHERE, ELSEWHERE + 0x100000, ELSEWHERE + 0x200000, REPL]

_call = st.one_of(
    st.tuples(st.just("mremap"), st.sampled_from(_RANGES), st.sampled_from(_SPOTS)),
    st.tuples(st.just("mlock"), st.sampled_from(_RANGES)),
    st.tuples(st.just("munlock"), st.sampled_from(_RANGES)),
    st.tuples(st.just("mlockall"), st.sampled_from([MCL_CURRENT])),
    st.tuples(st.just("munlockall")),
    st.tuples(st.just("mprotect"), st.sampled_from(_RANGES), st.sampled_from([PROT_READ, RW, PROT_NONE])),
    st.tuples(st.just("madvise"), st.sampled_from(_RANGES),
              st.sampled_from([MADV_POPULATE_READ, MADV_POPULATE_WRITE, MADV_DONTNEED])),
)


def _apply(mm: MM, tr: _Tracked, c: tuple) -> None:
    name = c[0]
    try:
        if name == "mremap":
            (s, n), dest = c[1], c[2]
            new = mm.mremap(s, n * P, n * P, MREMAP_MAYMOVE | MREMAP_FIXED, dest)
            tr.move(s, n * P, new)
        elif name == "mlock":
            mm.mlock(c[1][0], c[1][1] * P)
        elif name == "munlock":
            mm.munlock(c[1][0], c[1][1] * P)
        elif name == "mlockall":
            mm.mlockall(c[1])
        elif name == "munlockall":
            mm.munlockall()
        elif name == "mprotect":
            mm.mprotect(c[1][0], c[1][1] * P, c[2])
        else:
            (s, n), advice = c[1], c[2]
            mm.madvise(s, n * P, advice)
            if advice == MADV_DONTNEED:
                tr.drop(s, s + n * P)
    except OSError:
        pass  # the call failed as Linux fails; what it left is judged like anything else


@pytest.mark.parametrize("start", ["forbidden-v3.9", "forbidden-v6.18", "interesting-v3.9-rc1", "ok-v6.18"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(_call, min_size=1, max_size=6))
def test_later_calls_never_change_a_surviving_pages_grade(start: str, calls: list) -> None:
    grade0, kernel = start.split("-", 1)
    if grade0 == "ok":
        mm = MM(kernel, ZERO_COSTS)
        f = File("cold", FILE_PAGES * P)
        mm.mmap(TARGET, FILE_PAGES * P, PROT_READ, MAP_SHARED | MAP_POPULATE | MAP_FIXED, f)
        mm.mmap(REPL, REPL_PAGES * P, RW, ANON | MAP_FIXED | MAP_POPULATE)
    else:
        mm = _populated_replacement(kernel, MAP_POPULATE if grade0 == "interesting" else 0)
    snap0 = capture(mm)
    tr = _Tracked({a: (cid, g) for a, g, _k, cid, _s, _o in page_grades(snap0)})
    assert {g for _c, g in tr.pages.values()} >= ({OK} if grade0 == "ok" else set()), tr
    for c in calls:
        _apply(mm, tr, c)
    snap = capture(mm)
    now = {a: (cid, g) for a, g, _k, cid, _s, _o in page_grades(snap)}
    for a, (cid, g) in tr.pages.items():
        if a in now and now[a][0] == cid:  # the page survived (present, same provenance)
            assert now[a][1] == g, f"page {a:#x} of call#{cid}: {g} then, {now[a][1]} after {calls}"
    survivors = [g for a, (cid, g) in tr.pages.items() if a in now and now[a][0] == cid]
    v = check(mm)
    if FORBIDDEN in survivors:
        assert v.outcome == FORBIDDEN, v.report()
    assert not mm.check_invariants()
