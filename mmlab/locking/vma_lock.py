"""Per-VMA locks (v6.4, Suren Baghdasaryan): page faults without mmap_sem.

Models vma_start_read() / vma_start_read_locked() / vma_end_read() / vma_start_write() /
vma_end_write_all() as 6.15+ has them (include/linux/mmap_lock.h, mm/mmap_lock.c: the vm_lock
rwsem replaced by a reference count). A vma is write-locked while ``vma.vm_lock_seq ==
mm_lock_seq``: a task holding mmap_sem for write marks every vma it modifies (vma_start_write),
and all of them are unlocked at once when mmap_write_unlock() bumps ``mm_lock_seq``.

``vma.vm_refcnt`` counts the vma's readers. vma_start_write() on a vma with readers first adds
:data:`VMA_LOCK_OFFSET` to it (__vma_enter_locked(): "a writer is here"), so every later
vma_start_read() fails and its caller falls back to mmap_sem, and only then waits for the readers
to drain (rcuwait_wait_event(..., vm_refcnt == VMA_LOCK_OFFSET)): readers that keep coming back
(a populate re-taking its read lock every batch, a storm of faults) cannot starve the writer. The
wait is a stall like any other: it is recorded as a :class:`~mmlab.locking.rwsem.LockRecord`
(lock ``vma_lock``, mode W, how ``vma_start_write``) -- listed in ``waiters`` while it lasts (the
watchdog reads it), then put in ``history`` and handed to ``listeners`` (MM shares mmap_sem's
list, so a task's step counts it in its wait). Its hold is zero: the vma stays write-locked
inside the writer's mmap_sem write hold, which mmap_sem records.

A fault first tries vma_start_read() (a trylock that fails on a vma that is write-locked, being
write-locked, or detached) and falls back to mmap_sem on failure. Only profiles with
``per_vma_lock`` use it; ``populate_vma_lock`` (mmlab/mm/gup.py) populates under it too.
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, Callable, Optional

from mmlab.clock import Clock, RealClock, hooks
from mmlab.current import TaskCtx, current
from mmlab.locking.rwsem import WRITE, LockRecord

if TYPE_CHECKING:
    from mmlab.mm.vma import Vma

__all__ = ["VmaLocks", "VMA_LOCK_OFFSET", "VMA_LOCK_NAME"]

VMA_LOCK_OFFSET = 0x40000000
"""Added to vm_refcnt by a writer that waits for the vma's readers (include/linux/mm_types.h)."""
VMA_LOCK_NAME = "vma_lock"
_READERS = VMA_LOCK_OFFSET - 1


class VmaLocks:
    def __init__(self, clock: Optional[Clock] = None,
                 listeners: Optional[list[Callable[[LockRecord], None]]] = None, history: int = 10_000) -> None:
        self.mm_lock_seq = 0
        self.clock = clock or RealClock()
        # taken as the plain lock (``with self._lock``): Condition.__enter__/__exit__ are Python
        # frames around the same lock; wait() and notify_all() need only that it is held
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.read_fails = 0
        self.write_waits = 0
        self.waiters: dict[int, LockRecord] = {}  # tid -> the record of a writer waiting for readers
        # tid -> (vma, task, since ns): long read holds (a populate's; faults are not listed),
        # for the watchdog to name who a writer in vma_start_write() waits for
        self.holders: dict[int, tuple["Vma", TaskCtx, int]] = {}
        self.waiting_for: dict[int, "Vma"] = {}  # tid -> the vma a writer in waiters waits for
        self.history: collections.deque[LockRecord] = collections.deque(maxlen=history)
        self.listeners: list[Callable[[LockRecord], None]] = listeners if listeners is not None else []

    def start_read(self, vma: "Vma") -> bool:
        """vma_start_read(): a read lock on one vma, or False if it is write-locked, a writer
        waits for it (VMA_LOCK_OFFSET), or it is detached."""
        with self._lock:
            if vma.vm_lock_seq == self.mm_lock_seq or vma.vm_refcnt >= VMA_LOCK_OFFSET or vma.detached:
                self.read_fails += 1
                return False
            vma.vm_refcnt += 1
            return True

    def start_read_locked(self, vma: "Vma") -> None:
        """vma_start_read_locked(): a read lock taken while holding mmap_sem for read, which
        keeps every writer out, so it cannot fail."""
        with self._lock:
            if vma.vm_lock_seq == self.mm_lock_seq or vma.vm_refcnt >= VMA_LOCK_OFFSET or vma.detached:
                raise RuntimeError(f"vma_start_read_locked({vma!r}): the vma is being written under mmap_sem read")
            vma.vm_refcnt += 1

    def end_read(self, vma: "Vma") -> None:
        """vma_end_read(): the last reader wakes a writer waiting in vma_start_write()."""
        with self._lock:
            vma.vm_refcnt -= 1
            if not vma.vm_refcnt & _READERS:
                self._cond.notify_all()

    def note_holder(self, vma: "Vma", ctx: TaskCtx) -> None:
        """List *ctx*'s read hold of *vma* in ``holders`` (a populate; a fault is too short)."""
        self.holders[ctx.tid] = (vma, ctx, self.clock.now_ns())

    def drop_holder(self, ctx: TaskCtx) -> None:
        self.holders.pop(ctx.tid, None)

    def write_pending(self, vma: "Vma") -> bool:
        """A writer waits for this vma's readers (vm_refcnt carries VMA_LOCK_OFFSET)."""
        return vma.vm_refcnt >= VMA_LOCK_OFFSET

    def start_write(self, vma: "Vma") -> None:
        """vma_start_write(): called with mmap_sem held for write; marks the vma so new readers
        fail, then waits for its readers to drain. A wait is recorded (see the module doc)."""
        if vma.vm_lock_seq == self.mm_lock_seq:
            return
        with self._lock:
            if not vma.vm_refcnt:
                vma.vm_lock_seq = self.mm_lock_seq
                return
            vma.vm_refcnt += VMA_LOCK_OFFSET
        ctx = current()
        now = self.clock.now_ns()
        rec = LockRecord(VMA_LOCK_NAME, ctx, WRITE, now, "vma_start_write")  # acq_ns -1: not granted
        self.waiting_for[ctx.tid] = vma
        self.waiters[ctx.tid] = rec
        self.write_waits += 1
        try:
            while True:
                with self._lock:
                    if vma.vm_refcnt == VMA_LOCK_OFFSET:
                        vma.vm_refcnt = 0
                        vma.vm_lock_seq = self.mm_lock_seq
                        break
                    hp = hooks.schedule_point
                    if hp is None:
                        self._cond.wait(0.05)
                        continue
                hp("vma_write_wait", vma)  # controlled mode: not holding _cond, runs again once drained
        finally:
            del self.waiters[ctx.tid]
            del self.waiting_for[ctx.tid]
        rec.acq_ns = rec.rel_ns = self.clock.now_ns()
        self.history.append(rec)
        for fn in self.listeners:
            fn(rec)

    def end_write_all(self) -> None:
        """vma_end_write_all(): called by mmap_write_unlock() and mmap_write_downgrade()."""
        self.mm_lock_seq += 1
