"""Controlled mode: the real task threads, one at a time, parked at every schedule point.

Each task is a real OS thread running the same model code as in free mode. The model calls
``mmlab.clock.hooks.schedule_point(kind, obj)`` at its schedule points (syscall entry and exit,
mmap_sem request / acquisition / release / downgrade, the page lock, disk waits, every batch of
populated pages, the per-VMA write wait); in controlled mode that hook is :meth:`Controller._point`.
The task that reaches a point asks the scheduler which task runs next, wakes that task and parks
itself (a handoff between two threads), so exactly one task runs between two points and an
execution is fully described by its choices.

What may run is decided here, not by the OS: a task in down_read()/down_write() tries when it is
picked and, if the model of the lock (:mod:`mmlab.sched.lockmodel`) says it would wait, joins the
model's wait list and is runnable again only when MmapSem would let it in, a task waiting
for a page lock or for a vma's readers only once they are gone, and a task in a disk wait only
once the virtual clock has reached its wake-up time -- when nothing else can run, the clock jumps
there. The real locks therefore never block. No runnable task with some still blocked is a
deadlock, reported with every task's stack and the lock state; ``max_steps`` turns a livelock
into a report the same way.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from mmlab.clock import Clock, hooks
from mmlab.current import set_task_name
from mmlab.locking.rwsem import LockRecord, MmapSem
from mmlab.locking.vma_lock import VMA_LOCK_OFFSET
from mmlab.sched.lockmodel import LockWait, RwsemModel
from mmlab.sched.replay import mask_of
from mmlab.sched.scheduler import Divergence, Scheduler

__all__ = ["Controller", "Execution", "ExecutionAborted", "TaskSpec", "TaskThreads",
           "DONE", "DEADLOCK", "STEP_BOUND", "DIVERGED", "HANG"]

DONE, DEADLOCK, STEP_BOUND, DIVERGED, HANG = "done", "deadlock", "step bound", "diverged", "hang"

TaskSpec = tuple[str, Callable[[], object]]
Event = tuple[int, str, object, int, str, int]  # task, kind, obj, virtual ns, mmap_sem mode held, next step


class ExecutionAborted(BaseException):
    """Raised in a parked task when its execution is abandoned (deadlock, step bound, divergence):
    a BaseException, so the model's ``except Exception`` paths do not swallow it."""


class _TimeWait:
    __slots__ = ("clock", "deadline", "why")

    def __init__(self, clock: Clock, deadline: int, why: str) -> None:
        self.clock = clock
        self.deadline = deadline
        self.why = why

    def ready(self) -> bool:
        return self.clock.now_ns() >= self.deadline

    def take(self) -> bool:
        return True

    def describe(self) -> str:
        return f"sleeps until {self.deadline} ns ({self.why})"


class _CondWait:
    __slots__ = ("pred", "what")

    def __init__(self, pred: Callable[[], bool], what: str) -> None:
        self.pred = pred
        self.what = what

    def ready(self) -> bool:
        return self.pred()

    def take(self) -> bool:
        return True

    def describe(self) -> str:
        return self.what


class _Task:
    __slots__ = ("index", "name", "fn", "worker", "gate", "done", "wait", "lockreq", "points", "error",
                 "last_ns", "exited")

    def __init__(self, index: int, name: str, fn: Callable[[], object]) -> None:
        self.index = index
        self.name = name
        self.fn = fn
        self.worker: Optional[_Worker] = None
        self.gate: threading.Lock = None  # type: ignore[assignment]  # the worker's
        self.done = False
        self.wait: Optional[object] = None  # what it is parked on (None: runnable)
        self.lockreq: Optional[tuple[MmapSem, LockRecord]] = None
        self.points = 0
        self.error = ""
        self.last_ns = 0  # virtual time of its last event or wake-up: what a spend cost
        self.exited = threading.Event()


class _Worker:
    """A real OS thread that runs one task per execution: parked on ``gate`` between wake-ups."""

    def __init__(self, pool: "TaskThreads", n: int) -> None:
        self.gate = threading.Lock()
        self.gate.acquire()  # held while the thread may not run; released once per wake-up
        self.job: Optional[tuple["Controller", _Task]] = None
        self.thread = threading.Thread(target=self._loop, name=f"mmlab-task-{n}", daemon=True)
        self.busy = False
        self.thread.start()

    def _loop(self) -> None:
        while True:
            self.gate.acquire()
            job = self.job
            if job is None:
                return  # shut down
            self.job = None
            ctl, t = job
            ctl._task_body(t)


class TaskThreads:
    """The task threads, kept across executions (starting a thread costs more than a hundred
    schedule points). Use as a context manager; ``close()`` joins every thread."""

    def __init__(self) -> None:
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []

    def get(self) -> _Worker:
        if self._idle:
            w = self._idle.pop()
        else:
            w = _Worker(self, len(self._all))
            self._all.append(w)
        w.busy = True
        return w

    def put(self, w: _Worker) -> None:
        w.busy = False
        self._idle.append(w)

    def close(self) -> None:
        for w in self._all:
            if w in self._idle:
                w.job = None
                w.gate.release()
        for w in self._all:
            w.thread.join(5.0)
        self._idle.clear()
        self._all.clear()

    def __enter__(self) -> "TaskThreads":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Execution:
    """What one controlled execution did: its status, every choice, every event."""

    status: str
    names: list[str]
    choices: list[int]
    masks: list[int]
    currents: list[Optional[int]]
    u64s: list[int]
    events: list[Event]
    errors: dict[str, str] = field(default_factory=dict)
    report: str = ""
    divergence: Optional[Divergence] = None
    decisions: int = 0
    preemptions: int = 0
    points: int = 0
    virtual_ns: int = 0
    wall_s: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.choices)


class Controller:
    """Runs one execution of *tasks* under *scheduler*; the model's locks are *sems*."""

    def __init__(self, scheduler: Scheduler, clock: Clock, sems: Sequence[MmapSem] = (),
                 max_steps: int = 20_000, wall_timeout: float = 60.0) -> None:
        if not clock.virtual:
            raise ValueError("controlled mode needs a VirtualClock (use MM.controlled())")
        self.scheduler = scheduler
        self.clock = clock
        self.max_steps = max_steps
        self.wall_timeout = wall_timeout
        self._models: dict[int, RwsemModel] = {id(s): RwsemModel(s.name) for s in sems}
        self._sems = list(sems)
        self._primary = self._models[id(sems[0])] if sems else None
        self._tasks: list[_Task] = []
        self._by_ident: dict[int, _Task] = {}
        self._abort = False
        self._status = ""
        self._done = threading.Event()
        self._choices: list[int] = []
        self._masks: list[int] = []
        self._currents: list[Optional[int]] = []
        self._u64s: list[int] = []
        self._events: list[Event] = []
        self._decisions = 0
        self._preemptions = 0
        self._divergence: Optional[Divergence] = None
        self._handlers: dict[str, Callable[[_Task, object], object]] = {
            "lock_request": self._on_lock_request,
            "lock_released": self._on_lock_released,
            "lock_downgraded": self._on_lock_downgraded,
            "lock_trylock": self._on_lock_trylock,
            "wait": self._on_wait,
            "page_lock": self._on_page_lock,
            "vma_write_wait": self._on_vma_write_wait,
        }

    # ================================================================== running
    def run(self, tasks: Sequence[TaskSpec], threads: Optional[TaskThreads] = None) -> Execution:
        """Run *tasks* to the end, on *threads* (or on threads of its own, joined before it
        returns). The caller has called ``scheduler.new_execution()``."""
        if hooks.schedule_point is not None:
            raise RuntimeError("a controlled execution is already running in this process")
        own = threads is None
        pool = TaskThreads() if threads is None else threads
        self._tasks = [_Task(i, name, fn) for i, (name, fn) in enumerate(tasks)]
        t0 = time.perf_counter()
        hooks.schedule_point = self._point
        report = ""
        try:
            for t in self._tasks:
                w = pool.get()
                t.worker = w
                t.gate = w.gate
                self._by_ident[w.thread.ident] = t  # type: ignore[index]
                w.job = (self, t)
            first = self._schedule(None)
            if first is not None:
                first.gate.release()
            if not self._done.wait(self.wall_timeout):
                self._status = HANG
            if self._status != DONE:
                report = self._stuck_report()
                self._abort_all()
        except BaseException:  # Ctrl-C in the caller: unwind the tasks before going
            self._status = self._status or "interrupted"
            self._abort_all()
            raise
        finally:
            hooks.schedule_point = None
            for t in self._tasks:
                w = t.worker
                assert w is not None
                if not t.exited.is_set() and not self._abort:
                    t.exited.wait(5.0)
                if t.exited.is_set():
                    pool.put(w)
                else:  # never started, or stuck for good: give it its job back as "stop"
                    if w.job is not None:
                        w.job = None
                        try:
                            w.gate.release()
                        except RuntimeError:
                            pass
            if own:
                pool.close()
        return Execution(
            status=self._status, names=[t.name for t in self._tasks], choices=self._choices,
            masks=self._masks, currents=self._currents, u64s=self._u64s, events=self._events,
            errors={t.name: t.error for t in self._tasks if t.error}, report=report,
            divergence=self._divergence, decisions=self._decisions, preemptions=self._preemptions,
            points=sum(t.points for t in self._tasks), virtual_ns=self.clock.now_ns(),
            wall_s=time.perf_counter() - t0)

    def random_u64(self) -> int:
        """A random number for the scenario, from the scheduler, recorded for replay."""
        v = self.scheduler.next_u64()
        self._u64s.append(v)
        return v

    def _task_body(self, t: _Task) -> None:
        """Runs in the worker thread, which was just woken for the first time this execution."""
        try:
            if self._abort:
                t.done = True
                return
            try:
                set_task_name(t.name)
                t.last_ns = self.clock.now_ns()
                t.fn()
            except ExecutionAborted:
                pass
            except BaseException:  # noqa: BLE001 - a task's failure is part of the outcome
                t.error = traceback.format_exc()
            finally:
                self._task_exit(t)
        finally:
            t.exited.set()

    def _task_exit(self, t: _Task) -> None:
        t.done = True
        t.wait = None
        if self._abort:
            return
        self._events.append((t.index, "exit", t.error, self.clock.now_ns(), "", len(self._choices)))
        t.exited.set()  # before the last one ends the execution, so run() need not wait again
        nxt = self._schedule(None)
        if nxt is not None:
            nxt.gate.release()

    # ================================================================== schedule points
    def _point(self, kind: str, obj: object) -> object:
        t = self._by_ident.get(threading.get_ident())
        if t is None:
            return None  # not one of ours (another thread in the process): free-running
        if self._abort:
            raise ExecutionAborted()
        t.points += 1
        h = self._handlers.get(kind)
        res = h(t, obj) if h is not None else None
        p = self._primary
        now = self.clock.now_ns()
        if kind == "spend":
            obj = (obj, now - t.last_ns)
        self._events.append((t.index, kind, obj, now, p.holds(t.index) if p else "", len(self._choices)))
        nxt = self._schedule(t)
        if nxt is not t:
            if nxt is not None:
                nxt.gate.release()
            t.gate.acquire()
            if self._abort:
                raise ExecutionAborted()
        t.last_ns = self.clock.now_ns()
        return res

    def _model(self, sem: MmapSem) -> RwsemModel:
        m = self._models.get(id(sem))
        if m is None:  # a lock nobody told us about: model it from now on
            m = self._models[id(sem)] = RwsemModel(sem.name)
            self._sems.append(sem)
        return m

    def _on_lock_request(self, t: _Task, obj: object) -> None:
        sem, rec = obj  # type: ignore[misc]
        t.wait = self._model(sem).request(t.index, rec.mode)
        t.lockreq = (sem, rec)
        self._sync_waiters()

    def _on_lock_released(self, t: _Task, obj: object) -> None:
        sem, rec = obj  # type: ignore[misc]
        self._model(sem).release(t.index, rec.mode)
        self._sync_waiters()

    def _on_lock_downgraded(self, t: _Task, obj: object) -> None:
        sem, _ = obj  # type: ignore[misc]
        self._model(sem).downgrade(t.index)
        self._sync_waiters()

    def _on_lock_trylock(self, t: _Task, obj: object) -> bool:
        sem, _ = obj  # type: ignore[misc]
        ok = self._model(sem).trylock_read(t.index)
        self._sync_waiters()
        return ok

    def _on_wait(self, t: _Task, obj: object) -> None:
        clock, ns, why = obj  # type: ignore[misc]
        if ns > 0:
            t.wait = _TimeWait(clock, clock.now_ns() + ns, why)

    def _on_page_lock(self, t: _Task, obj: object) -> None:
        lock = obj
        t.wait = _CondWait(lambda: not lock.locked(), "lock_page(): a read of the page is in flight")  # type: ignore[attr-defined]

    def _on_vma_write_wait(self, t: _Task, obj: object) -> None:
        vma = obj
        # the writer's own VMA_LOCK_OFFSET is all that is left once the readers are gone
        t.wait = _CondWait(lambda: vma.vm_refcnt == VMA_LOCK_OFFSET,  # type: ignore[attr-defined]
                           f"vma_start_write({vma!r}): waits for the vma's per-VMA readers")

    def _sync_waiters(self) -> None:
        """Keep MmapSem.waiters and TaskCtx.blocked_on true: rwsem_is_contended() (the bounded
        populate's yield test) and the watchdog read them, and no real acquire ever blocks here."""
        for t in self._tasks:
            w = t.wait
            if t.lockreq is None or not isinstance(w, LockWait):
                continue
            sem, rec = t.lockreq
            if not w.queued:
                if sem.waiters.pop(rec.tid, None) is not None:
                    rec.ctx.blocked_on = None
            elif rec.tid not in sem.waiters:
                sem.waiters[rec.tid] = rec
                rec.ctx.blocked_on = sem.name

    # ================================================================== choosing
    def _schedule(self, cur: Optional[_Task]) -> Optional[_Task]:
        """Pick the next task to run (the caller wakes it), or end the execution (None)."""
        tasks = self._tasks
        ci = cur.index if cur is not None else None
        while True:
            runnable = [t.index for t in tasks if not t.done and (t.wait is None or t.wait.ready())]  # type: ignore[attr-defined]
            if not runnable:
                sleepers = [t.wait for t in tasks if not t.done and isinstance(t.wait, _TimeWait)]
                if sleepers:
                    w = min(sleepers, key=lambda w: w.deadline)
                    w.clock.advance_to(w.deadline)  # type: ignore[attr-defined]
                    continue
                return self._end(DONE if all(t.done for t in tasks) else DEADLOCK)
            if len(self._choices) >= self.max_steps:
                return self._end(STEP_BOUND)
            try:
                choice = self.scheduler.next_task(runnable, ci)
            except Divergence as e:
                self._divergence = e
                return self._end(DIVERGED)
            if choice not in runnable:
                self._divergence = Divergence(len(self._choices), [choice], runnable,
                                              f"the scheduler chose task {choice}, which cannot run")
                return self._end(DIVERGED)
            self._choices.append(choice)
            self._masks.append(mask_of(runnable))
            self._currents.append(ci)
            if len(runnable) > 1:
                self._decisions += 1
                if ci is not None and choice != ci and ci in runnable:
                    self._preemptions += 1
            t = tasks[choice]
            w = t.wait
            if w is not None:
                if not w.take():  # type: ignore[attr-defined]
                    # it tried, the lock said no: it joined the wait list, and that was a step
                    names = [x.name for x in tasks]
                    self._events.append((t.index, "queued", w.describe(names), self.clock.now_ns(),  # type: ignore[attr-defined]
                                         "", len(self._choices)))
                    self._sync_waiters()
                    ci = None
                    continue
                t.wait = None
                if t.lockreq is not None:
                    self._sync_waiters()
                    t.lockreq = None
            return t

    def _end(self, status: str) -> None:
        self._status = status
        self._done.set()
        return None

    # ================================================================== ending badly
    def _stuck_report(self) -> str:
        """Every unfinished task: what it waits for and its stack; then the state of each lock."""
        names = [t.name for t in self._tasks]
        frames = sys._current_frames()
        here = __file__
        lines = []
        for t in self._tasks:
            if t.done:
                lines.append(f"task {t.name}: finished")
                continue
            w = t.wait
            what = w.describe(names) if isinstance(w, LockWait) else (
                w.describe() if w is not None else "runnable")  # type: ignore[attr-defined]
            lines.append(f"task {t.name}: {what}")
            f = frames.get(t.worker.thread.ident) if t.worker is not None else None  # type: ignore[arg-type]
            if f is not None:
                stack = [s for s in traceback.extract_stack(f) if s.filename != here
                         and not s.filename.endswith("threading.py")]
                lines.extend("    " + ln.rstrip() for ln in traceback.format_list(stack)[-12:])
        for s in self._sems:
            lines.append(self._models[id(s)].describe(names))
        return "\n".join(lines)

    def _abort_all(self) -> None:
        """Wake every parked task to unwind (one at a time, so no two ever run together)."""
        self._abort = True
        for t in self._tasks:
            if t.exited.is_set():
                continue
            try:
                t.gate.release()
            except RuntimeError:  # a wake-up already in flight
                pass
            t.exited.wait(5.0)
        for s in self._sems:
            s.waiters.clear()
