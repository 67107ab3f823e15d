"""Tasks: real OS threads acting as the userspace threads of one process.

A :class:`Task` is one ``threading.Thread`` with a name and its native thread id (the TaskCtx of
:mod:`mmlab.current`, which every LockRecord and page-table entry carries). It runs a *script*
of :class:`Step` s -- syscalls or user accesses against one shared :class:`~mmlab.mm.mm_struct.MM`
-- and records each timed step into per-op statistics:

* **wait**: time spent waiting for mmap_sem (and, in vma_start_write(), for a vma's per-VMA readers),
  summed over the step's LockRecords. They come from
  ``mm.mmap_sem.listeners``, which the releasing thread calls with each finished record, so the
  numbers are the model's own (``acq_ns - req_ns``), not a stopwatch around the call. A fault
  served under the per-VMA lock takes no mmap_sem and waits 0;
* **hold**: time spent holding mmap_sem (any mode) in the step;
* **total**: the step's time on the group's clock, interpreter and GIL included (on a dilated
  clock, divided by the dilation like every other time).

Each goes into an HDR histogram (:mod:`mmlab.harness.histograms`). A task runs closed loop (the
next step starts when the last one returns) or open loop (``interval_ns``: steps are scheduled at
a fixed interval; a step that overruns skips the slots it missed, and its wait and total are
recorded with ``record_corrected_value`` so the missed samples are back-filled).

A :class:`TaskGroup` starts its tasks behind one barrier, stops them all when the tasks it waits
for are done, a duration passes, a task raises (reported with its traceback) or the watchdog
declares a hang, and joins every thread with a deadline: it never hangs, and a thread that will
not stop is reported by name.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional, Sequence, Union

from hdrh.histogram import HdrHistogram

from mmlab.current import current, set_task_name
from mmlab.harness.histograms import new_histogram, record, summarize
from mmlab.locking.rwsem import LockRecord

if TYPE_CHECKING:
    from mmlab.harness.watchdog import Watchdog
    from mmlab.mm.mm_struct import MM

__all__ = ["Step", "Script", "OpStats", "Task", "TaskError", "TaskGroup", "GroupResult", "LockSpan"]


@dataclass(frozen=True)
class Step:
    """One call a task makes: ``fn(mm)``, recorded under ``op`` when ``timed``.

    ``expect``: exception types that are a normal outcome of this call (counted as ``errors`` of
    the op, not a task failure) -- an mmap racing an munmap may well get ENOMEM.
    """

    op: str
    fn: Callable[["MM"], object]
    timed: bool = True
    expect: tuple[type[BaseException], ...] = ()


# A script is a sequence of steps (run once, or cycled with repeat=True) or a callable that
# receives the task and yields steps (a generator keeps its own state: the next address, ...).
Script = Union[Sequence[Step], Callable[["Task"], Iterable[Step]]]


class OpStats:
    """Latency of one op of one task: wait / hold / total HDR histograms and exact maxima."""

    def __init__(self, op: str) -> None:
        self.op = op
        self.count = 0
        self.errors = 0
        self.wait: HdrHistogram = new_histogram()
        self.hold: HdrHistogram = new_histogram()
        self.total: HdrHistogram = new_histogram()
        self.max_wait_ns = 0
        self.max_hold_ns = 0
        self.max_total_ns = 0
        self.worst_wait_t_ns = -1  # when (clock ns) the step with the worst wait started
        self.lock_acquisitions = 0

    def add(self, wait_ns: int, hold_ns: int, total_ns: int, t_start_ns: int,
            interval_ns: Optional[int] = None) -> None:
        self.count += 1
        record(self.wait, wait_ns, interval_ns)
        record(self.hold, hold_ns)
        record(self.total, total_ns, interval_ns)
        if wait_ns > self.max_wait_ns or self.worst_wait_t_ns < 0:
            self.max_wait_ns = max(wait_ns, self.max_wait_ns)
            self.worst_wait_t_ns = t_start_ns
        self.max_hold_ns = max(self.max_hold_ns, hold_ns)
        self.max_total_ns = max(self.max_total_ns, total_ns)

    def summary(self) -> dict[str, object]:
        """``count`` and p50/p99/p99.9/max of the lock wait (us); the same of total wall time."""
        out: dict[str, object] = dict(summarize(self.wait, self.max_wait_ns))
        out["count"] = self.count
        out["errors"] = self.errors
        out["hold_max_us"] = self.max_hold_ns / 1e3
        out["wall"] = summarize(self.total, self.max_total_ns)
        return out

    def encode(self) -> dict[str, str]:
        """The histograms as base64 histoblobs, for merging elsewhere."""
        return {k: getattr(self, k).encode().decode() for k in ("wait", "hold", "total")}

    def merge(self, other: "OpStats") -> None:
        self.count += other.count
        self.errors += other.errors
        for k in ("wait", "hold", "total"):
            getattr(self, k).add(getattr(other, k))
        if other.max_wait_ns > self.max_wait_ns:
            self.max_wait_ns = other.max_wait_ns
            self.worst_wait_t_ns = other.worst_wait_t_ns
        self.max_hold_ns = max(self.max_hold_ns, other.max_hold_ns)
        self.max_total_ns = max(self.max_total_ns, other.max_total_ns)


@dataclass
class TaskError:
    """A task that raised: what, where (the formatted traceback) and in which op."""

    task: str
    op: str
    exc: BaseException
    traceback: str

    def __str__(self) -> str:
        return f"task {self.task} raised in {self.op or 'setup'}: {self.exc!r}\n{self.traceback}"


@dataclass
class LockSpan:
    """One mmap_sem acquisition of a task, for timelines (times in clock ns)."""

    task: str
    op: str
    mode: str
    how: str
    req_ns: int
    acq_ns: int
    rel_ns: int


class Task:
    """A real thread running *script* against the group's MM.

    ``repeat``: a background task (a victim) that cycles its script -- a step sequence, or a
    generator function called again when it ends -- until the group stops; else the script runs
    once and the group waits for it (a populator). ``interval_ns``: open loop at that interval, else closed loop.
    ``setup(task)`` runs in the task's own thread before the start barrier (its calls are the
    task's calls); ``teardown(task)`` after its last step, even on error.
    """

    def __init__(self, name: str, script: Script, *, repeat: bool = False,
                 interval_ns: Optional[int] = None, max_steps: Optional[int] = None,
                 setup: Optional[Callable[["Task"], None]] = None,
                 teardown: Optional[Callable[["Task"], None]] = None) -> None:
        if interval_ns is not None and interval_ns <= 0:
            raise ValueError("interval_ns must be > 0")
        self.name = name
        self.script = script
        self.repeat = repeat
        self.interval_ns = interval_ns
        self.max_steps = max_steps
        self.setup = setup
        self.teardown = teardown
        self.stats: dict[str, OpStats] = {}
        self.error: Optional[TaskError] = None
        self.tid = 0
        self.index = 0
        self.state = "new"  # new, setup, ready, running, done, failed, stopped
        self.steps_done = 0
        self.missed_slots = 0
        self.op = ""  # the op in progress
        self.op_start_ns = -1
        self.t_first_ns = -1
        self.t_last_ns = -1
        self.user: dict[str, object] = {}  # scratch space for scripts
        self.thread: Optional[threading.Thread] = None
        self.spans: Optional[list[LockSpan]] = None
        self._group: Optional["TaskGroup"] = None
        # accumulated by the lock listener during the current step (same thread: no lock needed)
        self._in_step = False
        self._wait = 0
        self._hold = 0
        self._nlocks = 0

    # ------------------------------------------------------------------ public helpers
    @property
    def mm(self) -> "MM":
        assert self._group is not None, "task not in a group"
        return self._group.mm

    @property
    def stopping(self) -> bool:
        """True once the group asked every task to stop (scripts may poll it)."""
        return self._group is not None and self._group.stop_event.is_set()

    def op_stats(self, op: str) -> OpStats:
        s = self.stats.get(op)
        if s is None:
            s = self.stats[op] = OpStats(op)
        return s

    def summary(self) -> dict[str, object]:
        return {"task": self.name, "tid": self.tid, "state": self.state, "steps": self.steps_done,
                "missed_slots": self.missed_slots,
                "ops": {op: s.summary() for op, s in self.stats.items()},
                "error": str(self.error) if self.error else None}

    def __repr__(self) -> str:
        return f"<Task {self.name} tid={self.tid} {self.state} steps={self.steps_done}>"

    # ------------------------------------------------------------------ the thread
    def _on_lock(self, rec: LockRecord) -> None:
        if self._in_step:
            if rec.acq_ns >= 0 and rec.how != "downgrade":
                self._wait += max(rec.acq_ns - rec.req_ns, 0)
            self._hold += max(rec.hold_ns, 0)
            self._nlocks += 1
        if self.spans is not None and len(self.spans) < 200_000:
            self.spans.append(LockSpan(self.name, self.op, rec.mode, rec.how, rec.req_ns, rec.acq_ns, rec.rel_ns))

    def _steps(self) -> Iterator[Step]:
        s = self.script
        if callable(s):
            while True:
                n = 0
                for step in s(self):
                    n += 1
                    yield step
                if not self.repeat or not n:
                    return
        steps = list(s)
        if not steps:
            return
        while True:
            yield from steps
            if not self.repeat:
                return

    def _main(self, group: "TaskGroup") -> None:
        set_task_name(self.name)
        ctx = current()
        self.tid, self.index = ctx.tid, ctx.index
        group._register_tid(self)
        try:
            self.state = "setup"
            if self.setup is not None:
                self.setup(self)
            self.state = "ready"
        except BaseException as e:  # noqa: BLE001 - reported through the group
            self._fail("", e)
            group.barrier.abort()
            return
        try:
            group.barrier.wait()
        except threading.BrokenBarrierError:
            self.state = "stopped"
            return
        self.state = "running"
        try:
            self._run_steps(group)
            self.state = "stopped" if group.stop_event.is_set() and self.repeat else "done"
        except BaseException as e:  # noqa: BLE001
            self._fail(self.op, e)
        finally:
            self.op = ""
            self.op_start_ns = -1
            if self.teardown is not None:
                try:
                    self.teardown(self)
                except BaseException as e:  # noqa: BLE001
                    if self.error is None:
                        self._fail("teardown", e)
            group._task_finished(self)

    def _fail(self, op: str, e: BaseException) -> None:
        self.error = TaskError(self.name, op, e, traceback.format_exc())
        self.state = "failed"

    def _run_steps(self, group: "TaskGroup") -> None:
        stop = group.stop_event
        clock = group.mm.clock
        interval = self.interval_ns
        next_slot = clock.now_ns()
        for step in self._steps():
            if stop.is_set() or (self.max_steps is not None and self.steps_done >= self.max_steps):
                return
            if not step.timed:
                self.op = step.op
                self.op_start_ns = clock.now_ns()
                try:
                    step.fn(group.mm)
                except step.expect:
                    pass
                continue
            if interval:
                now = clock.now_ns()
                if now < next_slot:
                    # idle until the slot; an event wait, so stop() ends it at once
                    if stop.wait(clock.real_s(next_slot - now)):
                        return
                else:
                    missed = (now - next_slot) // interval
                    self.missed_slots += missed
                    next_slot += missed * interval
                next_slot += interval
            self._wait = self._hold = self._nlocks = 0
            self.op = step.op
            st = self.op_stats(step.op)
            c0 = clock.now_ns()
            self.op_start_ns = c0
            if self.t_first_ns < 0:
                self.t_first_ns = c0
            self._in_step = True
            failed = False
            try:
                step.fn(group.mm)
            except step.expect:
                failed = True
            finally:
                self._in_step = False
            t1 = self.t_last_ns = clock.now_ns()
            if failed:
                st.errors += 1
            st.add(self._wait, self._hold, t1 - c0, c0, interval)
            st.lock_acquisitions += self._nlocks
            self.steps_done += 1


@dataclass
class GroupResult:
    """What a group run produced: the tasks (with their stats), failures, threads that hung."""

    tasks: list[Task]
    errors: list[TaskError]
    hung: list[str]
    elapsed_ns: int
    reason: str  # "done", "duration", "error", "hang", "timeout"
    stalls: list[dict[str, object]] = field(default_factory=list)
    hang_report: Optional[dict[str, object]] = None

    @property
    def ok(self) -> bool:
        return not self.errors and not self.hung and self.reason in ("done", "duration")

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def raise_errors(self) -> None:
        if self.errors:
            raise RuntimeError("\n".join(str(e) for e in self.errors)) from self.errors[0].exc
        if self.hung:
            raise RuntimeError(f"tasks did not stop: {', '.join(self.hung)}")


class TaskGroup:
    """Run *tasks* against *mm* together.

    The run ends when every task in ``until`` has finished (default: every task that does not
    ``repeat``; with none, ``duration_s`` must be given), when ``duration_s`` passes, when a task
    fails, or when the watchdog reports a hang; then every task is asked to stop and joined
    within ``join_timeout_s``. ``timeout_s`` bounds the whole run.
    """

    def __init__(self, mm: "MM", tasks: Sequence[Task], *, until: Optional[Sequence[Task]] = None,
                 duration_s: Optional[float] = None, timeout_s: float = 60.0,
                 join_timeout_s: float = 10.0, watchdog: Optional["Watchdog"] = None,
                 timeline: bool = False) -> None:
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique: {names}")
        self.mm = mm
        self.tasks = list(tasks)
        self.until = list(until) if until is not None else [t for t in tasks if not t.repeat]
        if not self.until and duration_s is None:
            raise ValueError("a group of repeating tasks needs duration_s or until")
        self.duration_s = duration_s
        self.timeout_s = timeout_s
        self.join_timeout_s = join_timeout_s
        self.watchdog = watchdog
        self.timeline = timeline
        self.stop_event = threading.Event()
        self.barrier = threading.Barrier(len(tasks) + 1)
        self._changed = threading.Event()
        self._by_tid: dict[int, Task] = {}
        self._hang = False
        self.t_start_ns = -1

    # called from task threads
    def _register_tid(self, task: Task) -> None:
        self._by_tid[task.tid] = task

    def _task_finished(self, task: Task) -> None:
        self._changed.set()

    def _listener(self, rec: LockRecord) -> None:
        t = self._by_tid.get(rec.tid)
        if t is not None:
            t._on_lock(rec)

    def task_by_tid(self, tid: int) -> Optional[Task]:
        return self._by_tid.get(tid)

    def declare_hang(self) -> None:
        """Called by the watchdog at its hard limit: stop the run and report a hang."""
        self._hang = True
        self.stop_event.set()
        self._changed.set()

    def stop(self) -> None:
        self.stop_event.set()
        self._changed.set()

    def run(self) -> GroupResult:
        mm = self.mm
        for t in self.tasks:
            t._group = self
            if self.timeline:
                t.spans = []
        mm.mmap_sem.listeners.append(self._listener)
        reason = "done"
        t0 = time.perf_counter_ns()
        try:
            for t in self.tasks:
                t.thread = threading.Thread(target=t._main, args=(self,), name=t.name, daemon=True)
                t.thread.start()
            try:
                self.barrier.wait(timeout=self.join_timeout_s)
            except threading.BrokenBarrierError:
                reason = "error"
            self.t_start_ns = mm.clock.now_ns()
            if self.watchdog is not None and reason != "error":
                self.watchdog.start(self)
            if reason != "error":
                reason = self._wait_end(t0)
        finally:
            self.stop_event.set()
            hung = self._join_all()
            if self.watchdog is not None:
                self.watchdog.stop()
                if hung and self.watchdog.hang is None:
                    self.watchdog.dump_hang(f"tasks did not stop: {', '.join(hung)}")
            try:
                mm.mmap_sem.listeners.remove(self._listener)
            except ValueError:
                pass
        errors = [t.error for t in self.tasks if t.error is not None]
        if errors and reason == "done":
            reason = "error"
        if hung and reason in ("done", "duration"):
            reason = "hang"
        wd = self.watchdog
        return GroupResult(self.tasks, errors, hung, time.perf_counter_ns() - t0, reason,
                           stalls=[s.as_dict() for s in wd.stalls] if wd else [],
                           hang_report=wd.hang if wd else None)

    def _wait_end(self, t0: int) -> str:
        deadline_d = t0 + int(self.duration_s * 1e9) if self.duration_s is not None else None
        deadline_t = t0 + int(self.timeout_s * 1e9)
        while True:
            if self._hang:
                return "hang"
            if any(t.error is not None for t in self.tasks):
                return "error"
            if self.until and all(t.state in ("done", "failed", "stopped") for t in self.until):
                return "done"
            now = time.perf_counter_ns()
            if deadline_d is not None and now >= deadline_d:
                return "duration"
            if now >= deadline_t:
                return "timeout"
            limit = min(d for d in (deadline_d, deadline_t) if d is not None)
            self._changed.wait(min((limit - now) / 1e9, 0.25))
            self._changed.clear()

    def _join_all(self) -> list[str]:
        deadline = time.perf_counter() + self.join_timeout_s
        hung = []
        for t in self.tasks:
            if t.thread is None:
                continue
            t.thread.join(max(deadline - time.perf_counter(), 0.01))
            if t.thread.is_alive():
                hung.append(t.name)
        return hung
