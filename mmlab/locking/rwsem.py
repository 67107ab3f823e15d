"""mmap_sem: a true reader-writer lock (readerwriterlock.RWLockFairD), recorded and observable.

Models ``struct rw_semaphore`` as mm->mmap_sem (``mmap_lock`` since 5.8): down_read, down_write,
up_read, up_write, downgrade_write, down_read_trylock and rwsem_is_contended. The lock underneath
is readerwriterlock's fair, downgradable lock: a writer that queues takes the entry turnstile
first, so every reader that arrives after it waits too. That is the fairness Michel Lespinasse
pointed at: "as soon as a writer gets queued on that mmap_sem ... [it] blocks any new readers",
and it is what turns a long read hold into a stall for faulting threads behind a queued writer.

Every acquisition is recorded as a :class:`LockRecord` (task, mode, call, requested / acquired /
released in ns) into a bounded history and to listeners; ``holders`` and ``waiters`` show the
live state (who holds, who waits, since when, with the holder's progress) to the watchdog.
Each request, grant, release and downgrade is a schedule point for controlled mode.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, Optional

from readerwriterlock.rwlock import RWLockFairD

from mmlab.clock import Clock, RealClock, hooks
from mmlab.current import TaskCtx, current

__all__ = ["MmapSem", "LockRecord", "READ", "WRITE"]

READ = "R"
WRITE = "W"


class LockRecord:
    """One acquisition of the lock: who, in which mode, for which call, and when."""

    __slots__ = ("lock", "task", "tid", "ctx", "mode", "call_id", "call", "req_ns", "acq_ns", "rel_ns", "how")

    def __init__(self, lock: str, ctx: TaskCtx, mode: str, now: int, how: str = "") -> None:
        self.lock = lock
        self.ctx = ctx
        self.task = ctx.name
        self.tid = ctx.tid
        self.mode = mode
        self.call_id = ctx.call_id
        self.call = ctx.call_name
        self.req_ns = now
        self.acq_ns = -1
        self.rel_ns = -1
        self.how = how  # "", "trylock", "downgrade", "retake"

    @property
    def wait_ns(self) -> int:
        return (self.acq_ns - self.req_ns) if self.acq_ns >= 0 else -1

    @property
    def hold_ns(self) -> int:
        return (self.rel_ns - self.acq_ns) if self.rel_ns >= 0 and self.acq_ns >= 0 else -1

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__ if k != "ctx"}

    def __repr__(self) -> str:
        return (f"<{self.lock} {self.mode} {self.task} {self.call}#{self.call_id} "
                f"wait={self.wait_ns} hold={self.hold_ns}{' ' + self.how if self.how else ''}>")


Listener = Callable[[LockRecord], None]


class MmapSem:
    """The recorded mmap_sem. Called from any thread; the calling thread is the task."""

    def __init__(self, clock: Optional[Clock] = None, name: str = "mmap_sem", history: int = 200_000) -> None:
        self.name = name
        self.clock = clock or RealClock()
        self._rw = RWLockFairD()
        self._tl = threading.local()
        self.holders: dict[int, LockRecord] = {}
        self.waiters: dict[int, LockRecord] = {}
        self.history: collections.deque[LockRecord] = collections.deque(maxlen=history)
        self.listeners: list[Listener] = []
        self.acquisitions = 0
        # The slow path's wait list, in arrival order (tickets), as the kernel's rwsem keeps it.
        self._wait_list = threading.Condition(threading.Lock())
        self._next_ticket = 0
        self._serving = 0

    # ------------------------------------------------------------------ acquire
    def down_read(self, how: str = "") -> None:
        self._acquire(READ, how)

    def down_write(self, how: str = "") -> None:
        self._acquire(WRITE, how)

    def down_read_trylock(self) -> bool:
        """Take the lock for read if that needs no wait; never queues."""
        ctx = current()
        now = self.clock.now_ns()
        rec = LockRecord(self.name, ctx, READ, now, "trylock")
        hp = hooks.schedule_point
        if hp is not None and hp("lock_trylock", (self, rec)) is False:
            return False  # controlled mode: the scheduler's model of the queue says no
        h = self._rw.gen_rlock()
        if not h.acquire(blocking=False):
            return False
        rec.acq_ns = now
        self._tl.h = h
        self._tl.rec = rec
        self.holders[ctx.tid] = rec
        self.acquisitions += 1
        return True

    def _acquire(self, mode: str, how: str) -> None:
        ctx = current()
        hp = hooks.schedule_point
        rec = LockRecord(self.name, ctx, mode, self.clock.now_ns(), how)
        if hp is not None:
            hp("lock_request", (self, rec))
        h = self._rw.gen_rlock() if mode is READ else self._rw.gen_wlock()
        if self._next_ticket != self._serving or not h.acquire(blocking=False):
            self.waiters[ctx.tid] = rec
            ctx.blocked_on = self.name
            try:
                self._slowpath(h)
            finally:
                ctx.blocked_on = None
                del self.waiters[ctx.tid]
        rec.acq_ns = self.clock.now_ns()
        self._tl.h = h
        self._tl.rec = rec
        self.holders[ctx.tid] = rec
        self.acquisitions += 1
        if hp is not None:
            hp("lock_acquired", (self, rec))

    def _slowpath(self, h) -> None:  # type: ignore[no-untyped-def]
        """rwsem_down_{read,write}_slowpath(): queue, and enter in arrival order.

        readerwriterlock's turnstile is a threading.Lock, which wakes waiters in no particular
        order: a task that drops the lock and takes it again at once (a populate yielding to a
        writer) could win it back before the queued writer's thread is even scheduled. The
        kernel's wait list is FIFO, so a re-take queues behind the writer; tickets do the same.
        Only the head of the queue blocks in the lock itself; the fast path is taken only when
        nobody is queued."""
        q = self._wait_list
        with q:
            ticket = self._next_ticket
            self._next_ticket += 1
            while self._serving != ticket:
                q.wait()
        try:
            h.acquire()
        finally:
            with q:
                self._serving += 1
                q.notify_all()

    # ------------------------------------------------------------------ release
    def up_read(self) -> None:
        self._release(READ)

    def up_write(self) -> None:
        self._release(WRITE)

    def _release(self, mode: str) -> None:
        self.clock.settle()  # work done under the lock is paid under the lock
        tl = self._tl
        rec: LockRecord = tl.rec
        if rec.mode is not mode:
            raise RuntimeError(f"{self.name}: up_{'read' if mode is READ else 'write'} of a {rec.mode} hold")
        rec.rel_ns = self.clock.now_ns()
        del self.holders[rec.tid]
        tl.rec = None
        h = tl.h
        tl.h = None
        h.release()
        self.history.append(rec)
        for fn in self.listeners:
            fn(rec)
        hp = hooks.schedule_point
        if hp is not None:
            hp("lock_released", (self, rec))

    def downgrade_write(self) -> None:
        """Atomically turn the write hold into a read hold; waiting readers may now enter."""
        self.clock.settle()
        tl = self._tl
        rec: LockRecord = tl.rec
        if rec.mode is not WRITE:
            raise RuntimeError(f"{self.name}: downgrade_write without a write hold")
        now = self.clock.now_ns()
        tl.h = tl.h.downgrade()
        rec.rel_ns = now
        nrec = LockRecord(self.name, rec.ctx, READ, now, "downgrade")
        nrec.acq_ns = now
        tl.rec = nrec
        self.holders[rec.tid] = nrec
        self.history.append(rec)
        for fn in self.listeners:
            fn(rec)
        hp = hooks.schedule_point
        if hp is not None:
            hp("lock_downgraded", (self, nrec))

    # ------------------------------------------------------------------ queries
    def is_contended(self) -> bool:
        """rwsem_is_contended(): somebody waits for this lock."""
        return bool(self.waiters)

    def writer_waiting(self) -> bool:
        return any(r.mode is WRITE for r in list(self.waiters.values()))

    def held_by_current(self) -> Optional[str]:
        rec = getattr(self._tl, "rec", None)
        return rec.mode if rec is not None else None

    def state(self) -> dict[str, object]:
        """A snapshot of who holds and who waits, for reports and the watchdog."""
        now = self.clock.now_ns()
        return {
            "lock": self.name,
            "holders": [dict(task=r.task, mode=r.mode, call=r.call, call_id=r.call_id,
                             held_ns=now - r.acq_ns, progress=r.ctx.progress)
                        for r in list(self.holders.values())],
            "waiters": [dict(task=r.task, mode=r.mode, call=r.call, call_id=r.call_id,
                             waiting_ns=now - r.req_ns)
                        for r in list(self.waiters.values())],
        }
