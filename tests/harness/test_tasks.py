"""Tasks are real threads: lock waits come from the model's LockRecords, failures are reported
with their traceback, and a group always ends with every thread joined."""

from __future__ import annotations

import threading

import pytest

from mmlab import DEFAULT_COSTS, MM, ZERO_COSTS
from mmlab.harness.histograms import decode
from mmlab.harness.tasks import OpStats, Step, Task, TaskGroup
from mmlab.locking.watch import wait_until, watch as watch_lock


def test_wait_comes_from_the_lock_record() -> None:
    mm = MM("v3.9", ZERO_COSTS)
    held = threading.Event()
    cv = watch_lock(mm.mmap_sem)

    def hold(mm: MM) -> None:
        mm.mmap_write_lock()
        held.set()
        assert wait_until(cv, lambda: bool(mm.mmap_sem.waiters), 5), "the reader never queued"
        mm.mmap_write_unlock()

    def read(mm: MM) -> None:
        held.wait(5)
        mm.mmap_read_lock()
        mm.mmap_read_unlock()

    holder = Task("holder", [Step("hold", hold)])
    reader = Task("reader", [Step("read", read)])
    res = TaskGroup(mm, [holder, reader]).run()
    res.raise_errors()
    assert res.reason == "done"
    recs = [r for r in mm.mmap_sem.history if r.task == "reader"]
    assert len(recs) == 1 and recs[0].wait_ns > 0
    st = reader.stats["read"]
    assert st.count == 1 and st.max_wait_ns == recs[0].wait_ns
    w = [r for r in mm.mmap_sem.history if r.task == "holder"][0]
    assert w.acq_ns < recs[0].req_ns < w.rel_ns <= recs[0].acq_ns  # it waited for that hold
    assert holder.stats["hold"].max_hold_ns == w.hold_ns
    assert reader.tid == recs[0].tid == res.task("reader").tid and reader.tid != holder.tid
    assert all(not t.thread.is_alive() for t in (holder, reader))  # type: ignore[union-attr]


def test_open_loop_backfills_missed_samples() -> None:
    """A call that overruns its 1 ms slot by 20 ms is recorded as the ~20 calls a steady
    client would have made, not as one slow sample."""
    mm = MM("v6.18", DEFAULT_COSTS)
    slow = Task("slow", [Step("work", lambda mm: mm.clock.spend(20_000_000))], interval_ns=1_000_000)
    TaskGroup(mm, [slow]).run().raise_errors()
    st = slow.stats["work"]
    assert st.count == 1
    assert st.total.get_total_count() >= 10  # back-filled (coordinated omission corrected)
    closed = OpStats("x")
    closed.add(0, 0, 20_000_000, 0)
    assert closed.total.get_total_count() == 1
    assert slow.missed_slots == 0  # a single step: nothing scheduled after it


def test_open_loop_skips_missed_slots() -> None:
    mm = MM("v6.18", DEFAULT_COSTS)
    steps = [Step("work", lambda mm: mm.clock.spend(10_000_000)), Step("tick", lambda mm: None)]
    t = Task("t", steps, interval_ns=1_000_000)
    TaskGroup(mm, [t]).run().raise_errors()
    assert t.missed_slots >= 5  # the 10 ms call missed most of the ten 1 ms slots after it
    assert t.stats["tick"].count == 1


def test_histograms_merge_through_encode() -> None:
    a, b = OpStats("op"), OpStats("op")
    for v in (1_000, 2_000, 3_000):
        a.add(v, 0, v, 0)
    b.add(50_000_000, 0, 50_000_000, 0)
    blobs = a.encode()
    h = decode(blobs["wait"])
    assert h.get_total_count() == 3
    a.merge(b)
    assert a.count == 4 and a.max_wait_ns == 50_000_000
    assert a.summary()["max_us"] == pytest.approx(50_000)


def test_a_task_that_raises_is_reported_and_the_group_stops() -> None:
    mm = MM("v6.18", ZERO_COSTS)

    def boom(mm: MM) -> None:
        raise ValueError("bad step")

    spinner = Task("spinner", [Step("noop", lambda mm: mm.mmap_sem.down_read_trylock() and mm.mmap_read_unlock())],
                   repeat=True, interval_ns=100_000)
    bad = Task("bad", [Step("ok", lambda mm: None), Step("boom", boom)])
    res = TaskGroup(mm, [spinner, bad], timeout_s=20).run()
    assert res.reason == "error" and not res.hung
    assert len(res.errors) == 1
    e = res.errors[0]
    assert e.task == "bad" and e.op == "boom" and isinstance(e.exc, ValueError)
    assert "in boom" in e.traceback and "ValueError: bad step" in e.traceback
    assert spinner.state == "stopped" and not spinner.thread.is_alive()  # type: ignore[union-attr]
    with pytest.raises(RuntimeError, match="bad step"):
        res.raise_errors()


def test_a_failing_setup_aborts_the_start_barrier() -> None:
    mm = MM("v6.18", ZERO_COSTS)

    def setup(t: Task) -> None:
        raise OSError(22, "setup failed")

    other = Task("other", [Step("noop", lambda mm: None)], repeat=True)
    bad = Task("bad", [Step("noop", lambda mm: None)], setup=setup)
    res = TaskGroup(mm, [other, bad], join_timeout_s=5).run()
    assert res.reason == "error" and not res.hung
    assert res.errors[0].task == "bad" and "setup failed" in res.errors[0].traceback
    assert other.steps_done == 0  # nobody started


def test_expected_errors_are_counted_not_fatal() -> None:
    mm = MM("v6.18", ZERO_COSTS)
    t = Task("t", [Step("munmap-bad", lambda mm: mm.munmap(4097, 4096), expect=(OSError,))] * 3)
    TaskGroup(mm, [t]).run().raise_errors()
    assert t.stats["munmap-bad"].errors == 3 and t.error is None


def test_a_stuck_task_is_reported_not_waited_for() -> None:
    mm = MM("v6.18", ZERO_COSTS)
    release = threading.Event()
    stuck = Task("stuck", [Step("block", lambda mm: release.wait(30))])
    try:
        res = TaskGroup(mm, [stuck], timeout_s=0.3, join_timeout_s=0.2).run()
        assert res.reason == "timeout" and res.hung == ["stuck"]
    finally:
        release.set()
        stuck.thread.join(10)  # type: ignore[union-attr]
    assert not stuck.thread.is_alive()  # type: ignore[union-attr]


def test_repeating_tasks_need_an_end() -> None:
    mm = MM("v6.18", ZERO_COSTS)
    with pytest.raises(ValueError):
        TaskGroup(mm, [Task("r", [Step("n", lambda mm: None)], repeat=True)])
    with pytest.raises(ValueError):
        TaskGroup(mm, [Task("a", []), Task("a", [])])
