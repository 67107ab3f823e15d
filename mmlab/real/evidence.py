"""Where a race round's window hit (and a racer's lock wait) comes from, per target.

A window hit means the same on every target, the model's definition
(:func:`mmlab.harness.race.window_evidence`, which this module calls): the racer took mmap_lock
for write after the populating call's last write release and before its populate's last read
release. Three sources of lock records, one rule:

* ``model``  -- the model's own lock records (``mm.mmap_sem.history``);
* ``traced`` -- the real kernel's ``mmap_lock`` tracepoints (mmlab.trace.Capture around the
  cell), where tracing is available: the kernel's own acquisitions and releases;
* ``wall``   -- no lock records: timing around the syscalls. The racer's call began after the
  populating call began and returned before it returned -- it must have taken the write lock while
  the populate was under way, which is the window (the populate's mmap_region() ran first: the
  populating mmap is MAP_FIXED_NOREPLACE and succeeded) -- an approximation, labelled as such.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Sequence

if TYPE_CHECKING:
    from mmlab.real.scenarios import RoundMarks

__all__ = ["Evidence", "WallEvidence", "ModelEvidence", "TracedEvidence", "LockRec", "CallRec", "window_hit",
           "trace_unavailable", "median"]


@dataclass(frozen=True)
class CallRec:
    """A syscall as the window rule needs it (the model's CallView fields)."""

    task: str
    call_id: int
    t_start: int
    t_end: int


@dataclass(frozen=True)
class LockRec:
    """An mmap_lock acquisition as the window rule needs it (the model's LockView fields)."""

    call_id: int
    mode: str  # "R" / "W"
    req_ns: int
    acq_ns: int
    rel_ns: int
    tid: int = 0
    call: str = ""  # the syscall's name, or "fault"

    @property
    def wait_ns(self) -> int:
        return self.acq_ns - self.req_ns if self.acq_ns >= self.req_ns >= 0 else 0


def _rec(r: Any) -> LockRec:
    return LockRec(r.call_id, r.mode, r.req_ns, r.acq_ns, r.rel_ns, r.tid, r.call)


@dataclass
class _Snap:
    history: list[CallRec]
    locks: list[LockRec]


def window_hit(pop_call: CallRec, racer_calls: Sequence[CallRec], locks: Iterable[LockRec]) -> bool:
    """The model's window rule (harness.race.window_evidence) on these records."""
    from mmlab.harness.race import window_evidence
    snap = _Snap([pop_call, *racer_calls], list(locks))
    return window_evidence(snap, pop_call, -1, racer_task="racer")[1]  # type: ignore[arg-type]


def median(xs: Sequence[float]) -> Optional[float]:
    return sorted(xs)[len(xs) // 2] if xs else None


def trace_unavailable() -> Optional[str]:
    """None when mmlab.trace can capture here, else why not (also: not installed)."""
    try:
        from mmlab.trace import unavailable_reason
    except ImportError:
        return "mmlab.trace is not installed"
    return unavailable_reason()


class Evidence:
    """Collects what a cell needs; :meth:`window_hits` after the cell's block has exited."""

    label = ""
    note = ""  # why this source and not a better one, when that is worth saying

    @contextlib.contextmanager
    def around(self) -> Iterator["Evidence"]:
        yield self

    def rounds(self, marks: Sequence["RoundMarks"]) -> list[tuple[Optional[CallRec], list[CallRec], list[LockRec]]]:
        """Per round: (the populating call, the racer's calls, the lock records of both)."""
        key = tuple(id(m) for m in marks)
        if getattr(self, "_key", None) != key:
            self._key, self._rounds = key, self._collect(marks)
        return self._rounds

    def _collect(self, marks: Sequence["RoundMarks"]) -> list[tuple[Optional[CallRec], list[CallRec], list[LockRec]]]:
        raise NotImplementedError

    def window_hits(self, marks: Sequence["RoundMarks"]) -> list[bool]:
        return [pc is not None and window_hit(pc, rc, locks) for pc, rc, locks in self.rounds(marks)]

    def missing(self, marks: Sequence["RoundMarks"]) -> int:
        """Rounds whose populating call is not in the records (lost events): their hits are unknown."""
        return sum(pc is None for pc, _, _ in self.rounds(marks)) if self.label != "wall" else 0

    def lock_records(self) -> Optional[list[LockRec]]:
        """Every mmap_lock acquisition recorded (None: this source has none)."""
        return None

    def call_waits(self, tids: dict[int, str], lo: int, hi: int) -> Optional[dict[str, list[int]]]:
        """Per victim op: the mmap_lock wait (ns, summed over its acquisitions) of each call or
        fault of the threads *tids* (tid -> "fault" for the reader, "writer") whose waits overlap
        [lo, hi]. None without lock records. A call that took no lock is not listed (a
        per-VMA-lock fault): the caller counts it as a zero wait."""
        recs = self.lock_records()
        if recs is None:
            return None
        per_call: dict[tuple[int, int], tuple[str, int]] = {}
        for r in recs:
            role = tids.get(r.tid)
            if role is None or r.acq_ns < 0 or r.req_ns > hi or r.acq_ns < lo:  # waited outside [lo, hi]
                continue
            op = "fault" if r.call == "fault" else r.call
            if (role == "fault") != (op == "fault"):
                continue  # the reader's madvise on going round; the writer's own faults
            k = (r.tid, r.call_id)
            per_call[k] = (op, per_call.get(k, (op, 0))[1] + r.wait_ns)
        out: dict[str, list[int]] = {}
        for op, w in per_call.values():
            out.setdefault(op, []).append(w)
        return out

    def racer_waits(self, marks: Sequence["RoundMarks"]) -> dict[str, Any]:
        """The racer's wall time around its call(s) and, with lock records, its longest wait for
        mmap_lock, medians over rounds in us: the two side by side show how far apart they are."""
        wall = [(m.r1 - m.r0) / 1000 for m in marks if m.r1 > m.r0]
        lock: list[float] = []
        if self.label != "wall":
            for (pc, rc, locks) in self.rounds(marks):
                ids = {c.call_id for c in rc}
                ws = [r.acq_ns - r.req_ns for r in locks if r.call_id in ids and r.acq_ns >= r.req_ns >= 0]
                if ws:
                    lock.append(max(ws) / 1000)
        return {"racer_call_us": median(wall), "racer_lock_wait_us": median(lock), "lock_waits_from": self.label}


class WallEvidence(Evidence):
    """Timing around the syscalls only."""

    label = "wall"

    def __init__(self, note: str = "") -> None:
        self.note = note

    def window_hits(self, marks: Sequence["RoundMarks"]) -> list[bool]:
        return [m.t0 <= m.r0 and 0 < m.r1 <= m.t1 for m in marks]

    def _collect(self, marks: Sequence["RoundMarks"]) -> list[tuple[Optional[CallRec], list[CallRec], list[LockRec]]]:
        return [(None, [], []) for _ in marks]


def _in(t: int, lo: int, hi: int) -> bool:
    return lo <= t <= hi


class ModelEvidence(Evidence):
    """The model's own call and lock records."""

    label = "model"

    def __init__(self, mm: Any) -> None:
        self.mm = mm

    def lock_records(self) -> Optional[list[LockRec]]:
        return [_rec(r) for r in list(self.mm.mmap_sem.history)]

    def _collect(self, marks: Sequence["RoundMarks"]) -> list[tuple[Optional[CallRec], list[CallRec], list[LockRec]]]:
        calls = list(self.mm.call_history)
        locks = self.lock_records() or []
        out = []
        for m in marks:
            pcs = [c for c in calls if c.task == "populator" and _in(c.t_start, m.t0, m.t1)
                   and c.args and c.args[0] == m.target]
            pc = CallRec("populator", pcs[-1].call_id, pcs[-1].t_start, pcs[-1].t_end) if pcs else None
            rc = [CallRec("racer", c.call_id, c.t_start, c.t_end) for c in calls
                  if c.task == "racer" and _in(c.t_start, m.r0, m.r1)]
            ids = {c.call_id for c in rc} | ({pc.call_id} if pc else set())
            out.append((pc, rc, [r for r in locks if r.call_id in ids]))
        return out


class TracedEvidence(Evidence):
    """The real kernel's mmap_lock and syscall tracepoints, captured around the whole cell."""

    label = "traced"

    def __init__(self, name: str = "real", faults: bool = False) -> None:
        self.name = name
        self.faults = faults
        self.trace: Any = None
        self.lost = 0

    def lock_records(self) -> Optional[list[LockRec]]:
        return None if self.trace is None else [_rec(r) for r in self.trace.locks]

    @contextlib.contextmanager
    def around(self) -> Iterator["Evidence"]:
        from mmlab.trace import Capture
        with Capture(pid=None, syscalls=True, faults=self.faults, name=self.name) as cap:
            yield self
        self.trace = cap.trace
        self.lost = int(getattr(self.trace, "lost", 0) or 0)

    def _collect(self, marks: Sequence["RoundMarks"]) -> list[tuple[Optional[CallRec], list[CallRec], list[LockRec]]]:
        tr = self.trace
        if tr is None:
            return [(None, [], []) for _ in marks]
        locks = self.lock_records() or []
        out = []
        for m in marks:
            pcs = tr.calls_in(m.pop_tid, None, m.t0, m.t1, args=(m.target,), exact=True)
            pc = CallRec("populator", pcs[-1].call_id, pcs[-1].enter_ns, pcs[-1].exit_ns) if pcs else None
            rc = [CallRec("racer", c.call_id, c.enter_ns, c.exit_ns) for c in tr.calls_in(m.racer_tid, None, m.r0, m.r1)]
            ids = {c.call_id for c in rc} | ({pc.call_id} if pc else set())
            out.append((pc, rc, [r for r in locks if r.call_id in ids]))
        return out
