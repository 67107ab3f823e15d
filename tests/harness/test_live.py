"""The live oracle (--check-live): a FORBIDDEN state that exists only while the tasks run.

The planted case writes the page table the way mm_populate() does -- under mmap_sem for read,
PTE_POPULATE, the call registered in mm.calls -- but into a mapping the call never asked to
populate, waits (on the checker's own completion count, not a sleep) for a check that began
after the plant, and then unmaps the range: the final state is clean. Only the live checker can
see it. Every thread is joined; every random choice comes from the printed seed.
"""

from __future__ import annotations

import threading
from typing import Optional

import pytest

from mmlab import MM, ZERO_COSTS
from mmlab.clock import DEFAULT_COSTS
from mmlab.current import current, set_task_name
from mmlab.flags import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from mmlab.harness.live import ORACLE_TASK, LiveChecker, capture_live, merge_live
from mmlab.harness.oracle import FORBIDDEN, OK, capture, judge
from mmlab.harness.populators import POPULATORS
from mmlab.harness.race import calibrate, round_seed, run_round
from mmlab.harness.racers import RACERS
from mmlab.mm.gup import populate_marks
from mmlab.mm.pagetable import PTE_POPULATE, PTE_PRESENT

NPAGES = 16


def _plant_transient(mm: MM, checker: Optional[LiveChecker]) -> None:
    """A populate into a mapping it never targeted, erased by an munmap once a full check saw it."""
    set_task_name("planter")
    addr = mm.mmap(0, NPAGES << 12, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    call = mm.begin_call("madvise", (addr, NPAGES << 12, -1))  # a call that populates, asked for nothing
    call.populates = True
    mm.calls[call.call_id] = call
    mm.mmap_read_lock(how="populate")
    try:
        for s, e, mark, _o in populate_marks(mm, call, addr, addr + (NPAGES << 12)):  # graded as gup does
            mm.pt.fill_absent(s, e, PTE_PRESENT | PTE_POPULATE | mark, current().index, call.call_id)
    finally:
        mm.mmap_read_unlock()
    if checker is not None:
        # a check in progress may have copied the table before the plant: wait for the next one too
        n = checker.result.checks
        assert checker.wait_checks(n + 2, timeout_s=30), checker.result
    mm.end_call(call, 0)
    mm.munmap(addr, NPAGES << 12)


def _run_planter(mm: MM, checker: Optional[LiveChecker]) -> None:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            _plant_transient(mm, checker)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)
    t = threading.Thread(target=body, name="planter")
    t.start()
    t.join(60)
    assert not t.is_alive()
    if errors:
        raise errors[0]


def test_transient_forbidden_is_caught_live_and_missed_after() -> None:
    # without the live checker: the final state no longer shows it
    mm = MM("v6.18", ZERO_COSTS)
    _run_planter(mm, None)
    assert judge(capture(mm)).outcome == OK

    # with it: seen while it existed, with its moment and the lock state
    mm = MM("v6.18", ZERO_COSTS)
    checker = LiveChecker(mm, period_ms=0.5)
    checker.start()
    try:
        _run_planter(mm, checker)
    finally:
        live = checker.stop()
    assert not checker.alive
    assert not live.error
    final = judge(capture(mm))
    assert final.outcome == OK
    first = live.first
    assert first is not None, live
    assert first.wrong_pages == NPAGES
    assert {f.kind for f in first.verdict.findings if f.grade == FORBIDDEN} == {"replacement-populated"}
    assert first.at_ns >= 0 and "planter: madvise" in first.since
    assert "holders" in first.lock_state and "waiters" in first.lock_state
    merged = merge_live(final, live)
    assert merged.outcome == FORBIDDEN and merged.wrong_pages == NPAGES
    assert any(f.kind == "live:replacement-populated" for f in merged.findings)
    # the checker's holds are recorded like any task's, read mode, and it saw a clean model before the plant
    oracle_holds = [r for r in mm.mmap_sem.history if r.task == ORACLE_TASK]
    assert oracle_holds and all(r.mode == "R" for r in oracle_holds)
    assert live.checks > live.forbidden_checks >= 1


def test_live_capture_of_a_quiescent_model_matches_capture(mm: MM) -> None:
    """Both captures grade a finished model alike: the live one adds nothing of its own."""
    addr = mm.mmap(0, NPAGES << 12, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    mm.touch(addr, True)
    mm.mmap_sem.down_read()
    try:
        live = judge(capture_live(mm))
    finally:
        mm.mmap_sem.up_read()
    after = judge(capture(mm))
    assert live.outcome == after.outcome == OK
    assert live.pages == after.pages


def test_checker_waits_behind_a_writer_and_is_joined(mm: MM) -> None:
    """A checker blocked on mmap_sem (a writer holds it) finishes its check once the writer
    leaves, then stops; stop() joins it."""
    mm.mmap_sem.down_write()
    checker = LiveChecker(mm, period_ms=1)
    checker.start()
    try:
        assert not checker.wait_checks(1, timeout_s=0.2)  # it cannot check while the writer holds
    finally:
        mm.mmap_sem.up_write()
    assert checker.wait_checks(1, timeout_s=30)
    checker.stop()
    assert not checker.alive and not checker.result.error


def test_bad_period_is_refused(mm: MM) -> None:
    with pytest.raises(ValueError):
        LiveChecker(mm, period_ms=0)


@pytest.mark.parametrize("kernel,racer", [("v3.7", "munmap-mmap"), ("v6.18", "mprotect")])
def test_live_checking_adds_nothing_where_nothing_is_forbidden(kernel: str, racer: str, seed: int) -> None:
    """Controls: the write lock excludes the racer (v3.7), or the racer never replaces (mprotect):
    no check, however often, may see FORBIDDEN; the checker is joined after every round."""
    costs = DEFAULT_COSTS.scaled(0.25)
    pop = POPULATORS["populate-file"]
    w = calibrate(kernel, pop, 8 << 20, costs)
    checks = 0
    for i in range(4):
        r = run_round(kernel, pop, RACERS[racer], seed=round_seed(seed, kernel, pop.name, racer, i), size=8 << 20,
                      window_ns=w, costs=costs, check_live_ms=0.5)
        assert r.live is not None and r.live.first is None, r.verdict.report()
        assert r.outcome != FORBIDDEN
        checks += r.live.checks
        assert not [t for t in threading.enumerate() if t.name == ORACLE_TASK]
    assert checks >= 4


def test_live_checking_sees_a_replacement_being_populated(seed: int) -> None:
    """v6.18 populates a replacement of a file-backed MAP_POPULATE range: checks every 0.5 ms
    see it during the populate (the populate drops the lock at each disk wait)."""
    costs = DEFAULT_COSTS.scaled(0.5)
    pop = POPULATORS["populate-file"]
    w = calibrate("v6.18", pop, 16 << 20, costs)
    seen = []
    for i in range(16):
        r = run_round("v6.18", pop, RACERS["munmap-mmap"], seed=round_seed(seed, "v6.18", pop.name, "live", i),
                      size=16 << 20, window_ns=w, costs=costs, check_live_ms=0.5)
        seen.append((r.seed, r.final_outcome, r.live.first is not None if r.live else None))
        if r.live is not None and r.live.first is not None:
            assert r.outcome == FORBIDDEN
            assert r.live.first.since.startswith("call#") and "populator" in r.live.first.since
            assert r.live.kinds.get("replacement-populated")
            return
    pytest.fail(f"no live FORBIDDEN in 16 rounds: {seen}")


@pytest.mark.parametrize("kernel", ["v6.18", "v3.9"])
def test_a_replacement_populated_then_unmapped_is_caught_only_live(kernel: str, seed: int) -> None:
    """The mmap-fixed-unmap racer replaces the range and unmaps the replacement again a few ms
    later: the after-the-round oracle (all that runs without --check-live) finds nothing, the
    live checks see the replacement being populated."""
    costs = DEFAULT_COSTS.scaled(0.5)
    pop = POPULATORS["populate-file"]
    w = calibrate(kernel, pop, 16 << 20, costs)
    seen = []
    for i in range(20):
        r = run_round(kernel, pop, RACERS["mmap-fixed-unmap"], seed=round_seed(seed, kernel, pop.name, "unmap", i),
                      size=16 << 20, window_ns=w, costs=costs, check_live_ms=0.5)
        seen.append((r.seed, r.final_outcome, r.outcome))
        assert r.final_outcome != FORBIDDEN, r.verdict.report()  # the final state is always clean
        if r.outcome == FORBIDDEN:
            assert r.live_only and r.live is not None and r.live.first is not None
            assert r.verdict.wrong_pages == r.live.max_wrong_pages > 0
            assert {f.kind for f in r.verdict.findings if f.grade == FORBIDDEN} == {"live:replacement-populated"}
            return
    pytest.fail(f"no live-only FORBIDDEN in 20 rounds: {seen}")


@pytest.mark.parametrize("kernel", ["bounded", "v3.9-rc1"])
def test_transient_replacement_is_never_populated_where_identity_or_vm_populate_is_checked(kernel: str,
                                                                                          seed: int) -> None:
    costs = DEFAULT_COSTS.scaled(0.5)
    pop = POPULATORS["populate-file"]
    w = calibrate(kernel, pop, 16 << 20, costs)
    for i in range(4):
        r = run_round(kernel, pop, RACERS["mmap-fixed-unmap"], seed=round_seed(seed, kernel, pop.name, "unmap", i),
                      size=16 << 20, window_ns=w, costs=costs, check_live_ms=0.5)
        assert r.outcome == OK and r.live is not None and r.live.first is None and r.live.checks > 0
