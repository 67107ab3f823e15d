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
from mmlab.current import TaskCtx, current, task_local

__all__ = ["MmapSem", "LockRecord", "READ", "WRITE"]

READ = "R"
WRITE = "W"


class LockRecord:
    """One acquisition of the lock: who, in which mode, for which call, and when."""

    __slots__ = ("lock", "task", "tid", "ctx", "mode", "call_id", "call", "req_ns", "acq_ns", "rel_ns", "how",
                 "_h")

    def __init__(self, lock: str, ctx: TaskCtx, mode: str, now: int, how: str = "", acq_ns: int = -1) -> None:
        self.lock = lock
        self.ctx = ctx
        self.task = ctx.name
        self.tid = ctx.tid
        self.mode = mode
        self.call_id = ctx.call_id
        self.call = ctx.call_name
        self.req_ns = now
        self.acq_ns = acq_ns
        self.rel_ns = -1
        self.how = how  # "", "trylock", "downgrade", "populate", "retake", "fault"
        # _h, set only on read holds: the readerwriterlock handle to release through (None: the
        # primitives); write holds are released through MmapSem._wh

    @property
    def wait_ns(self) -> int:
        return (self.acq_ns - self.req_ns) if self.acq_ns >= 0 else -1

    @property
    def hold_ns(self) -> int:
        return (self.rel_ns - self.acq_ns) if self.rel_ns >= 0 and self.acq_ns >= 0 else -1

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__ if k not in ("ctx", "_h")}

    def __repr__(self) -> str:
        return (f"<{self.lock} {self.mode} {self.task} {self.call}#{self.call_id} "
                f"wait={self.wait_ns} hold={self.hold_ns}{' ' + self.how if self.how else ''}>")


Listener = Callable[[LockRecord], None]
# down_read/down_write fill a new record in place (object.__new__ plus the stores of
# LockRecord.__init__): an __init__ frame alone costs about a third of the bare lock pair.
_new_record = object.__new__


def _has_primitives(rw: RWLockFairD) -> bool:
    """RWLockFairD (readerwriterlock 1.0.x) is three threading.Locks and a reader count; its
    acquire() takes them in a fixed order. The recorded lock takes the same locks in the same
    order for its uncontended try (see MmapSem), or falls back to acquire(blocking=False)."""
    return all(hasattr(rw, a) for a in ("c_lock_read", "c_lock_write", "c_lock_read_count", "v_read_count"))


class MmapSem:
    """The recorded mmap_sem. Called from any thread; the calling thread is the task.

    Fast path: an uncontended acquisition is one try of the lock, made on RWLockFairD's own
    three locks in the order its acquire() takes them (the library's acquire(blocking=False)
    costs more than a whole blocking pair, from its deadline arithmetic). Only when the try fails
    is the task listed in ``waiters`` and blocked in the library's acquire(), so
    ``is_contended()`` lists exactly the tasks that wait. An acquisition that did not wait is
    stamped once (acquired = requested); its release is stamped again.
    """

    def __init__(self, clock: Optional[Clock] = None, name: str = "mmap_sem", history: int = 200_000) -> None:
        self.name = name
        self.clock = clock or RealClock()
        self._rw = RWLockFairD()
        self._wh = self._rw.gen_wlock()  # writers exclude each other: one handle serves them all
        self._now = self.clock.now_ns  # bound once: RealClock's is time.perf_counter_ns itself
        self._settle = self.clock.settle
        self._prim = _has_primitives(self._rw)
        self._l_read = self._rw.c_lock_read if self._prim else None
        self._l_count = self._rw.c_lock_read_count if self._prim else None
        self._l_write = self._rw.c_lock_write if self._prim else None
        self.holders: dict[int, LockRecord] = {}
        self.waiters: dict[int, LockRecord] = {}
        self.history: collections.deque[LockRecord] = collections.deque(maxlen=history)
        self.listeners: list[Listener] = []
        self.acquisitions = 0
        # The slow path's wait list, in arrival order (tickets), as the kernel's rwsem keeps it.
        self._wait_list = threading.Condition(threading.Lock())
        self._next_ticket = 0
        self._serving = 0

    # ------------------------------------------------------------------ the real lock
    # down_read/down_write/up_read/up_write are written out flat (no helper calls, the task from
    # task_local, records filled in place): a Python call costs about as much as a third of the
    # bare lock pair, and every syscall of the model takes the lock at least once.

    def _try_read(self) -> object:
        """One try for read, never waiting. Returns the handle to release through (None: the
        primitives), or False when it would have to wait."""
        if not self._prim:
            h = self._rw.gen_rlock()
            return h if h.acquire(blocking=False) else False
        rw = self._rw
        if not self._l_read.acquire(False):  # a writer holds or is queued (it holds c_lock_read)
            return False
        if not self._l_count.acquire(False):  # a reader is inside its own entry or exit
            self._l_read.release()
            return False
        rw.v_read_count += 1
        if rw.v_read_count == 1 and not self._l_write.acquire(False):
            rw.v_read_count -= 1
            self._l_count.release()
            self._l_read.release()
            return False
        self._l_count.release()
        self._l_read.release()
        return None

    def _try_write(self) -> bool:
        """One try for write, never waiting: RWLockFairD's writer acquire() without the wait."""
        if not self._prim:
            return self._wh.acquire(blocking=False)
        if not self._l_read.acquire(False):
            return False
        if not self._l_write.acquire(False):  # readers hold it
            self._l_read.release()
            return False
        self._wh.v_locked = True
        return True

    def _wait(self, rec: LockRecord, ctx: TaskCtx, h: object) -> None:
        """The slow path (rwsem_down_{read,write}_slowpath()): listed as a waiter, queued in
        arrival order, and only the head of the queue blocks in the library's own acquire().

        readerwriterlock's turnstile is a threading.Lock, which wakes waiters in no particular
        order: a task that drops the lock and takes it again at once (a populate yielding to a
        writer) could win it back before the queued writer's thread is even scheduled. The
        kernel's wait list is FIFO, so a re-take queues behind the writer; tickets do the same.
        The fast paths are taken only while nobody is queued."""
        rec.acq_ns = -1  # not granted: observers of waiters (the watchdog) must see it so
        self.waiters[ctx.tid] = rec
        ctx.blocked_on = self.name
        q = self._wait_list
        try:
            with q:
                ticket = self._next_ticket
                self._next_ticket += 1
                while self._serving != ticket:
                    q.wait()
            try:
                h.acquire()  # type: ignore[attr-defined]
            finally:
                with q:
                    self._serving += 1
                    q.notify_all()
        finally:
            ctx.blocked_on = None
            del self.waiters[ctx.tid]

    # ------------------------------------------------------------------ acquire
    def down_read(self, how: str = "") -> None:
        try:
            ctx = task_local.ctx
        except AttributeError:
            ctx = current()
        now = self._now()
        rec = _new_record(LockRecord)  # LockRecord(self.name, ctx, READ, now, how, now), inline
        rec.lock = self.name
        rec.ctx = ctx
        rec.task = ctx.name
        rec.tid = ctx.tid
        rec.mode = READ
        rec.call_id = ctx.call_id
        rec.call = ctx.call_name
        rec.rel_ns = -1
        rec.how = how
        rec.req_ns = now
        hp = hooks.schedule_point
        if hp is None:
            rec.acq_ns = now  # stamped once: kept if the try below needs no wait
        else:
            rec.acq_ns = -1  # the controller may list it as a waiter at this point
            hp("lock_request", (self, rec))
        h = self._try_read() if self._next_ticket == self._serving else False  # nobody queued
        if h is False:
            h = self._rw.gen_rlock()
            self._wait(rec, ctx, h)
        if rec.acq_ns < 0:  # it waited, or a schedule point let others run: stamp the grant
            rec.acq_ns = self._now()
        rec._h = h
        self.holders[ctx.tid] = rec  # one hold per task: its release finds the record here
        self.acquisitions += 1
        if hp is not None:
            hp("lock_acquired", (self, rec))

    def down_write(self, how: str = "") -> None:
        try:
            ctx = task_local.ctx
        except AttributeError:
            ctx = current()
        now = self._now()
        rec = _new_record(LockRecord)  # LockRecord(self.name, ctx, WRITE, now, how, now), inline
        rec.lock = self.name
        rec.ctx = ctx
        rec.task = ctx.name
        rec.tid = ctx.tid
        rec.mode = WRITE
        rec.call_id = ctx.call_id
        rec.call = ctx.call_name
        rec.rel_ns = -1
        rec.how = how
        rec.req_ns = now
        hp = hooks.schedule_point
        if hp is None:
            rec.acq_ns = now  # stamped once: kept if the try below needs no wait
        else:
            rec.acq_ns = -1  # the controller may list it as a waiter at this point
            hp("lock_request", (self, rec))
        wh = self._wh
        lr = self._l_read
        if self._next_ticket != self._serving:  # somebody is queued: behind them
            self._wait(rec, ctx, wh)
        elif lr is not None and lr.acquire(False):  # _try_write(), inline
            if self._l_write.acquire(False):
                wh.v_locked = True
            else:
                lr.release()
                self._wait(rec, ctx, wh)
        elif not self._try_write():
            self._wait(rec, ctx, wh)
        if rec.acq_ns < 0:
            rec.acq_ns = self._now()
        self.holders[ctx.tid] = rec  # (released through self._wh: rec._h stays None)
        self.acquisitions += 1
        if hp is not None:
            hp("lock_acquired", (self, rec))

    def down_read_trylock(self) -> bool:
        """Take the lock for read if that needs no wait; never queues."""
        ctx = current()
        now = self._now()
        rec = LockRecord(self.name, ctx, READ, now, "trylock", now)
        hp = hooks.schedule_point
        if hp is not None and hp("lock_trylock", (self, rec)) is False:
            return False  # controlled mode: the scheduler's model of the queue says no
        if self._next_ticket != self._serving:
            return False  # RWSEM_FLAG_WAITERS: a trylock never jumps the queue
        h = self._try_read()
        if h is False:
            return False
        rec._h = h
        self.holders[ctx.tid] = rec
        self.acquisitions += 1
        return True

    # ------------------------------------------------------------------ release
    def _bad_release(self, what: str, rec: Optional[LockRecord]) -> RuntimeError:
        if rec is not None:
            self.holders[rec.tid] = rec  # still held: put it back
        return RuntimeError(f"{self.name}: {what} of a {rec.mode if rec else 'no'} hold")

    def up_read(self) -> None:
        if self.clock.deferring:
            self._settle()  # work done under the lock is paid under the lock
        try:
            tid = task_local.ctx.tid
        except AttributeError:
            tid = current().tid
        rec = self.holders.pop(tid, None)
        if rec is None or rec.mode is not READ:
            raise self._bad_release("up_read", rec)
        rec.rel_ns = self._now()
        h = rec._h
        rec._h = None
        if h is None:  # taken by _try_read(): RWLockFairD's reader release() on its primitives
            rw = self._rw
            self._l_count.acquire()
            rw.v_read_count -= 1
            if not rw.v_read_count:
                self._l_write.release()
            self._l_count.release()
        else:
            h.release()  # type: ignore[attr-defined]
        self.history.append(rec)
        if self.listeners:
            for fn in self.listeners:
                fn(rec)
        hp = hooks.schedule_point
        if hp is not None:
            hp("lock_released", (self, rec))

    def up_write(self) -> None:
        if self.clock.deferring:
            self._settle()
        try:
            tid = task_local.ctx.tid
        except AttributeError:
            tid = current().tid
        rec = self.holders.pop(tid, None)
        if rec is None or rec.mode is not WRITE:
            raise self._bad_release("up_write", rec)
        rec.rel_ns = self._now()
        lw = self._l_write
        if lw is not None:  # RWLockFairD's writer release(), on its primitives
            self._wh.v_locked = False
            lw.release()
            self._l_read.release()
        else:
            self._wh.release()
        self.history.append(rec)
        if self.listeners:
            for fn in self.listeners:
                fn(rec)
        hp = hooks.schedule_point
        if hp is not None:
            hp("lock_released", (self, rec))

    def downgrade_write(self) -> None:
        """Atomically turn the write hold into a read hold; waiting readers may now enter."""
        if self.clock.deferring:
            self._settle()
        try:
            tid = task_local.ctx.tid
        except AttributeError:
            tid = current().tid
        rec = self.holders.get(tid)
        if rec is None or rec.mode is not WRITE:
            raise self._bad_release("downgrade_write", None)
        now = self._now()
        if self._prim:  # RWLockFairD's writer downgrade(), on its primitives: we become a reader
            self._rw.v_read_count += 1
            self._wh.v_locked = False
            self._l_read.release()
            h = None  # released like a read hold taken by _try_read()
        else:
            h = self._wh.downgrade()
        rec.rel_ns = now
        nrec = _new_record(LockRecord)  # LockRecord(self.name, rec.ctx, READ, now, "downgrade", now)
        nrec.lock = self.name
        nrec.ctx = ctx = rec.ctx
        nrec.task = ctx.name
        nrec.tid = ctx.tid
        nrec.mode = READ
        nrec.call_id = ctx.call_id
        nrec.call = ctx.call_name
        nrec.req_ns = nrec.acq_ns = now
        nrec.rel_ns = -1
        nrec.how = "downgrade"
        nrec._h = h
        self.holders[rec.tid] = nrec
        self.history.append(rec)
        if self.listeners:
            for fn in self.listeners:
                fn(rec)
        hp = hooks.schedule_point
        if hp is not None:
            hp("lock_downgraded", (self, nrec))

    # ------------------------------------------------------------------ queries
    def is_contended(self) -> bool:
        """rwsem_is_contended(): somebody waits for this lock."""
        return bool(self.waiters)

    def first_waiter_req_ns(self) -> Optional[int]:
        """When the longest-waiting task asked (rwsem_first_waiter()'s entry; clock ns), or None."""
        ws = list(self.waiters.values())
        return min(r.req_ns for r in ws) if ws else None

    def writer_waiting(self) -> bool:
        return any(r.mode is WRITE for r in list(self.waiters.values()))

    def held_by_current(self) -> Optional[str]:
        rec = self.holders.get(current().tid)
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
