"""The recorded mmap_sem keeps its semantics whatever its fast paths do: a true RWLockFairD
underneath, uncontended acquisitions never listed as waiters, waiters listed while they block,
a queued writer blocking new readers, downgrade and trylock recorded, listeners and history fed."""

from __future__ import annotations

import threading
from typing import Callable

import pytest

from mmlab.locking import MmapSem
from mmlab.current import set_task_name
from mmlab.locking.watch import Notifying as _Notifying, wait_until, watch as watch_lock


class _SeenDict(_Notifying):
    """A waiters dict that remembers every task ever put in it (and wakes the test's condition)."""

    def __init__(self, cv: threading.Condition) -> None:
        super().__init__(cv)
        self.seen: list[int] = []

    def __setitem__(self, k, v) -> None:  # type: ignore[no-untyped-def]
        self.seen.append(k)
        super().__setitem__(k, v)


def _until(sem: MmapSem, cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait, on the lock's own holder/waiter changes, for a state another thread reaches by
    blocking; an event wait with a deadline, never a sleep."""
    assert wait_until(sem._test_cv, cond, timeout), f"timed out waiting for: {what}"  # type: ignore[attr-defined]


@pytest.fixture
def sem() -> MmapSem:
    s = MmapSem()
    cv = watch_lock(s)
    s.waiters = _SeenDict(cv)
    s._test_cv = cv  # type: ignore[attr-defined]
    return s


def test_uncontended_holds_are_recorded_and_never_wait(sem: MmapSem) -> None:
    got = []
    sem.listeners.append(got.append)
    set_task_name("solo")
    for down, up, mode in ((sem.down_write, sem.up_write, "W"), (sem.down_read, sem.up_read, "R")):
        down()
        assert sem.held_by_current() == mode and len(sem.holders) == 1
        assert not sem.is_contended()
        up()
        assert sem.held_by_current() is None and not sem.holders
    assert sem.waiters.seen == []  # type: ignore[attr-defined]
    assert [r.mode for r in sem.history] == ["W", "R"] and got == list(sem.history)
    for r in sem.history:
        assert r.task == "solo" and 0 <= r.wait_ns and r.req_ns <= r.acq_ns <= r.rel_ns and r.how == ""
    assert sem.acquisitions == 2


def test_concurrent_readers_do_not_wait_for_each_other(sem: MmapSem, threads) -> None:  # type: ignore[no-untyped-def]
    inside = threading.Barrier(3)

    def reader() -> None:
        sem.down_read()
        inside.wait(10)  # all three hold the read lock at once
        inside.wait(10)
        sem.up_read()

    threads.start(reader)
    threads.start(reader)
    reader()
    threads.join()
    assert len(sem.history) == 3 and all(r.mode == "R" for r in sem.history)


def test_a_blocked_task_is_a_waiter_until_it_gets_the_lock(sem: MmapSem, threads) -> None:  # type: ignore[no-untyped-def]
    sem.down_write()
    threads.start(lambda: (sem.down_read(), sem.up_read()), name="blocked-reader")
    _until(sem, lambda: sem.is_contended(), "the reader to queue")
    [w] = list(sem.waiters.values())
    assert w.task == "blocked-reader" and w.mode == "R" and not sem.writer_waiting()
    assert w.acq_ns == -1 and w.wait_ns == -1  # observers (the watchdog) see it still waiting
    st = sem.state()
    assert [h["mode"] for h in st["holders"]] == ["W"] and [x["task"] for x in st["waiters"]] == ["blocked-reader"]
    sem.up_write()
    threads.join()
    assert not sem.is_contended() and not sem.holders
    r = [r for r in sem.history if r.task == "blocked-reader"][0]
    assert r.wait_ns > 0


def test_a_queued_writer_blocks_new_readers(sem: MmapSem, threads) -> None:  # type: ignore[no-untyped-def]
    sem.down_read()
    threads.start(lambda: (sem.down_write(), sem.up_write()), name="writer")
    _until(sem, lambda: sem.writer_waiting(), "the writer to queue")
    threads.start(lambda: (sem.down_read(), sem.up_read()), name="late-reader")
    _until(sem, lambda: len(sem.waiters) == 2, "the late reader to queue behind the writer")
    sem.up_read()
    threads.join()
    by = {r.task: r for r in sem.history}
    assert by["writer"].acq_ns <= by["late-reader"].acq_ns  # the writer went first


def test_downgrade_lets_waiting_readers_in_and_is_recorded(sem: MmapSem, threads) -> None:  # type: ignore[no-untyped-def]
    sem.down_write()
    done = threading.Event()
    threads.start(lambda: (sem.down_read(), sem.up_read(), done.set()), name="reader")
    _until(sem, lambda: sem.is_contended(), "the reader to queue")
    sem.downgrade_write()
    assert done.wait(10)  # the reader got in while we still hold it for read
    assert sem.held_by_current() == "R"
    sem.up_read()
    threads.join()
    mine = [r for r in sem.history if r.task != "reader"]
    assert [(r.mode, r.how) for r in mine] == [("W", ""), ("R", "downgrade")]
    assert mine[0].rel_ns == mine[1].acq_ns
    with pytest.raises(RuntimeError):
        sem.downgrade_write()  # nothing held


def test_trylock_succeeds_beside_readers_and_fails_beside_a_writer(sem: MmapSem, threads) -> None:  # type: ignore[no-untyped-def]
    res: list[bool] = []

    def try_once() -> None:
        ok = sem.down_read_trylock()
        res.append(ok)
        if ok:
            sem.up_read()

    sem.down_read()
    t = threads.start(try_once)
    t.join(10)
    sem.up_read()
    sem.down_write()
    t = threads.start(try_once)
    t.join(10)
    sem.up_write()
    threads.join()
    assert res == [True, False]
    assert sem.waiters.seen == []  # type: ignore[attr-defined]
    assert [r.how for r in sem.history if r.how] == ["trylock"]


def test_the_lock_underneath_is_the_real_rwlock(sem: MmapSem) -> None:
    """Holds taken through the recorded lock exclude holders of the library's own handles."""
    bare_w = sem._rw.gen_wlock()
    bare_r = sem._rw.gen_rlock()
    sem.down_read()
    assert not bare_w.acquire(blocking=False)
    assert bare_r.acquire(blocking=False)
    bare_r.release()
    sem.up_read()
    sem.down_write()
    assert not bare_r.acquire(blocking=False)
    sem.up_write()
    assert bare_w.acquire(blocking=False)
    assert not sem.down_read_trylock()
    bare_w.release()


def test_releasing_the_wrong_mode_is_an_error(sem: MmapSem) -> None:
    sem.down_read()
    with pytest.raises(RuntimeError):
        sem.up_write()
    sem.up_read()
    with pytest.raises(RuntimeError):
        sem.up_read()  # nothing held any more


def test_every_kind_of_record_is_complete(sem: MmapSem) -> None:
    """Records filled in place by the hot paths carry every field LockRecord.__init__ sets."""
    sem.down_write("populate")
    sem.downgrade_write()
    sem.up_read()
    sem.down_read("fault")
    sem.up_read()
    assert sem.down_read_trylock()
    sem.up_read()
    fields = set(sem.history[0].as_dict())
    assert fields == {"lock", "task", "tid", "mode", "call_id", "call", "req_ns", "acq_ns", "rel_ns", "how"}
    for r in sem.history:
        d = r.as_dict()
        assert set(d) == fields and d["lock"] == "mmap_sem" and d["rel_ns"] >= d["acq_ns"] >= d["req_ns"]
    assert [r.how for r in sem.history] == ["populate", "downgrade", "fault", "trylock"]


def test_schedule_points_surround_each_acquisition_and_release() -> None:
    from mmlab.clock import VirtualClock, hooks

    clock = VirtualClock()
    sem = MmapSem(clock)
    seen: list[tuple[str, str]] = []

    def point(kind: str, arg: object) -> None:
        seen.append((kind, arg[1].mode))  # type: ignore[index]
        clock.spend(10)  # others "run" at every point: the grant must be stamped after it

    old, hooks.schedule_point = hooks.schedule_point, point
    try:
        sem.down_write()
        sem.downgrade_write()
        sem.up_read()
    finally:
        hooks.schedule_point = old
    assert seen == [("lock_request", "W"), ("lock_acquired", "W"), ("lock_downgraded", "R"), ("lock_released", "R")]
    w = sem.history[0]
    assert w.req_ns == 0 and w.acq_ns == 10  # stamped after the request's schedule point
