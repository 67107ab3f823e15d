"""The race oracle run continuously, under mmap_sem, while a round or a workload runs (``--check-live``).

The after-the-round oracle (oracle.py) sees only the final state: a replacement that got
populated and was then unmapped again by a later racer call leaves no trace in it. The live
checker closes that gap. It is one more task, named ``oracle``, that every *period* takes
mm->mmap_sem for READ -- as /proc/pid/smaps or a ptrace peek would (show_smap() and
access_remote_vm() both run under mmap_read_lock()) -- copies what the oracle needs, drops the
lock and judges the copy. The first FORBIDDEN it sees is kept with its moment (ns since the
populating call started) and the lock state at that moment; a round's final verdict counts it
even when the final state is clean.

Why mmap_sem for read is enough, and why the page table lock is taken too:

* The vma tree, the origin map (lineage), locked_vm and total_vm change only under mmap_sem for
  write (mmap_region, do_munmap, mprotect_fixup, mlock_fixup, mremap, brk): holding it for read
  excludes every one of them, so those are consistent.
* Ptes do change under the read lock: a populate (__mm_populate after up_write, profile switch
  ``populate_after_unlock``) and faults fill them, and on profiles with per-VMA lock faults
  (v6.18) a fault installs ptes holding only its vma's lock, not mmap_sem at all. Every pte
  update goes through PageTable's ``ptl`` (pte_offset_map_lock()), so the checker clones the
  page table holding ``ptl``: each pte table is copied whole, never torn between a state byte and
  its call id. Taking the per-VMA locks is not needed: the oracle grades only PTE_POPULATE
  pages, which only a populate sets (under mmap_sem, read or write), and the structural checks
  look at the same cloned table; a per-VMA fault cannot change a vma, only fill a pte inside
  one, which the clone shows either before or after.
* Calls still running are part of the snapshot (MM.running, with no end time): a call that
  changed mappings under the write lock and has not returned yet counts as "may have changed
  this range", so the lineage checks (mapping lost, VM_LOCKED not present) do not blame a
  state that is merely half way through a call.

The checker's lock holds are recorded in mmap_sem's history like any task's (task ``oracle``,
call id 0); the judging runs after up_read(), so a hold lasts only the copy. Lock order is
mmap_sem then ptl, the order of every populate and fault, so it cannot deadlock; it waits for
the lock like any reader (behind a queued writer) and is stopped and joined by :meth:`stop`.
No kernel profile is consulted: the verdict still comes only out of provenance and lineage.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from mmlab.current import set_task_name
from mmlab.flags import TASK_SIZE
from mmlab.harness.oracle import (FORBIDDEN, CallView, Finding, OriginView, Snapshot, Verdict, VmaView, _call_view,
                                  _clone_pt, judge)

if TYPE_CHECKING:
    from mmlab.mm.mm_struct import MM

__all__ = ["ORACLE_TASK", "DEFAULT_PERIOD_MS", "LiveFinding", "LiveResult", "LiveChecker", "LiveCopy",
           "capture_live", "copy_live", "build_live", "merge_live"]

ORACLE_TASK = "oracle"
DEFAULT_PERIOD_MS = 5.0


class _InvariantView:
    """What MM.check_invariants() reads, taken from the copies: the vma views (with
    vma_lookup over them), the accounting read under the lock, and the cloned page table. The
    structural check then runs after up_read(), not inside the checker's hold."""

    def __init__(self, vmas: list[VmaView], locked_vm: int, total_vm: int, pt) -> None:
        self.vmas = _VmaViews(vmas)
        self.locked_vm = locked_vm
        self.total_vm = total_vm
        self.pt = pt


class _VmaViews(list):
    def vma_lookup(self, addr: int) -> Optional[VmaView]:
        i = bisect.bisect_right(self._starts, addr) - 1
        return self[i] if i >= 0 and self[i].end > addr else None

    def __init__(self, vmas: list[VmaView]) -> None:
        super().__init__(vmas)
        self._starts = [v.start for v in vmas]


def capture_live(mm: "MM") -> Snapshot:
    """oracle.capture() for a running model: the copies of :func:`copy_live` made into a
    snapshot, with the structural invariants checked on them (MM.check_invariants() over an
    :class:`_InvariantView`). Called with mm.mmap_sem held for read."""
    snap, accounting = build_live(copy_live(mm))
    snap.invariants = _invariants(snap, accounting)
    return snap


@dataclass
class LiveCopy:
    """What :func:`copy_live` takes under the lock: plain copies, turned into a Snapshot by
    :func:`build_live` after up_read()."""

    running: list[CallView]
    history: list  # CallInfo objects of finished calls: no longer written to
    pt: object
    calls: list  # (call_id, CallInfo) of populating calls
    vmas: list[VmaView]
    origins: list[tuple[int, int, OriginView]]
    accounting: tuple[int, int]  # locked_vm, total_vm
    start_brk: int


def copy_live(mm: "MM") -> LiveCopy:
    """The part of a live capture that must run under mm.mmap_sem held for read.

    Writers are excluded, so the vmas, the lineage and the accounting hold still. Populates
    and faults still run, so the order of the copies matters:

    1. the running calls, then the finished ones (a call ending in between is in both and
       counts as finished); every call finished here finished before the page table is cloned;
    2. the page table, cloned under its ptl (each pte table whole);
    3. the populating calls (mm.calls), for the call ids in the cloned ptes: mm_populate()
       registers its call before its first pte.

    Every call not finished at step 1 is given ``t_end = -1`` (running as of the clone), even
    if it has returned since: "a finished call's VM_LOCKED range is fully present" must not be
    asked of a populate whose last ptes came after the clone. Running calls join the history,
    so a call that changed mappings under the write lock and has not returned yet excuses the
    ranges it may have changed. Finished calls are only listed here (a C-level list copy) and
    made into views after up_read(): end_call() is their last write. The lock history is not
    copied (it can be long): :class:`LiveChecker` adds it to the first finding only."""
    running = [_as_running(_call_view(c)) for c in list(mm.running.values())]
    history = list(mm.call_history)
    with mm.pt.ptl:
        pt = _clone_pt(mm.pt)
    calls = list(mm.calls.items())
    vmas = [VmaView(v.start, v.end, v.flags, v.vm_id, getattr(v.file, "name", None), v.pgoff,
                    getattr(v.file, "npages", 0)) for v in mm.vmas]
    origins = [(s, e, OriginView(o.oid, o.call_id, o.kind, o.asked_populate, o.task))
               for s, e, o in mm.origins.ranges(0, TASK_SIZE)]
    return LiveCopy(running, history, pt, calls, vmas, origins, (mm.locked_vm, mm.total_vm),
                    getattr(mm, "start_brk", 0))


def build_live(cp: LiveCopy, cache: Optional[dict[int, CallView]] = None) -> tuple[Snapshot, tuple[int, int]]:
    """The Snapshot of a :class:`LiveCopy` (no lock needed). *cache* keeps the views of
    finished calls from one check to the next (call_id -> view)."""
    cache = {} if cache is None else cache
    history = []
    for c in cp.history:
        cv = cache.get(c.call_id)
        if cv is None:
            cv = cache[c.call_id] = _call_view(c)
        history.append(cv)
    calls = {c.call_id: c for c in history}
    for cv in cp.running:
        if cv.call_id not in calls:
            calls[cv.call_id] = cv
            history.append(cv)
    for cid, c in cp.calls:
        if cid not in calls:
            calls[cid] = _as_running(_call_view(c))
    snap = Snapshot(cp.vmas, cp.pt, cp.origins, calls, history, [], [], cp.start_brk)  # type: ignore[arg-type]
    return snap, cp.accounting


def _as_running(cv: CallView) -> CallView:
    return cv if cv.t_end < 0 else dataclasses.replace(cv, t_end=-1, result=None)


def _invariants(snap: Snapshot, accounting: tuple[int, int]) -> list[str]:
    """MM.check_invariants() on the copies of a live snapshot."""
    from mmlab.mm.mm_struct import MM
    locked_vm, total_vm = accounting
    return MM.check_invariants(_InvariantView(snap.vmas, locked_vm, total_vm, snap.pt))  # type: ignore[arg-type]


@dataclass
class LiveFinding:
    """The first FORBIDDEN state the checker saw while the tasks ran."""

    check: int  # which check (1-based) saw it
    at_ns: int  # ns since the populating call of its first finding started (else since the checker started)
    since: str  # what at_ns is measured from
    lock_state: dict
    verdict: Verdict

    @property
    def wrong_pages(self) -> int:
        return self.verdict.wrong_pages

    def as_dict(self) -> dict[str, object]:
        from mmlab.harness.oracle import format_history
        v = self.verdict
        return {"check": self.check, "at_ms": round(self.at_ns / 1e6, 3), "since": self.since,
                "wrong_pages": v.wrong_pages, "lock_state": self.lock_state,
                "findings": [f.as_dict() for f in v.findings if f.grade == FORBIDDEN],
                "history": format_history(v.snapshot) if v.snapshot is not None else []}

    def describe(self) -> str:
        kinds = sorted({f.kind for f in self.verdict.findings if f.grade == FORBIDDEN})
        holders = ", ".join(f"{h['task']} {h['mode']} {h['call'] or 'fault'}#{h['call_id']}"
                            f"{' ' + repr(h['progress']) if h.get('progress') else ''}"
                            for h in self.lock_state.get("holders", ()) if h["task"] != ORACLE_TASK) or "none"
        waiters = ", ".join(f"{w['task']} {w['mode']} {w['call']}" for w in self.lock_state.get("waiters", ())) or "none"
        return (f"live check #{self.check} saw FORBIDDEN ({', '.join(kinds)}; {self.wrong_pages} wrong pages) "
                f"{self.at_ns / 1e6:.3f} ms after {self.since} started; other holders: {holders}; waiters: {waiters}")


@dataclass
class LiveResult:
    """What the checker did: checks made, their lock holds, the worst and the first FORBIDDEN."""

    period_ns: int
    checks: int = 0
    forbidden_checks: int = 0
    max_wrong_pages: int = 0
    hold_ns_max: int = 0
    hold_ns_total: int = 0
    first: Optional[LiveFinding] = None
    error: str = ""
    kinds: dict[str, int] = field(default_factory=dict)  # FORBIDDEN finding kind -> checks it appeared in

    def as_dict(self) -> dict[str, object]:
        return {"period_ms": self.period_ns / 1e6, "checks": self.checks, "forbidden_checks": self.forbidden_checks,
                "max_wrong_pages": self.max_wrong_pages, "hold_ms_max": round(self.hold_ns_max / 1e6, 3),
                "hold_ms_mean": round(self.hold_ns_total / max(1, self.checks) / 1e6, 3),
                "kinds": dict(self.kinds), "error": self.error,
                "first_forbidden": self.first.as_dict() if self.first else None}


class LiveChecker:
    """A thread (task ``oracle``) that checks *mm* every *period_ms* until :meth:`stop`.

    Use as a context manager, or start()/stop(); stop() always joins the thread. A check that
    raises ends the checker and is reported in ``result.error`` (a round then counts as broken)."""

    def __init__(self, mm: "MM", period_ms: float = DEFAULT_PERIOD_MS, name: str = ORACLE_TASK) -> None:
        if not period_ms > 0:
            raise ValueError("the live check period must be positive")
        self.mm = mm
        self.name = name
        self.result = LiveResult(int(period_ms * 1e6))
        self._period_s = period_ms / 1e3
        self._stop = threading.Event()
        self._checked = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._t0 = 0
        self._views: dict[int, CallView] = {}  # finished calls' views, built once

    def __enter__(self) -> "LiveChecker":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        from mmlab.clock import hooks
        if hooks.schedule_point is not None:
            # controlled mode schedules only the tasks it knows; an unregistered reader would stall it
            raise RuntimeError("the live oracle runs in free mode only (a controller is installed)")
        self._t0 = self.mm.clock.now_ns()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, join_s: float = 30.0) -> LiveResult:
        """Stop checking and join the thread (a check in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(join_s)
            if self._thread.is_alive():
                self.result.error = self.result.error or f"live checker did not stop within {join_s:g} s"
        return self.result

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_checks(self, n: int, timeout_s: float = 10.0) -> bool:
        """Block until at least *n* checks have completed (or the checker stopped)."""
        with self._checked:
            return self._checked.wait_for(lambda: self.result.checks >= n or self._stop.is_set() or not self.alive,
                                          timeout_s) and self.result.checks >= n

    def _run(self) -> None:
        set_task_name(self.name)
        try:
            while True:
                self.check_once()
                if self._stop.wait(self._period_s):
                    break
        except BaseException as e:  # noqa: BLE001 - reported, never silently lost
            self.result.error = f"{type(e).__name__}: {e}"
        finally:
            with self._checked:
                self._checked.notify_all()

    def check_once(self) -> Verdict:
        """One check: down_read, copy, up_read, judge; keeps the first FORBIDDEN."""
        mm = self.mm
        sem = mm.mmap_sem
        sem.down_read()
        try:
            t_acq = mm.clock.now_ns()
            cp = copy_live(mm)
            lock_state = sem.state() if self.result.first is None else {}
            t_snap = mm.clock.now_ns()
        finally:
            sem.up_read()
        hold = t_snap - t_acq
        snap, accounting = build_live(cp, self._views)
        snap.invariants = _invariants(snap, accounting)
        verdict = judge(snap)
        r = self.result
        r.hold_ns_max = max(r.hold_ns_max, hold)
        r.hold_ns_total += hold
        if verdict.outcome == FORBIDDEN:
            r.forbidden_checks += 1
            r.max_wrong_pages = max(r.max_wrong_pages, verdict.wrong_pages)
            for kind in {f.kind for f in verdict.findings if f.grade == FORBIDDEN}:
                r.kinds[kind] = r.kinds.get(kind, 0) + 1
            if r.first is None:
                r.first = self._first(snap, verdict, t_snap, lock_state, r.checks + 1)
        with self._checked:
            r.checks += 1
            self._checked.notify_all()
        return verdict

    def _first(self, snap: Snapshot, verdict: Verdict, t_snap: int, lock_state: dict, check: int) -> LiveFinding:
        from mmlab.harness.oracle import LockView
        # the lock holds up to this moment, for the report's history (copied once, outside the lock)
        snap.locks = [LockView(x.task, x.mode, x.call_id, x.call, x.how, x.req_ns, x.acq_ns, x.rel_ns)
                      for x in list(self.mm.mmap_sem.history) if 0 <= x.rel_ns <= t_snap]
        since, t0 = "the live checker", self._t0
        for f in verdict.findings:
            c = snap.calls.get(f.call_id) if f.grade == FORBIDDEN and f.call_id else None
            if c is not None:
                since, t0 = f"call#{c.call_id} {c.task}: {c.name}", c.t_start
                break
        return LiveFinding(check, t_snap - t0, since, lock_state, verdict)


def merge_live(final: Verdict, live: Optional[LiveResult]) -> Verdict:
    """Fold the live checker's findings into a round's final verdict: a FORBIDDEN seen live
    counts even if a later call erased it; wrong pages become the most seen at once."""
    if live is None or live.first is None:
        return final
    first = live.first
    for f in first.verdict.findings:
        if f.grade == FORBIDDEN:
            final.add(Finding(FORBIDDEN, f"live:{f.kind}", f"seen live (check #{first.check}, "
                              f"{first.at_ns / 1e6:.3f} ms after {first.since} started): {f.message}",
                              f.start, f.end, f.call_id, f.oid, f.npages))
    final.pages[FORBIDDEN] = max(final.pages[FORBIDDEN], live.max_wrong_pages)
    return final
