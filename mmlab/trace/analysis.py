"""What a traced run says about mmap_lock waits: per-thread statistics, the worst waits with the
holders they waited behind, and the model's own reports (the stall watchdog, HDR histograms)
run on the traced records.

A *wait* is one acquisition's ``start_locking`` -> ``acquire_returned`` on one thread (the
record's ``wait_ns``). Its *holders* are the records whose hold overlaps the wait (acquired before
the wait ended, released after it began); a reader waiting while a writer that asked before it
still waits is *queued behind a waiting writer* (rwsem's fairness: once a writer is queued, new
readers queue behind it, kernel/locking/rwsem.c rwsem_down_read_slowpath).
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

from mmlab.harness.histograms import new_histogram, record, summarize
from mmlab.harness.watchdog import StallReport, Watchdog
from mmlab.locking.rwsem import WRITE
from mmlab.trace.records import CallRecord, Trace, TracedLock

if TYPE_CHECKING:
    from mmlab.harness.verdict import Verdict

__all__ = ["Holder", "Wait", "ThreadStats", "thread_stats", "waits", "worst_waits", "attribute",
           "stall_reports", "call_text_of", "Analysis", "analyse", "TracedRun", "traced_run", "judge_traced"]


def call_text_of(r: TracedLock, calls: dict[int, CallRecord]) -> str:
    c = calls.get(r.call_id)
    if c is None:
        return r.call or "?"
    return c.text()


@dataclass
class Holder:
    tid: int
    name: str
    mode: str
    call: str            # the call with its arguments decoded
    call_id: int
    held_us: float       # the whole hold (-1: still held at the end of the capture)
    overlap_us: float    # how much of the wait it held the lock
    since_us: float      # acquired this long before the wait began (negative: during the wait)
    how: str = ""


@dataclass
class Wait:
    tid: int
    name: str
    mode: str
    call: str
    call_id: int
    req_ns: int
    wait_us: float
    holders: list[Holder] = field(default_factory=list)
    queued_behind: list[Holder] = field(default_factory=list)  # writers waiting ahead of a reader

    def as_dict(self, max_holders: int = 20) -> dict[str, object]:
        """JSON: the *max_holders* holders with the longest overlap (``holders_total`` counts all)."""
        return {"waiter": {"tid": self.tid, "name": self.name, "mode": self.mode, "call": self.call,
                           "call_id": self.call_id},
                "wait_us": round(self.wait_us, 1), "req_ns": self.req_ns,
                "holders": [{k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(h).items()}
                            for h in self.holders[:max_holders]],
                "holders_total": len(self.holders),
                "queued_behind": [{k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(h).items()}
                                  for h in self.queued_behind]}


@dataclass
class ThreadStats:
    tid: int
    name: str
    count: int           # acquisitions with a wait (start_locking -> acquire_returned)
    p50_us: float
    p99_us: float
    max_us: float
    total_wait_us: float
    held_us: float       # total time it held the lock
    failed_trylocks: int = 0
    downgrades: int = 0

    def as_dict(self) -> dict[str, object]:
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def waits(tr: Trace) -> list[TracedLock]:
    """Every acquisition that went through start_locking and was granted (downgrades and failed
    trylocks have no wait)."""
    return [r for r in tr.locks if r.acq_ns >= 0 and r.how != "downgrade" and r.req_ns >= 0]


def thread_stats(tr: Trace) -> list[ThreadStats]:
    """Per thread: count and p50/p99/max of its waits (HDR histograms, mmlab.harness.histograms)."""
    by: dict[int, list[TracedLock]] = {}
    for r in tr.locks:
        by.setdefault(r.tid, []).append(r)
    out = []
    for tid, rs in sorted(by.items()):
        h = new_histogram()
        mx = 0
        tot = 0
        n = 0
        held = 0
        for r in rs:
            if r.acq_ns >= 0 and r.rel_ns >= 0:
                held += r.rel_ns - r.acq_ns
            if r.acq_ns < 0 or r.how == "downgrade":
                continue
            w = r.acq_ns - r.req_ns
            record(h, w)
            n += 1
            tot += w
            mx = max(mx, w)
        s = summarize(h, mx)
        top = mx / 1e3  # HDR reports a bucket's highest equivalent value: never above the exact max
        out.append(ThreadStats(tid, tr.threads.get(tid, "?"), n, min(s["p50_us"], top) if n else 0.0,
                               min(s["p99_us"], top) if n else 0.0, top, tot / 1e3, held / 1e3,
                               sum(1 for r in rs if r.how == "trylock"),
                               sum(1 for r in rs if r.how == "downgrade")))
    return out


class _Index:
    """Holds sorted by acquisition, for the holders of a moment or an interval."""

    def __init__(self, tr: Trace) -> None:
        end = tr.t1_ns if tr.t1_ns >= 0 else (1 << 62)
        self.end = end
        self.holds = sorted((r for r in tr.locks if r.acq_ns >= 0), key=lambda r: r.acq_ns)
        self.acq = [r.acq_ns for r in self.holds]
        self.span = max(((r.rel_ns if r.rel_ns >= 0 else end) - r.acq_ns for r in self.holds), default=0)
        self.reqs = sorted((r for r in tr.locks if r.req_ns >= 0 and r.how != "downgrade"), key=lambda r: r.req_ns)
        self.req = [r.req_ns for r in self.reqs]
        self.wspan = max(((r.acq_ns if r.acq_ns >= 0 else end) - r.req_ns for r in self.reqs), default=0)

    def holding(self, t0: int, t1: int) -> list[TracedLock]:
        """Holds overlapping [t0, t1): acquired before t1, released after t0."""
        lo = bisect.bisect_left(self.acq, t0 - self.span)
        hi = bisect.bisect_left(self.acq, t1)
        out = []
        for r in self.holds[lo:hi]:
            rel = r.rel_ns if r.rel_ns >= 0 else self.end
            if rel > t0:
                out.append(r)
        return out

    def waiting(self, t: int) -> list[TracedLock]:
        """Requests pending at *t*: asked at or before t, granted (or failed) after t."""
        lo = bisect.bisect_left(self.req, t - self.wspan)
        hi = bisect.bisect_right(self.req, t)
        out = []
        for r in self.reqs[lo:hi]:
            a = r.acq_ns if r.acq_ns >= 0 else self.end
            if a > t:
                out.append(r)
        return out


def attribute(tr: Trace, w: TracedLock, index: Optional[_Index] = None,
              calls: Optional[dict[int, CallRecord]] = None) -> Wait:
    """The wait of record *w*, with the holders it waited behind and the writers queued ahead."""
    ix = index or _Index(tr)
    calls = calls if calls is not None else tr.call_by_id()
    end = w.acq_ns if w.acq_ns >= 0 else ix.end
    hs = []
    for h in ix.holding(w.req_ns, end):
        if h is w or h.tid == w.tid:
            continue
        rel = h.rel_ns if h.rel_ns >= 0 else ix.end
        hs.append(Holder(h.tid, h.task, h.mode, call_text_of(h, calls), h.call_id,
                         (h.rel_ns - h.acq_ns) / 1e3 if h.rel_ns >= 0 else -1.0,
                         (min(rel, end) - max(h.acq_ns, w.req_ns)) / 1e3, (w.req_ns - h.acq_ns) / 1e3, h.how))
    hs.sort(key=lambda h: -h.overlap_us)
    behind = []
    if w.mode != WRITE:
        for q in ix.waiting(w.req_ns):
            if q is not w and q.mode == WRITE and q.tid != w.tid and q.req_ns < w.req_ns:
                qa = q.acq_ns if q.acq_ns >= 0 else ix.end
                behind.append(Holder(q.tid, q.task, q.mode, call_text_of(q, calls), q.call_id, -1.0,
                                     (min(qa, end) - w.req_ns) / 1e3, (w.req_ns - q.req_ns) / 1e3, "waiting"))
    return Wait(w.tid, w.task, w.mode, call_text_of(w, calls), w.call_id, w.req_ns, w.wait_ns / 1e3, hs, behind)


def worst_waits(tr: Trace, n: int = 10, min_us: float = 0.0, per_thread: Optional[int] = None) -> list[Wait]:
    """The *n* longest waits (at least *min_us*), each attributed; ``per_thread`` caps how many
    one thread contributes."""
    ws = sorted(waits(tr), key=lambda r: -r.wait_ns)
    ix = _Index(tr)
    calls = tr.call_by_id()
    out = []
    seen: dict[int, int] = {}
    for r in ws:
        if r.wait_ns / 1e3 < min_us or r.wait_ns <= 0:
            break
        if per_thread is not None and seen.get(r.tid, 0) >= per_thread:
            continue
        seen[r.tid] = seen.get(r.tid, 0) + 1
        out.append(attribute(tr, r, ix, calls))
        if len(out) >= n:
            break
    return out


# ---------------------------------------------------------------------- the watchdog, replayed
class _ReplayClock:
    def __init__(self) -> None:
        self.t = 0

    def now_ns(self) -> int:
        return self.t


class _ReplaySem:
    """The lock state the watchdog reads (holders, waiters, state()) as of the replay clock."""

    def __init__(self, clock: _ReplayClock) -> None:
        self.clock = clock
        self.name = "mmap_lock"
        self.holders: dict[int, TracedLock] = {}
        self.waiters: dict[int, TracedLock] = {}

    def state(self) -> dict[str, object]:
        now = self.clock.now_ns()
        return {"lock": self.name,
                "holders": [dict(task=r.task, mode=r.mode, call=r.call, call_id=r.call_id, held_ns=now - r.acq_ns,
                                 progress=None) for r in self.holders.values()],
                "waiters": [dict(task=r.task, mode=r.mode, call=r.call, call_id=r.call_id, waiting_ns=now - r.req_ns)
                            for r in self.waiters.values()]}


class _ReplayMM:
    def __init__(self) -> None:
        self.clock = _ReplayClock()
        self.mmap_sem = _ReplaySem(self.clock)


def stall_reports(tr: Trace, stall_ms: float, out: Optional[Callable[[str], None]] = None,
                  max_reports: int = 1000) -> list[StallReport]:
    """The model's stall watchdog (mmlab.harness.watchdog.Watchdog, unchanged) run over the trace:
    the lock state is replayed to the instant each wait passed *stall_ms*, and the watchdog's own
    check() writes the report (waiter, holders, writers queued ahead), as it would have live."""
    mm = _ReplayMM()
    wd = Watchdog(mm, stall_ms=stall_ms, hang_ms=None, out=out, max_reports=max_reports)  # type: ignore[arg-type]
    wd._t0 = tr.t0_ns  # the report's "since" is relative to the capture's start (start() would set it)
    stall = int(stall_ms * 1e6)
    ix = _Index(tr)
    moments = sorted({r.req_ns + stall for r in waits(tr) + [r for r in tr.locks if r.how == "trylock"]
                      if r.wait_ns >= stall})
    sem = mm.mmap_sem
    for t in moments:
        mm.clock.t = t
        sem.waiters = {r.tid: r for r in ix.waiting(t)}
        sem.holders = {r.tid: r for r in ix.holding(t, t + 1)}
        wd.check()
    mm.clock.t = ix.end
    sem.waiters = {}
    sem.holders = {}
    wd.stop()  # fills in each reported wait's final length
    return wd.stalls


@dataclass
class Analysis:
    threads: list[ThreadStats]
    worst: list[Wait]
    stalls: list[Wait]
    counts: dict[str, int]
    lost: Optional[int]           # None: unknown (Trace.lost_unknown)
    stall_ms: Optional[float] = None

    def as_dict(self) -> dict[str, object]:
        return {"threads": [t.as_dict() for t in self.threads], "worst": [w.as_dict() for w in self.worst],
                "stalls": [w.as_dict() for w in self.stalls], "counts": dict(self.counts), "lost": self.lost}


def analyse(tr: Trace, worst: int = 10, stall_ms: Optional[float] = None) -> Analysis:
    st = worst_waits(tr, n=1 << 30, min_us=stall_ms * 1e3) if stall_ms is not None else []
    return Analysis(thread_stats(tr), worst_waits(tr, worst), st, tr.counts,
                    None if tr.lost_unknown else tr.lost, stall_ms)


# ---------------------------------------------------------------------- the verdict, from traces
@dataclass
class TracedRun:
    """What one traced populate says, for the verdict: its size, the populating call's time in
    the kernel (sys_enter -> sys_exit) and the worst wait of the other threads."""

    size: int
    populate_us: float
    worst_us: float
    call: str


def traced_run(tr: Trace, size: int, populate_call: CallRecord, victims: Optional[set[int]] = None) -> TracedRun:
    """The worst mmap_lock wait of *victims* (default: every thread but the populating one) and
    the populate's duration, from the kernel's own events."""
    ws = [r.wait_ns for r in waits(tr) if r.tid != populate_call.tid and (victims is None or r.tid in victims)]
    if populate_call.duration_ns < 0:
        raise ValueError(f"the populating call {populate_call.text()} did not finish inside the capture")
    return TracedRun(size, populate_call.duration_ns / 1e3, max(ws, default=0) / 1e3, populate_call.text())


def judge_traced(kernel: str, populator: str, op: str, runs: list[TracedRun], floor_us: float,
                 noise_p99_us: float = 0.0, noise_max_us: float = 0.0) -> "Verdict":
    """mmlab.harness.verdict.judge, unchanged, on traced runs: several runs of one size count as
    the model's repeats do (the smallest of their worst waits, the largest populate time)."""
    from mmlab.harness.verdict import judge
    by: dict[int, list[TracedRun]] = {}
    for r in runs:
        by.setdefault(r.size, []).append(r)
    sizes = sorted(by)
    return judge(kernel, populator, op, sizes, [min(r.worst_us for r in by[s]) for s in sizes],
                 [max(r.populate_us for r in by[s]) for s in sizes], floor_us, noise_p99_us, noise_max_us)
