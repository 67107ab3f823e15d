"""bounded's ``populate_vma_lock`` (mmlab/mm/gup.py) and the per-VMA lock under it
(mmlab/locking/vma_lock.py): a populate under the vma's read lock, re-taken every batch.

The populate and a writer run as tasks of a controlled execution on a virtual clock: the writer
is started once the populate has a few batches in, and runs whenever it can, so every wait below
is exact virtual time and the outcome is the same on every run. The lock's own mechanism
(a writer marks the vma before it waits, so readers cannot starve it; its wait is recorded and
seen by the watchdog) is tested with real threads."""

from __future__ import annotations

import threading
from typing import Callable, Optional, Sequence

import pytest

from mmlab.clock import DEFAULT_COSTS
from mmlab.flags import (MAP_ANONYMOUS, MAP_FIXED, MAP_POPULATE, MAP_PRIVATE, PAGE_SIZE, PROT_NONE, PROT_READ,
                         PROT_WRITE)
from mmlab.harness.oracle import check
from mmlab.harness.watchdog import Watchdog
from mmlab.locking.rwsem import LockRecord
from mmlab.locking.vma_lock import VMA_LOCK_NAME, VMA_LOCK_OFFSET
from mmlab.locking.watch import wait_until, watch
from mmlab.mm.gup import POPULATE_CHUNK
from mmlab.mm.mm_struct import MM
from mmlab.sched.controller import DONE, Controller
from mmlab.sched.scheduler import Scheduler

SIZE = 16 << 20  # 4096 pages
PAGES = SIZE // PAGE_SIZE
BATCH = 1024  # two page tables: a populate's schedule points come every table, so a writer
# that starts after the first one arrives in the middle of a batch
ON = f"bounded+populate_vma_lock+populate_batch_pages={BATCH}"
OFF = f"bounded+populate_vma_lock=off+populate_batch_pages={BATCH}"
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
START_AFTER = POPULATE_CHUNK  # pages the populate has made present when the writer starts


class WriterWhenStarted(Scheduler):
    """Task 0 (the populate) runs alone until *started()*; then task 1 (the writer) runs
    whenever it can."""

    name = "writer-first"

    def __init__(self, started: Callable[[], bool]) -> None:
        self.started = started

    def new_execution(self) -> bool:
        return True

    def next_task(self, runnable: Sequence[int], current: Optional[int]) -> int:
        if 1 in runnable and (self.started() or 0 not in runnable):
            return 1
        return runnable[0]

    def next_u64(self) -> int:
        return 0


def _race(spec: str, writer: Callable[[MM, int], None]) -> tuple[MM, int, list[LockRecord], dict[str, int]]:
    """Populate SIZE under *spec* while *writer(mm, addr)* runs once the populate is under way.
    Returns the model, the populated address, the writer's lock records (mmap_sem and vma lock,
    as the listeners get them) and what the populate had done when the writer finished."""
    mm = MM.controlled(spec, DEFAULT_COSTS)
    # the range first placed and unmapped: the populate maps it again at the same place
    addr = mm.mmap(0, SIZE, RW, ANON)
    mm.munmap(addr, SIZE)
    recs: list[LockRecord] = []
    mm.mmap_sem.listeners.append(lambda r: recs.append(r) if r.task == "writer" else None)
    seen: dict[str, int] = {}

    def populating() -> int:
        c = next((c for c in mm.running.values() if c.populates), None)
        return c.pages if c is not None else (PAGES if seen.get("populated") else 0)

    def populate() -> None:
        assert mm.mmap(addr, SIZE, RW, ANON | MAP_FIXED | MAP_POPULATE) == addr
        seen["populated"] = 1

    def write() -> None:
        writer(mm, addr)
        seen["pages_when_writer_done"] = populating()

    ctl = Controller(WriterWhenStarted(lambda: populating() >= START_AFTER), mm.clock, [mm.mmap_sem])
    ex = ctl.run([("populator", populate), ("writer", write)])
    assert ex.status == DONE and not ex.errors, ex.report or ex.errors
    return mm, addr, recs, seen


def _waits(recs: list[LockRecord]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in recs:
        out[r.lock] = out.get(r.lock, 0) + max(r.wait_ns, 0)
    return out


def _elsewhere(mm: MM, addr: int) -> None:
    """A one-page mmap + munmap outside the populated vma (PROT_NONE: it merges with nothing,
    even when it lands right below it)."""
    a = mm.mmap(0, PAGE_SIZE, PROT_NONE, ANON)
    assert a + PAGE_SIZE <= addr or a >= addr + SIZE
    mm.munmap(a, PAGE_SIZE)


def test_a_writer_elsewhere_does_not_wait_for_the_populate() -> None:
    mm, addr, recs, seen = _race(ON, _elsewhere)
    assert _waits(recs) == {"mmap_sem": 0}  # no wait at all, on either lock
    assert START_AFTER <= seen["pages_when_writer_done"] < PAGES  # it ran in the middle of the populate
    assert mm.pt.count_present(addr, addr + SIZE) == PAGES
    # the same writer under bounded without the switch waits for the rest of the batch
    _, _, recs_off, _ = _race(OFF, _elsewhere)
    assert _waits(recs_off)["mmap_sem"] == (BATCH - POPULATE_CHUNK) * DEFAULT_COSTS.cost("anon_page")


def test_a_writer_on_the_vma_waits_at_most_one_batch_and_the_wait_is_recorded() -> None:
    def mprotect_in_it(mm: MM, addr: int) -> None:
        mm.mprotect(addr + SIZE - 16 * PAGE_SIZE, 16 * PAGE_SIZE, PROT_READ)

    mm, addr, recs, seen = _race(ON, mprotect_in_it)
    w = _waits(recs)
    page_ns = DEFAULT_COSTS.cost("anon_page")
    # in vma_start_write(), for the rest of the populate's batch: no more
    assert w[VMA_LOCK_NAME] == (BATCH - POPULATE_CHUNK) * page_ns
    assert w["mmap_sem"] == 0  # mmap_sem was free: the populate does not hold it
    vrec = [r for r in recs if r.lock == VMA_LOCK_NAME]
    assert len(vrec) == 1 and vrec[0].how == "vma_start_write" and vrec[0].call == "mprotect"
    assert list(mm.vma_locks.history) == vrec
    assert seen["pages_when_writer_done"] < PAGES  # the writer did not wait for the whole populate
    # the populate finished after the writer, its range intact and every page graded OK
    assert mm.pt.count_present(addr, addr + SIZE) == PAGES
    assert check(mm).outcome == "OK"
    # with a batch twice as big, the wait moves with it
    _, _, recs2, _ = _race(ON.replace(f"={BATCH}", f"={2 * BATCH}"), mprotect_in_it)
    assert _waits(recs2)[VMA_LOCK_NAME] == (2 * BATCH - POPULATE_CHUNK) * page_ns


@pytest.mark.parametrize("identity,outcome", [(True, "OK"), (False, "FORBIDDEN")])
def test_identity_stops_the_populate_at_a_replaced_vma(identity: bool, outcome: str) -> None:
    def replace_upper_half(mm: MM, addr: int) -> None:
        mm.mmap(addr + SIZE // 2, SIZE // 2, RW, ANON | MAP_FIXED)

    spec = ON + ("" if identity else "+populate_checks_identity=off")
    mm, addr, _, _ = _race(spec, replace_upper_half)
    assert check(mm).outcome == outcome  # the oracle sees the replacement populated without it
    upper = mm.pt.count_present(addr + SIZE // 2, addr + SIZE)
    assert (upper == 0) if identity else (upper > 0)
    assert mm.pt.count_present(addr, addr + SIZE // 2) == PAGES // 2


def test_a_marked_vma_refuses_new_readers_so_readers_cannot_starve_the_writer(threads) -> None:
    """vma_start_write() marks the vma (VMA_LOCK_OFFSET) before it waits: a reader that comes
    back (a populate's next batch, a fault) fails and falls back to mmap_sem instead of keeping
    the writer out; the writer goes on as soon as the readers it found are gone."""
    mm = MM("v6.18", DEFAULT_COSTS.scaled(0.0))
    a = mm.mmap(0, SIZE, RW, ANON)
    vma = mm.vmas.vma_lookup(a)
    locks = mm.vma_locks
    cv = watch(locks)
    assert locks.start_read(vma)
    mm.mmap_write_lock()  # the writer's mmap_sem write hold (the reader does not need mmap_sem)
    done = threading.Event()

    def writer() -> None:
        locks.start_write(vma)
        done.set()

    threads.start(writer, "writer")
    assert wait_until(cv, lambda: bool(locks.waiters))
    assert locks.write_pending(vma) and vma.vm_refcnt == VMA_LOCK_OFFSET + 1
    for _ in range(3):  # the reader comes back: refused every time
        assert not locks.start_read(vma)
    assert not done.is_set()
    locks.end_read(vma)
    assert done.wait(10)
    threads.join()
    assert vma.vm_lock_seq == locks.mm_lock_seq and vma.vm_refcnt == 0 and not locks.waiters
    mm.mmap_write_unlock()
    assert locks.start_read(vma)  # write-unlocked: readers are welcome again
    locks.end_read(vma)


def test_the_watchdog_reports_a_writer_waiting_for_a_vmas_readers(threads) -> None:
    mm = MM.controlled("v6.18", DEFAULT_COSTS)  # a virtual clock that only the test moves
    a = mm.mmap(0, SIZE, RW, ANON)
    vma = mm.vmas.vma_lookup(a)
    locks = mm.vma_locks
    cv = watch(locks)
    assert locks.start_read(vma)
    me = threading.current_thread()
    from mmlab.current import current
    locks.note_holder(vma, current())  # as the populate lists its hold
    wd = Watchdog(mm, stall_ms=1.0, hang_ms=None)

    def writer() -> None:
        mm.mmap_write_lock()
        locks.start_write(vma)
        mm.mmap_write_unlock()

    threads.start(writer, "vma-writer")
    assert wait_until(cv, lambda: bool(locks.waiters))
    mm.clock.advance_to(mm.clock.now_ns() + 2_000_000)  # type: ignore[attr-defined]
    reports = wd.check()
    assert len(reports) == 1
    r = reports[0]
    assert r.lock == VMA_LOCK_NAME and r.mode == "W" and r.waiting_ms >= 2.0
    assert [h.tid for h in r.holders] == [current().tid] and me.is_alive()
    assert "waiting for vma_lock (write)" in r.text()
    locks.drop_holder(current())
    locks.end_read(vma)
    threads.join()
    wd._close_finished()
    assert r.final_wait_ms is not None and r.final_wait_ms >= 2.0


def test_a_task_step_counts_its_wait_in_vma_start_write() -> None:
    """The latency harness's own accounting (TaskGroup, real threads): a writer toggling the
    protection of a page inside the vma being populated waits in vma_start_write(), and its
    steps' waits include those waits -- the policy does not look better by hiding them."""
    from mmlab.harness.tasks import Step, Task, TaskGroup

    mm = MM(ON, DEFAULT_COSTS)
    size = 64 << 20  # 16 batches of 1024 pages, 1.6 ms each
    addr = mm.mmap(0, size, RW, ANON)
    mm.munmap(addr, size)
    cv = watch(mm.vma_locks)
    done = threading.Event()
    mine: list[LockRecord] = []

    def populate(mm: MM) -> None:
        try:
            mm.mmap(addr, size, RW, ANON | MAP_FIXED | MAP_POPULATE)
        finally:
            done.set()

    def toggles(task: Task):  # type: ignore[no-untyped-def]
        wait_until(cv, lambda: bool(mm.vma_locks.holders) or done.is_set())
        page = addr + size - 2 * PAGE_SIZE
        while not done.is_set():
            yield Step("mprotect", lambda mm: mm.mprotect(page, PAGE_SIZE, PROT_READ))
            yield Step("mprotect", lambda mm: mm.mprotect(page, PAGE_SIZE, RW))

    mm.mmap_sem.listeners.append(lambda r: mine.append(r) if r.task == "writer" and r.lock == VMA_LOCK_NAME else None)
    pop = Task("populator", [Step("populate", populate)])
    writer = Task("writer", toggles)
    res = TaskGroup(mm, [pop, writer], until=[pop, writer], timeout_s=60).run()
    res.raise_errors()
    assert mine, "the writer never met the populate's vma lock"  # 64 MiB: it always does
    st = writer.stats["mprotect"]
    assert st.max_wait_ns >= max(r.wait_ns for r in mine) > 0
    assert mm.pt.count_present(addr, addr + size) == size // PAGE_SIZE
