"""Parsed events -> the model's record types: lock records, call records, fault records.

Each acquisition of mm->mmap_lock becomes a :class:`TracedLock`, a
:class:`mmlab.locking.rwsem.LockRecord` (task = thread name, tid, mode, call, req/acq/rel ns, how)
with the hashed ``mm`` pointer added. The tracepoints (include/trace/events/mmap_lock.h, emitted by
the wrappers in include/linux/mmap_lock.h) map onto it:

* ``start_locking`` -> ``req_ns``; ``acquire_returned success=true`` -> ``acq_ns``;
  ``released`` -> ``rel_ns``.
* ``acquire_returned write=false`` with no ``start_locking`` before it, on a thread holding the lock
  for write: ``mmap_write_downgrade()``. The write hold ends there and a read hold with
  ``how="downgrade"`` begins (req = acq = the downgrade).
* ``acquire_returned success=false``: a failed ``mmap_*_trylock()`` (or a killable lock
  interrupted by a fatal signal): ``how="trylock"``, ``acq_ns = rel_ns = -1``.

Each traced syscall becomes a :class:`CallRecord` (args as the kernel printed them, return value
signed). Lock events outside any traced syscall belong to the user fault before them
(``exceptions:page_fault_user``, a :class:`CallRecord` named ``"fault"`` in :attr:`Trace.faults`);
with no fault event before them (fault tracing off, or a kernel path that is not one of the traced
calls: exit_mmap, a kernel-mode fault in read(), ...) their call is ``"other"``.

Only the traced process's mm is kept: its value is learnt from the lock events inside its own
traced syscalls (those always lock current->mm); lock events on another mm (fork's child mm,
process_vm_readv, /proc/pid/mem) are counted in :attr:`Trace.foreign`.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from mmlab.locking.rwsem import READ, WRITE, LockRecord
from mmlab.trace.parse import ACQUIRED, ENTER, EXIT, FAULT, RELEASED, START

__all__ = ["TracedTask", "TracedLock", "CallRecord", "Trace", "build_trace"]


class TracedTask:
    """The stand-in for the model's TaskCtx behind a traced record (the watchdog reads
    ``ctx.progress``; a traced thread reports none)."""

    __slots__ = ("name", "tid", "call_id", "call_name", "progress", "blocked_on")

    def __init__(self, name: str, tid: int) -> None:
        self.name = name
        self.tid = tid
        self.call_id = 0
        self.call_name = ""
        self.progress: Optional[tuple[str, int, int]] = None
        self.blocked_on: Optional[str] = None

    def __repr__(self) -> str:
        return f"<traced task {self.name} tid={self.tid}>"


class TracedLock(LockRecord):
    """A LockRecord read from the kernel's events; ``mm`` is the hashed mm_struct pointer."""

    __slots__ = ("mm",)

    def as_dict(self) -> dict[str, object]:
        d = {k: getattr(self, k) for k in LockRecord.__slots__ if k not in ("ctx", "_h")}
        d["mm"] = self.mm
        return d


def _lock(ctx: TracedTask, mode: str, call: str, call_id: int, req: int, acq: int, how: str,
          mm: str) -> TracedLock:
    r = object.__new__(TracedLock)
    r.lock = "mmap_lock"
    r.ctx = ctx
    r.task = ctx.name
    r.tid = ctx.tid
    r.mode = mode
    r.call_id = call_id
    r.call = call
    r.req_ns = req
    r.acq_ns = acq
    r.rel_ns = -1
    r.how = how
    r.mm = mm
    return r


@dataclass
class CallRecord:
    """One traced syscall (or one user fault, name ``"fault"``, args (address, ip, error_code)).
    ``exit_ns`` -1: still inside at the end of the capture (ret None); ``enter_ns`` -1: entered
    before the capture began."""

    tid: int
    task: str
    name: str
    args: tuple[int, ...]
    enter_ns: int
    call_id: int
    ret: Optional[int] = None
    exit_ns: int = -1

    @property
    def duration_ns(self) -> int:
        return self.exit_ns - self.enter_ns if self.exit_ns >= 0 and self.enter_ns >= 0 else -1

    def text(self) -> str:
        """The call with its arguments decoded: ``mmap(0, 1 GiB, RW, PRIVATE|ANONYMOUS|POPULATE)``."""
        from mmlab.trace.decode import call_text
        return call_text(self.name, self.args)

    def as_dict(self) -> dict[str, object]:
        return {"tid": self.tid, "task": self.task, "name": self.name, "args": list(self.args), "ret": self.ret,
                "enter_ns": self.enter_ns, "exit_ns": self.exit_ns, "call_id": self.call_id, "text": self.text()}


@dataclass
class Trace:
    """A finished capture. Times are CLOCK_MONOTONIC ns (nanosecond resolution from the binary
    reader; multiples of 1000 from the text reader, whose timestamps are microseconds).

    ``lost``: events lost, summed over ``lost_per_cpu`` (per CPU the larger of the kernel's stats
    and its missed-event marks, ``missed`` of them in all); ``lost_unknown``: the CPUs whose loss
    could not be read, so that ``lost`` is only a lower bound (see :meth:`lost_text`)."""

    locks: list[TracedLock] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    faults: list[CallRecord] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    lost_per_cpu: dict[int, int] = field(default_factory=dict)
    lost_unknown: list[int] = field(default_factory=list)  # CPUs whose stats could not be read
    missed: int = 0                   # events the kernel marked missed in the pages/text read
    threads: dict[int, str] = field(default_factory=dict)  # tid -> thread name (comm)
    tgid: int = -1
    mm: Optional[str] = None          # the traced process's mm (hashed pointer)
    foreign: int = 0                  # lock events on other mms (dropped)
    other_processes: dict[int, int] = field(default_factory=dict)  # tgid -> events (dropped)
    anomalies: dict[str, int] = field(default_factory=dict)
    # releases of holds taken before the capture began (no acquire seen): (ts, tid, mode), own mm
    early_releases: list[tuple[int, int, str]] = field(default_factory=list)
    bad_lines: int = 0
    t0_ns: int = -1
    t1_ns: int = -1
    events: int = 0                   # parsed events in total
    instance: str = ""
    _by_tid: Optional[dict[int, list[TracedLock]]] = field(default=None, repr=False)

    def locks_in(self, call: CallRecord) -> list[TracedLock]:
        """The lock records taken inside one call (same tid, requested inside enter..exit)."""
        if self._by_tid is None:
            d: dict[int, list[TracedLock]] = collections.defaultdict(list)
            for r in self.locks:
                d[r.tid].append(r)
            self._by_tid = d
        end = call.exit_ns if call.exit_ns >= 0 else 1 << 62
        out = []
        for r in self._by_tid.get(call.tid, ()):
            t = r.req_ns if r.req_ns >= 0 else r.acq_ns
            if call.enter_ns <= t <= end and r.call_id == call.call_id:
                out.append(r)
        return out

    def calls_in(self, tid: int, name: Optional[str], t0: int, t1: int, args: Sequence[int] = (),
                 slack_ns: int = 0, exact: bool = False) -> list[CallRecord]:
        """The traced calls of thread *tid* that entered inside [t0 - slack_ns, t1 + slack_ns] (a
        call stamped by wall clock around it, in CLOCK_MONOTONIC ns), in entry order.

        *name*: the syscall ("mmap"), None for any, or "fault" for the user faults, whose *args*
        ``(address,)`` must be on the same page. For syscalls, *args* are leading arguments: with
        ``exact`` every call returned has them; otherwise they only choose among several calls in
        the window (all of them stay when none has them)."""
        lo, hi = t0 - slack_ns, t1 + slack_ns
        if name == "fault":
            page = args[0] >> 12 if args else None
            return [c for c in self.faults if c.tid == tid and lo <= c.enter_ns <= hi
                    and (page is None or c.args[0] >> 12 == page)]
        out = [c for c in self.calls if c.tid == tid and lo <= c.enter_ns <= hi and (name is None or c.name == name)]
        if args and (exact or len(out) > 1):
            k = len(args)
            same = [c for c in out if tuple(c.args[:k]) == tuple(args)]
            out = same if (exact or same) else out
        return out

    def call_in(self, tid: int, name: Optional[str], t0: int, t1: int, args: Sequence[int] = (),
                slack_ns: int = 0, exact: bool = False) -> Optional[CallRecord]:
        """The one call :meth:`calls_in` finds; None when it finds none or several."""
        cs = self.calls_in(tid, name, t0, t1, args, slack_ns, exact)
        return cs[0] if len(cs) == 1 else None

    def lost_text(self) -> str:
        """``"0"``, ``"12"``, or ``"unknown (... at least 12)"`` when a CPU's count was unreadable."""
        if self.lost_unknown:
            return (f"unknown (the stats of CPU {', '.join(map(str, self.lost_unknown))} could not be read; "
                    f"at least {self.lost:,})")
        return f"{self.lost:,}"

    def call_by_id(self) -> dict[int, CallRecord]:
        return {c.call_id: c for c in self.calls + self.faults}

    @property
    def duration_ns(self) -> int:
        return self.t1_ns - self.t0_ns if self.t0_ns >= 0 and self.t1_ns >= 0 else -1

    def summary(self) -> str:
        return (f"{len(self.locks):,} lock records, {len(self.calls):,} calls, {len(self.faults):,} faults, "
                f"{self.events:,} events, lost {self.lost_text()}")


def build_trace(events: list[tuple], names: dict[int, str], tgid: int = -1,
                counts: Optional[dict[str, int]] = None, tgid_of: Optional[dict[int, int]] = None) -> Trace:
    """Turn parsed events (any order; sorted here by time, stably) into a :class:`Trace`.

    *tgid*: keep only that process's threads (-1: every thread in the events). *tgid_of*: the
    process of each thread, for events that do not carry it (the binary reader's)."""
    events = sorted(events, key=lambda e: e[0])
    tr = Trace(counts=dict(counts or {}), tgid=tgid, events=len(events))
    an: collections.Counter[str] = collections.Counter()
    others: collections.Counter[int] = collections.Counter()
    ctxs: dict[int, TracedTask] = {}
    cur: dict[int, CallRecord] = {}       # tid -> the syscall it is in
    fault: dict[int, CallRecord] = {}     # tid -> the user fault whose lock events follow
    pending: dict[tuple[int, str], tuple[int, bool]] = {}  # (tid, mm) -> (start ts, write)
    held: dict[tuple[int, str], dict[bool, TracedLock]] = {}
    recs: list[TracedLock] = []
    early: list[tuple[int, int, str, str]] = []
    calls: list[CallRecord] = []
    faults: list[CallRecord] = []
    nid = 0
    for ev in events:
        ts, tid, tg, kind, a, b, c = ev
        if tg < 0 and tgid_of:
            tg = tgid_of.get(tid, -1)
        if tgid >= 0 and tg >= 0 and tg != tgid:
            others[tg] += 1
            continue
        ctx = ctxs.get(tid)
        if ctx is None:
            ctx = ctxs[tid] = TracedTask(names.get(tid, "?"), tid)
        if kind == ENTER:
            if tid in cur:
                an["enter without exit"] += 1
            nid += 1
            cur[tid] = cr = CallRecord(tid, ctx.name, a, b, ts, nid)
            calls.append(cr)
            fault.pop(tid, None)
            continue
        if kind == EXIT:
            cr = cur.pop(tid, None)
            if cr is not None and cr.name == a:
                cr.ret = b
                cr.exit_ns = ts
            else:
                an["exit without enter"] += 1
            fault.pop(tid, None)
            continue
        if kind == FAULT:
            nid += 1
            fr = CallRecord(tid, ctx.name, "fault", (a, b, c), ts, nid, None, ts)
            faults.append(fr)
            fault[tid] = fr
            continue
        key = (tid, a)
        if kind == START:
            if key in pending:
                an["start without acquire"] += 1
            pending[key] = (ts, b)
            continue
        owner = cur.get(tid) or fault.get(tid)
        cname = owner.name if owner is not None else "other"
        cid = owner.call_id if owner is not None else 0
        mode = WRITE if b else READ
        if kind == ACQUIRED:
            p = pending.pop(key, None)
            h = held.setdefault(key, {})
            if not c:  # success=false: a failed trylock (or a killable lock that was killed)
                r = _lock(ctx, mode, cname, cid, p[0] if p else ts, -1, "trylock", a)
                recs.append(r)
                continue
            if p is None and not b and True in h:  # mmap_write_downgrade()
                w = h.pop(True)
                w.rel_ns = ts
                r = _lock(ctx, READ, cname, cid, ts, ts, "downgrade", a)
            else:
                if p is None:
                    an["acquire without start"] += 1
                elif p[1] != b:
                    an["acquire in another mode than requested"] += 1
                r = _lock(ctx, mode, cname, cid, p[0] if p else ts, ts, "", a)
            if b in h:
                an["acquire while holding"] += 1
            h[b] = r
            recs.append(r)
            continue
        # RELEASED
        h = held.get(key)
        r = h.pop(b, None) if h else None
        if r is None:
            an["release without acquire"] += 1  # acquired before the capture began
            early.append((ts, tid, mode, a))
            continue
        r.rel_ns = ts
        if owner is not None and owner.name == "fault" and ts > owner.exit_ns:
            owner.exit_ns = ts
    # The traced process's own mm: the one its traced syscalls lock.
    in_calls = collections.Counter(r.mm for r in recs if r.call not in ("fault", "other"))
    mm = in_calls.most_common(1)[0][0] if in_calls else (
        collections.Counter(r.mm for r in recs).most_common(1)[0][0] if recs else None)
    tr.mm = mm
    tr.locks = [r for r in recs if r.mm == mm]
    tr.foreign = len(recs) - len(tr.locks)
    tr.early_releases = [(ts, tid, mode) for ts, tid, mode, m in early if m == mm or mm is None]
    tr.calls = calls
    tr.faults = faults
    tr.threads = {t: x.name for t, x in ctxs.items()}
    tr.anomalies = dict(an)
    tr.other_processes = dict(others)
    if events:
        tr.t0_ns, tr.t1_ns = events[0][0], events[-1][0]
    return tr


def records_from_lines(lines: Iterable[str], tgid: int = -1) -> Trace:
    """Parse trace text (trace_pipe or trace, record-tgid on) and build a Trace: for saved traces
    and tests."""
    from mmlab.trace.parse import Parser
    p = Parser()
    p.feed(lines)
    tr = build_trace(p.events, p.thread_names(), tgid, p.all_counts())
    tr.bad_lines = p.bad
    return tr
