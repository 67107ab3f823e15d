"""Controlled mode: one real task thread at a time, blocking decided by the model, every way an
execution can go wrong reported instead of hanging."""

from __future__ import annotations

import threading
import time

import pytest

from sched_helpers import LockOrder, PlantedDeadlock, Spinner, points_of
from mmlab import DEFAULT_COSTS, MM
from mmlab.clock import hooks
from mmlab.sched.controller import DEADLOCK, DONE, STEP_BOUND, Controller, TaskThreads
from mmlab.sched.dfs import DfsScheduler
from mmlab.sched.explore import explore
from mmlab.sched.random_walk import RandomScheduler
from mmlab.sched.scenario import RaceScenario
from mmlab.sched.shrink import run_once


def test_only_one_task_runs_between_schedule_points(seed: int, no_leaked_threads: None) -> None:
    running = [0]
    worst = [0]
    entered = []

    def body() -> None:
        for _ in range(50):
            running[0] += 1
            worst[0] = max(worst[0], running[0])
            entered.append(threading.current_thread().name)
            running[0] -= 1
            hooks.schedule_point("spend", "test")  # type: ignore[misc]

    s = RandomScheduler(seed)
    s.new_execution()
    mm = MM.controlled("v3.9")
    ex = Controller(s, mm.clock).run(points_of([body, body, body]))
    assert ex.status == DONE and ex.points == 150
    assert worst[0] == 1
    assert len(set(entered)) == 3
    assert ex.preemptions > 10  # the random walk did interleave them


def test_planted_deadlock_is_reported_with_stacks_and_lock_state(no_leaked_threads: None) -> None:
    r = explore(PlantedDeadlock(), "pct", 50, 0, reproduce=3)
    f = r.finding
    assert f is not None and r.first_failure_at == 1, dict(r.counts)
    out = f.shrunk.outcome if f.shrunk is not None else f.outcome
    assert out.verdict == "DEADLOCK"
    rep = out.detail
    assert "task upgrader: down_write(mmap_sem): queued, 1 of " in rep and "1 read hold(s) must drain" in rep
    assert "in takes_it_twice" in rep and "sem.down_write()  # the planted bug" in rep  # its stack
    assert "mmap_sem: held for read by upgrader; wait list: upgrader (W)" in rep  # the lock state
    assert f.reproduced == f.replays == 3


def test_lock_order_deadlock_found_by_every_strategy(seed: int, no_leaked_threads: None) -> None:
    """Only schedules where both tasks get their first lock deadlock; the search finds one and
    the report names both locks and both waits."""
    for strategy in ("dfs", "pct", "random"):
        r = explore(LockOrder(), strategy, 500, seed, max_preemptions=1, reproduce=2)
        assert r.counts.get("OK", 0) > 0 or strategy != "dfs"  # DFS tries the clean orders first
        f = r.finding
        assert f is not None and f.outcome.verdict == "DEADLOCK", (strategy, dict(r.counts))
        rep = f.shrunk.outcome.detail if f.shrunk is not None else f.outcome.detail
        assert "task ab: down_write(B.mmap_sem): queued, 1 of 1 on the wait list; ba holds it for write" in rep
        assert "task ba: down_write(A.mmap_sem): queued, 1 of 1 on the wait list; ab holds it for write" in rep
        assert "A.mmap_sem: held for write by ab" in rep and "B.mmap_sem: held for write by ba" in rep
        assert f.reproduced == 2


def test_livelock_hits_the_step_bound(no_leaked_threads: None) -> None:
    s = RandomScheduler(1)
    s.new_execution()
    ex, out = run_once(Spinner(), s, max_steps=300)
    assert ex.status == STEP_BOUND and out.verdict == "STEP_BOUND"
    assert ex.steps == 300
    assert "task spinner: runnable" in ex.report and "in spin" in ex.report


def test_task_exception_is_an_error_outcome(no_leaked_threads: None) -> None:
    def boom() -> None:
        raise KeyError("model bug")

    s = RandomScheduler(1)
    s.new_execution()
    mm = MM.controlled("v3.9")
    ex = Controller(s, mm.clock).run(points_of([boom, lambda: None]))
    assert ex.status == DONE and "KeyError: 'model bug'" in ex.errors["t0"]


def test_disk_waits_are_timed_sleeps_on_the_virtual_clock(no_leaked_threads: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """v3.7 populates a cold file under the write lock: the racer's munmap waits out every disk
    wait. The wait is exact virtual time -- the same on every run -- and no task sleeps."""
    sleeps: list[str] = []
    real_sleep = time.sleep

    def sleep(s: float) -> None:
        name = threading.current_thread().name
        if name.startswith("mmlab-task-"):
            sleeps.append(name)
        real_sleep(s)
    monkeypatch.setattr(time, "sleep", sleep)
    sc = RaceScenario("v3.7", "populate-file", "munmap-mmap", size=16 << 20, time_scale=50.0)
    waits = set()
    for seed in range(3):
        s = RandomScheduler(seed)
        with TaskThreads() as th:
            while True:
                s.new_execution()
                ex, out = run_once(sc, s, threads=th)
                w = [ev[2][1].wait_ns for ev in ex.events
                     if ev[1] == "lock_acquired" and ex.names[ev[0]] == "racer"]
                if max(w) > 0:
                    break
        assert out.verdict == "OK"
        waits.add(max(w))
        # two read-ahead windows of disk (16 MiB) plus 4096 file pages, all under the write lock
        c = DEFAULT_COSTS.scaled(50.0)
        assert max(w) == 2 * c.cost("disk_window") + c.cost("file_page", 4096)
        assert ex.virtual_ns >= max(w)
    assert len(waits) == 1
    assert not sleeps, "a task thread slept in controlled mode"


def test_free_threads_pass_through_while_a_controlled_run_is_on(no_leaked_threads: None) -> None:
    """A thread that is not a task of the execution is not parked by the hook."""
    mm_free = MM("v3.9")
    done = threading.Event()

    def outsider() -> None:
        mm_free.mmap_sem.down_read()
        mm_free.mmap_sem.up_read()
        done.set()

    def task() -> None:
        t = threading.Thread(target=outsider)
        t.start()
        t.join()

    s = RandomScheduler(0)
    s.new_execution()
    mm = MM.controlled("v3.9")
    ex = Controller(s, mm.clock).run(points_of([task]))
    assert ex.status == DONE and done.is_set()


def test_dfs_explores_each_schedule_once_fewest_preemptions_first(no_leaked_threads: None) -> None:
    def body() -> None:
        for _ in range(3):
            hooks.schedule_point("spend", "x")  # type: ignore[misc]

    s = DfsScheduler(max_preemptions=2)
    seen = []
    bounds = []
    with TaskThreads() as th:
        while s.new_execution():
            mm = MM.controlled("v3.9")
            ex = Controller(s, mm.clock).run(points_of([body, body]), th)
            assert ex.status == DONE
            seen.append(tuple(ex.choices))
            bounds.append(ex.preemptions)
    assert len(seen) == len(set(seen)), "a schedule was run twice"
    assert bounds == sorted(bounds), "fewer preemptions first"
    assert bounds.count(0) == 2  # who starts; then each runs to the end
    assert max(bounds) == 2
    # exhaustive up to two preemptions: every interleaving of two 4-step tasks with <= 2
    # preemptions (C(8,4) = 70 in all; the ones needing 3+ switches away are cut)
    assert 10 < len(seen) < 70


def test_deadlock_status_from_a_self_deadlock(no_leaked_threads: None) -> None:
    mm = MM.controlled("v3.9")

    def twice() -> None:
        mm.mmap_sem.down_write()
        mm.mmap_sem.down_write()

    s = RandomScheduler(0)
    s.new_execution()
    ex = Controller(s, mm.clock, [mm.mmap_sem]).run(points_of([twice]))
    assert ex.status == DEADLOCK
    assert "held for write by t0" in ex.report
    assert not mm.mmap_sem.waiters  # the abort cleaned up what it had set


@pytest.mark.parametrize("kernel", ["v6.18", "bounded"])
def test_bounded_populate_sees_a_queued_writer(kernel: str, no_leaked_threads: None) -> None:
    """rwsem_is_contended() is true in controlled mode while a writer is parked in the model:
    bounded's populate yields to it (call.yields), v6.18's does not."""
    sc = RaceScenario(kernel, "populate-anon", "mmap-fixed", size=8 << 20)
    yields = []
    with TaskThreads() as th:
        for seed in range(30):
            s = RandomScheduler(seed)
            s.new_execution()
            mm, tasks = sc.build()
            ex = Controller(s, mm.clock, [mm.mmap_sem]).run(tasks, th)
            assert ex.status == DONE
            yields.append(sum(c.yields for c in mm.calls.values()))
    if kernel == "bounded":
        assert max(yields) > 0
    else:
        assert max(yields) == 0


def test_per_vma_lock_writer_waits_for_a_faulting_reader(no_leaked_threads: None) -> None:
    """v6.18: a fault holds the vma's per-VMA read lock across a disk wait; munmap's
    vma_start_write() must wait for it. In controlled mode that wait parks the task until the
    reader is gone -- never in the real condition variable -- and every execution finishes."""
    from mmlab import MAP_SHARED, PROT_READ, File

    kinds = set()
    with TaskThreads() as th:
        for seed in range(40):
            mm = MM.controlled("v6.18")
            f = File("cold.dat", 1 << 20)
            a = mm.mmap(0, 1 << 20, PROT_READ, MAP_SHARED, f)
            s = RandomScheduler(seed)
            s.new_execution()
            ex = Controller(s, mm.clock, [mm.mmap_sem]).run(points_of([
                lambda: mm.touch(a), lambda: mm.munmap(a, 1 << 20)]), th)
            assert ex.status == DONE, ex.report
            assert not ex.errors or all("SIGSEGV" in e for e in ex.errors.values()), ex.errors
            kinds |= {ev[1] for ev in ex.events}
            assert not mm.check_invariants()
    assert "vma_write_wait" in kinds and "wait" in kinds  # the interleaving under test did occur
