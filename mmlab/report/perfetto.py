"""Chrome trace-event JSON (the Perfetto UI, ui.perfetto.dev, and chrome://tracing open it): one
track per thread, each syscall a slice, and inside it the mmap_lock waits and holds it made.

Works for real traces (:func:`write_trace`, from :class:`mmlab.trace.Trace`) and model runs
(:func:`write_model`, from an MM's ``mmap_sem.history`` lock records and ``call_history`` call
records); both go through :func:`lock_events`, so a model run and a real trace of the same
calls can be opened side by side (each is a "process" in the file). Times are microseconds from
the start of each run. A wait slice is named ``wait W`` / ``wait R``; a hold ``hold R`` (``hold R
(downgrade)`` for the read hold a downgrade began); a failed trylock an instant event.
The format: https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU
("Complete" events, ph X, must nest on one thread: children are clamped into their call).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Optional, Sequence

__all__ = ["lock_events", "write_events", "write_trace", "write_model", "model_events", "trace_events"]


def _us(ns: int, t0: int) -> float:
    return round((ns - t0) / 1e3, 3)


def lock_events(pid: int, process: str, threads: dict[int, str], calls: Iterable[dict[str, Any]],
                locks: Iterable[Any], t0_ns: int, t_end_ns: int,
                notes: Optional[dict[int, dict[str, Any]]] = None) -> list[dict[str, Any]]:
    """Trace events for one run.

    *calls*: dicts with tid, call_id, name, text, enter_ns, exit_ns (-1: not finished) and args
    (a dict shown in the UI). *locks*: LockRecord-like objects (tid, mode, req_ns, acq_ns, rel_ns,
    how, call_id, call). *notes*: extra args for a lock record, by id(record) (e.g. its holders)."""
    ev: list[dict[str, Any]] = [{"ph": "M", "name": "process_name", "pid": pid, "args": {"name": process}}]
    for tid, name in sorted(threads.items()):
        ev.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": f"{name}:{tid}"}})
    spans: dict[int, tuple[int, int]] = {}
    for c in calls:
        s = c["enter_ns"] if c["enter_ns"] >= 0 else t0_ns
        e = c["exit_ns"] if c["exit_ns"] >= 0 else t_end_ns
        spans[c["call_id"]] = (s, e)
        ev.append({"ph": "X", "cat": "syscall" if c["name"] != "fault" else "fault", "name": c["name"],
                   "pid": pid, "tid": c["tid"], "ts": _us(s, t0_ns), "dur": _us(e, s),
                   "args": {"call": c["text"], **c.get("args", {})}})
    for r in locks:
        span = spans.get(r.call_id) if r.call_id else None
        lo, hi = span if span else (t0_ns, t_end_ns)
        extra = (notes or {}).get(id(r), {})
        cat = getattr(r, "lock", "mmap_sem")
        cat = "vma_lock" if cat == "vma_lock" else "mmap_lock"
        what = "vma " if cat == "vma_lock" else ""
        base = {"pid": pid, "tid": r.tid, "cat": cat}
        if r.acq_ns < 0:  # a failed trylock
            ev.append({**base, "ph": "i", "s": "t", "name": f"trylock {r.mode} failed",
                       "ts": _us(min(max(r.req_ns, lo), hi), t0_ns), "args": {"call": r.call}})
            continue
        req, acq = max(r.req_ns, lo), min(max(r.acq_ns, lo), hi)
        rel = min(r.rel_ns if r.rel_ns >= 0 else t_end_ns, hi)
        if acq > req:
            ev.append({**base, "ph": "X", "name": f"wait {what}{r.mode}", "ts": _us(req, t0_ns), "dur": _us(acq, req),
                       "args": {"call": r.call, "wait_us": (r.acq_ns - r.req_ns) / 1e3, **extra}})
        if what:  # vma_start_write(): the vma stays write-locked inside the mmap_sem write hold
            continue
        ev.append({**base, "ph": "X", "name": f"hold {r.mode}" + (f" ({r.how})" if r.how else ""),
                   "ts": _us(acq, t0_ns), "dur": _us(max(rel, acq), acq),
                   "args": {"call": r.call, "held_us": (r.rel_ns - r.acq_ns) / 1e3 if r.rel_ns >= 0 else None}})
    return ev


def write_events(path: str, events: list[dict[str, Any]], meta: Optional[dict[str, Any]] = None) -> int:
    with open(path, "w") as f:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms", "otherData": meta or {}}, f)
    return len(events)


def trace_events(tr: Any, process: str = "traced process", pid: Optional[int] = None,
                 holders_over_us: float = 100.0) -> list[dict[str, Any]]:
    """Events for a real :class:`mmlab.trace.Trace`; waits of at least *holders_over_us* carry
    the holders they waited behind."""
    from mmlab.trace.analysis import _Index, attribute
    calls = [{"tid": c.tid, "call_id": c.call_id, "name": c.name, "text": c.text(), "enter_ns": c.enter_ns,
              "exit_ns": c.exit_ns, "args": {"ret": c.ret}} for c in tr.calls + tr.faults]
    notes: dict[int, dict[str, Any]] = {}
    ix = _Index(tr)
    bid = tr.call_by_id()
    t0 = tr.t0_ns if tr.t0_ns >= 0 else min((c["enter_ns"] for c in calls), default=0)
    p = pid if pid is not None else (tr.tgid if tr.tgid >= 0 else 1)
    flows: list[dict[str, Any]] = []
    for r in tr.locks:
        if r.acq_ns >= 0 and r.wait_ns >= holders_over_us * 1e3:
            w = attribute(tr, r, ix, bid)
            notes[id(r)] = {"holders": [f"{h.name}:{h.tid} {h.mode} in {h.call} (held {h.held_us:.0f} us)"
                                        for h in w.holders],
                            "queued_behind": [f"{q.name}:{q.tid} waiting W in {q.call}" for q in w.queued_behind]}
            if w.holders:  # an arrow from the main holder's hold to the end of this wait
                h = w.holders[0]
                start = max(r.req_ns, r.req_ns - int(h.since_us * 1e3))
                fid = len(flows) // 2 + 1
                flows.append({"ph": "s", "id": fid, "name": "blocked", "cat": "mmap_lock", "pid": p, "tid": h.tid,
                              "ts": _us(start, t0)})
                flows.append({"ph": "f", "bp": "e", "id": fid, "name": "blocked", "cat": "mmap_lock", "pid": p,
                              "tid": r.tid, "ts": _us(r.acq_ns, t0)})
    return lock_events(p, process, dict(tr.threads), calls, tr.locks, t0, tr.t1_ns if tr.t1_ns >= 0 else t0,
                       notes) + flows


def write_trace(path: str, tr: Any, process: str = "traced process") -> int:
    """Write a real trace; returns the number of trace events."""
    return write_events(path, trace_events(tr, process),
                        {"source": "mmlab trace (kernel mmap_lock tracepoints)",
                         "lost_events": None if getattr(tr, "lost_unknown", None) else tr.lost,
                         "counts": tr.counts})


def model_events(mm: Any, process: str, pid: int = 1) -> list[dict[str, Any]]:
    """Events for one model run: the MM's lock history and its finished (and running) calls."""
    from mmlab.trace.decode import call_text
    locks = list(mm.mmap_sem.history) + list(mm.mmap_sem.holders.values())
    # waits in vma_start_write() (a writer on a vma the populate holds under the per-VMA lock,
    # populate_vma_lock): recorded like mmap_sem's, shown on the waiter's track as "vma" waits
    locks += list(getattr(getattr(mm, "vma_locks", None), "history", ()))
    names: dict[int, str] = {}
    tid_of: dict[str, int] = {}
    for r in locks:
        names[r.tid] = r.task
        tid_of[r.task] = r.tid
    cs = list(mm.call_history) + list(getattr(mm, "running", {}).values())
    calls = []
    for c in cs:
        tid = tid_of.get(c.task, 1_000_000 + c.task_index)
        names.setdefault(tid, c.task)
        args = tuple(a if isinstance(a, int) or a is None else a for a in c.args)
        calls.append({"tid": tid, "call_id": c.call_id, "name": c.name, "text": _model_text(c.name, args, call_text),
                      "enter_ns": c.t_start, "exit_ns": c.t_end, "args": {"result": repr(c.result)}})
    times = [r.req_ns for r in locks if r.req_ns >= 0] + [c["enter_ns"] for c in calls]
    ends = [r.rel_ns for r in locks if r.rel_ns >= 0] + [c["exit_ns"] for c in calls if c["exit_ns"] >= 0]
    t0 = min(times, default=0)
    t1 = max(ends + times, default=t0)
    return lock_events(pid, process, names, calls, locks, t0, t1)


def _model_text(name: str, args: tuple, call_text: Any) -> str:
    if name == "mmap" and len(args) >= 6 and not isinstance(args[4], int):
        fd = args[4]
        t = call_text(name, tuple(a if isinstance(a, int) else -1 for a in args[:4]) + (-1, args[5] or 0))
        return t[:-1] + (f", {fd}, {args[5]:#x})" if fd else ")")
    if all(isinstance(a, int) for a in args):
        return call_text(name, args)
    return f"{name}({', '.join(repr(a) for a in args)})"


def write_model(path: str, runs: Sequence[tuple[str, Any]], meta: Optional[dict[str, Any]] = None) -> int:
    """Write model runs, each ``(label, mm)``, as processes 1..n of one file."""
    ev: list[dict[str, Any]] = []
    for i, (label, mm) in enumerate(runs, 1):
        ev += model_events(mm, label, pid=i)
    return write_events(path, ev, {"source": "mmlab model", **(meta or {})})
