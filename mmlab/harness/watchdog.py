"""The stall watchdog: the hung-task detector (kernel/hung_task.c) for mmap_sem waits.

A monitor thread looks at the live lock state every ``period_ms`` (``mm.mmap_sem.waiters`` and
``holders``, and ``mm.vma_locks.waiters``: a writer in vma_start_write() waiting for a vma's
readers, with the populate holding that vma's read lock as its holder). When a task has waited longer than ``stall_ms`` it records -- once per wait -- and
prints a :class:`StallReport`: the waiter and the mode it waits for, every holder (task, call,
mode, held since when, and its progress, e.g. "populate 41,312 of 262,144 pages"), and any
writer queued ahead of a waiting reader (the convoy: with a fair rwsem, a reader waits behind a
queued writer even while only readers hold the lock).

``hang_ms`` is the hard limit, like hung_task_timeout_secs with hung_task_panic: a wait or a
task step older than that is a hang. The watchdog then dumps every thread's stack
(``sys._current_frames()``) and the lock state into :attr:`Watchdog.hang`, prints it, and asks
the group to stop (:meth:`TaskGroup.declare_hang`); the CLI exits 3.
"""

from __future__ import annotations

import sys
import threading
import traceback
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

from mmlab.locking.rwsem import WRITE, LockRecord

if TYPE_CHECKING:
    from mmlab.harness.tasks import TaskGroup
    from mmlab.mm.mm_struct import MM

__all__ = ["Watchdog", "StallReport", "HolderInfo", "format_progress"]


def format_progress(progress: Optional[tuple[str, int, int]]) -> str:
    """TaskCtx.progress as text: ``populate 41,312 of 262,144 pages``."""
    if not progress:
        return ""
    what, done, total = progress
    return f"{what} {done:,} of {total:,} pages"


@dataclass
class HolderInfo:
    task: str
    tid: int
    mode: str
    call: str
    call_id: int
    held_since_ms: float   # relative to the start of the run
    held_ms: float
    progress: str


@dataclass
class StallReport:
    """One wait that passed the stall bound, as seen at the moment it passed it."""

    waiter: str
    tid: int
    mode: str               # what it waits for: "R" or "W"
    call: str
    call_id: int
    waiting_ms: float
    since_ms: float         # when it asked, relative to the start of the run
    holders: list[HolderInfo] = field(default_factory=list)
    queued_ahead: list[dict[str, object]] = field(default_factory=list)
    final_wait_ms: Optional[float] = None  # filled in when the wait ended (if seen)
    lock: str = "mmap_sem"  # or "vma_lock": vma_start_write() waiting for the vma's readers

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def text(self) -> str:
        want = "read" if self.mode == "R" else "write"
        lines = [f"INFO: task {self.waiter}:{self.tid} blocked for more than {self.waiting_ms:.1f} ms "
                 f"waiting for {self.lock} ({want}) in {self.call or '?'}#{self.call_id}"]
        if not self.holders:
            lines.append("  held by: nobody (the lock is being handed over)")
        for h in self.holders:
            prog = f", {h.progress}" if h.progress else ""
            lines.append(f"  held by {h.task}:{h.tid} ({'read' if h.mode == 'R' else 'write'}) in "
                         f"{h.call or '?'}#{h.call_id} since {h.held_since_ms:.1f} ms "
                         f"(for {h.held_ms:.1f} ms{prog})")
        for q in self.queued_ahead:
            lines.append(f"  queued ahead: {q['task']} ({'write' if q['mode'] == 'W' else 'read'}) in "
                         f"{q['call']}#{q['call_id']}, waiting {q['waiting_ms']:.1f} ms")
        return "\n".join(lines)


class Watchdog:
    """Watch *mm*'s mmap_sem while a TaskGroup runs (``group.run()`` starts and stops it).

    ``out``: where reports are printed (a callable taking a string; None: silent).
    """

    def __init__(self, mm: "MM", stall_ms: float = 100.0, hang_ms: Optional[float] = 30_000.0,
                 period_ms: Optional[float] = None, out: Optional[Callable[[str], None]] = None,
                 max_reports: int = 1000) -> None:
        if stall_ms <= 0:
            raise ValueError("stall_ms must be > 0")
        self.mm = mm
        self.stall_ns = int(stall_ms * 1e6)
        self.hang_ns = int(hang_ms * 1e6) if hang_ms else None
        self.period_s = (period_ms if period_ms is not None else min(max(stall_ms / 4, 1.0), 50.0)) / 1e3
        self.out = out
        self.max_reports = max_reports
        self.stalls: list[StallReport] = []
        self.hang: Optional[dict[str, object]] = None
        self._seen: dict[int, StallReport] = {}  # id(LockRecord) -> report, while the wait lasts
        self._open: dict[int, LockRecord] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._group: Optional["TaskGroup"] = None
        self._t0 = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self, group: Optional["TaskGroup"] = None) -> None:
        self._group = group
        self._t0 = group.t_start_ns if group is not None and group.t_start_ns >= 0 else self.mm.clock.now_ns()
        self._stop.clear()
        self._thread = threading.Thread(target=self._main, name="mmlab-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        self._close_finished()

    def _main(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - a watchdog must not die of a racing snapshot
                continue

    # ------------------------------------------------------------------ the check
    def check(self) -> list[StallReport]:
        """One scan (the monitor thread calls it each period; tests may call it directly)."""
        sem = self.mm.mmap_sem
        vl = getattr(self.mm, "vma_locks", None)  # (a trace replay's stand-in has mmap_sem only)
        now = self.mm.clock.now_ns()
        waiters = list(sem.waiters.values())
        vwaiters = list(vl.waiters.values()) if vl is not None else []
        holders = list(sem.holders.values())
        new: list[StallReport] = []
        self._close_finished()
        for w in waiters + vwaiters:
            waited = now - w.req_ns
            if waited >= self.stall_ns and id(w) not in self._seen and len(self.stalls) < self.max_reports:
                r = self._report(w, waiters, holders, now) if w.lock == sem.name else self._vma_report(w, now)
                self._seen[id(w)] = r
                self._open[id(w)] = w
                self.stalls.append(r)
                new.append(r)
                if self.out is not None:
                    self.out(r.text())
            if self.hang_ns is not None and waited >= self.hang_ns and self.hang is None:
                self.dump_hang(f"task {w.task} waited {waited / 1e6:.0f} ms for {w.lock}")
        if self.hang_ns is not None and self.hang is None and self._group is not None:
            for t in self._group.tasks:
                s = t.op_start_ns
                if t.state == "running" and t.op and s >= 0 and now - s >= self.hang_ns:
                    self.dump_hang(f"task {t.name} stuck in {t.op} for {(now - s) / 1e6:.0f} ms")
                    break
        return new

    def _close_finished(self) -> None:
        """Fill in how long each reported wait lasted, once it is over: the record has left the
        wait list and carries its grant stamp (the lock may stamp acq_ns early and re-stamp it)."""
        waiting = self.mm.mmap_sem.waiters
        vl = getattr(self.mm, "vma_locks", None)
        vwaiting = vl.waiters if vl is not None else {}
        for k, rec in list(self._open.items()):
            if waiting.get(rec.tid) is not rec and vwaiting.get(rec.tid) is not rec and rec.acq_ns > rec.req_ns:
                self._seen[k].final_wait_ms = (rec.acq_ns - rec.req_ns) / 1e6
                del self._open[k]

    def _report(self, w: LockRecord, waiters: list[LockRecord], holders: list[LockRecord],
                now: int) -> StallReport:
        hs = [HolderInfo(h.task, h.tid, h.mode, h.call, h.call_id, (h.acq_ns - self._t0) / 1e6,
                         (now - h.acq_ns) / 1e6, format_progress(h.ctx.progress))
              for h in holders]
        ahead = [dict(task=q.task, tid=q.tid, mode=q.mode, call=q.call, call_id=q.call_id,
                      waiting_ms=(now - q.req_ns) / 1e6)
                 for q in waiters if q is not w and q.req_ns < w.req_ns and q.mode == WRITE]
        return StallReport(w.task, w.tid, w.mode, w.call, w.call_id, (now - w.req_ns) / 1e6,
                           (w.req_ns - self._t0) / 1e6, hs, ahead)

    def _vma_report(self, w: LockRecord, now: int) -> StallReport:
        """A writer in vma_start_write(): its holders are the listed readers of that vma."""
        vl = self.mm.vma_locks
        vma = vl.waiting_for.get(w.tid)
        hs = [HolderInfo(c.name, c.tid, "R", c.call_name, c.call_id, (t - self._t0) / 1e6, (now - t) / 1e6,
                         format_progress(c.progress))
              for v, c, t in list(vl.holders.values()) if v is vma]
        return StallReport(w.task, w.tid, w.mode, w.call, w.call_id, (now - w.req_ns) / 1e6,
                           (w.req_ns - self._t0) / 1e6, hs, [], lock=w.lock)

    # ------------------------------------------------------------------ the hard limit
    def dump_hang(self, why: str) -> dict[str, object]:
        """Every thread's stack and the lock state; asks the group (if any) to stop."""
        names = {t.ident: t.name for t in threading.enumerate()}
        stacks = {}
        for ident, frame in sys._current_frames().items():
            stacks[f"{names.get(ident, '?')} ({ident})"] = "".join(traceback.format_stack(frame))
        self.hang = {"why": why, "lock": self.mm.mmap_sem.state(), "stacks": stacks}
        if self.out is not None:
            self.out(self.hang_text())
        if self._group is not None:
            self._group.declare_hang()
        return self.hang

    def hang_text(self) -> str:
        if self.hang is None:
            return ""
        h = self.hang
        lines = [f"HANG: {h['why']}", f"lock state: {h['lock']}"]
        for name, st in h["stacks"].items():  # type: ignore[union-attr]
            lines.append(f"--- thread {name}\n{st}")
        return "\n".join(lines)
