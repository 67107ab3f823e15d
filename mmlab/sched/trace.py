"""Traces: every schedule point of an execution, and the same grouped into steps a person reads.

An *event* is one schedule point a task passed (what it was about to do, the virtual time, which
mmap_sem mode it held). The full trace (``mmlab replay --trace``) numbers every event. The
*interleaving* groups them into steps: a step is what one task did without another task running,
within one lock hold -- a new step starts at a context switch, at a syscall entry, at each
mmap_sem acquisition after the first of a syscall, and at a disk wait. Reading it answers "which
task did what, under which lock, in which order".

:func:`fingerprint` hashes everything a replay must repeat: each event with its virtual time and
each lock hold with its request, acquisition and release times.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional

from mmlab.flags import Map, Prot
from mmlab.sched.controller import Event, Execution
from mmlab.sched.replay import tasks_of
from mmlab.sched.scheduler import is_preemption

__all__ = ["describe_event", "group_steps", "format_steps", "format_events", "fingerprint", "fmt_ns", "Step"]


def fmt_ns(ns: int) -> str:
    if ns >= 1_000_000:
        return f"{ns / 1e6:.3g} ms"
    if ns >= 1_000:
        return f"{ns / 1e3:.4g} us"
    return f"{ns} ns"


def _size(n: int) -> str:
    for unit, sh in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << sh and n % (1 << sh) == 0:
            return f"{n >> sh} {unit}"
    return str(n)


def _flags(v: int, enum: type) -> str:
    if v == 0:
        return "0"
    names = [m.name for m in enum if m.value and m.value & (m.value - 1) == 0 and v & m.value]  # type: ignore[attr-defined]
    rest = v & ~sum(m.value for m in enum if m.name in names)  # type: ignore[attr-defined]
    return "|".join(names + ([hex(rest)] if rest else []))


def _call_text(c: object) -> str:
    name = c.name  # type: ignore[attr-defined]
    a = c.args  # type: ignore[attr-defined]
    if name == "mmap" and len(a) == 6:
        addr, length, prot, flags, fname, off = a
        parts = [hex(addr), _size(length), _flags(prot, Prot), _flags(flags, Map)]
        if fname is not None:
            parts += [fname, str(off)]
        return f"mmap({', '.join(parts)})"
    if name in ("munmap", "mlock", "munlock") and len(a) == 2:
        return f"{name}({a[0]:#x}, {_size(a[1])})"
    return f"{name}(" + ", ".join(hex(x) if isinstance(x, int) and x > 4096 else repr(x) for x in a) + ")"


def _result_text(r: object) -> str:
    if isinstance(r, BaseException):
        return f"fails: {type(r).__name__}: {r}"
    if isinstance(r, int) and r > 4096:
        return f"returns {r:#x}"
    return f"returns {r!r}"


def _vma_text(vma: object) -> str:
    return f"{vma.start:#x}-{vma.end:#x}"  # type: ignore[attr-defined]


def describe_event(ev: Event, exact: bool = False) -> str:
    """One event in words; *exact* adds every number a replay must repeat."""
    _task, kind, obj, now, held, _step = ev
    if kind == "syscall_enter":
        return _call_text(obj)
    if kind == "syscall_exit":
        return f"{obj.name}() {_result_text(obj.result)}"  # type: ignore[attr-defined]
    if kind in ("lock_request", "lock_acquired", "lock_released", "lock_downgraded", "lock_trylock"):
        sem, rec = obj[0], obj[1]  # type: ignore[index]
        how = f" ({rec.how})" if rec.how else ""
        if kind == "lock_request":
            s = f"{'down_write' if rec.mode == 'W' else 'down_read'}({sem.name}){how}"
        elif kind == "lock_acquired":
            s = f"gets {sem.name} {rec.mode}"
            if rec.wait_ns > 0:
                s += f" after waiting {fmt_ns(rec.wait_ns)}"
        elif kind == "lock_released":
            s = f"{'up_write' if rec.mode == 'W' else 'up_read'}({sem.name}), held {fmt_ns(rec.hold_ns)}"
        elif kind == "lock_downgraded":
            s = f"downgrade_write({sem.name})"
        else:
            s = f"down_read_trylock({sem.name})"
        if exact:
            s += f" [req {rec.req_ns} acq {rec.acq_ns} rel {rec.rel_ns}]"
        return s
    if kind == "spend":
        why, ns = obj  # type: ignore[misc]
        verb = {"populate": "faults pages in", "zap": "zaps pages"}.get(why, why)
        return f"{verb} ({fmt_ns(ns)})"
    if kind == "wait":
        _clock, ns, why = obj  # type: ignore[misc]
        return f"waits {fmt_ns(ns)} for the {why}" + (f", holding {held}" if held else ", holding no lock")
    if kind == "populate_batch":
        return "populate: nothing left to fault in this batch"
    if kind == "page_lock":
        return "lock_page()"
    # a vma by its range: its vm_id comes from a process-wide counter, which a replay does not repeat
    if kind == "vma_write_wait":
        return f"vma_start_write() waits for the readers of the vma {_vma_text(obj)}"
    if kind == "vma_read_lock":
        return f"populate: vma_start_read(vma {_vma_text(obj)})"
    if kind == "vma_read_unlock":
        return f"populate: vma_end_read(vma {_vma_text(obj)})"
    if kind == "queued":
        return str(obj)
    if kind == "exit":
        return f"raises {str(obj).strip().splitlines()[-1]}" if obj else "finishes"
    return kind


_QUIET = frozenset({"page_lock", "lock_acquired"})


@dataclass
class Step:
    task: int
    events: list[Event] = field(default_factory=list)
    preempts: Optional[int] = None  # the task it took the CPU from, if that was a preemption

    @property
    def locks(self) -> str:
        """The mmap_sem modes the task held at some point of the step."""
        modes = {ev[4] for ev in self.events if ev[4]}
        modes |= {ev[2][1].mode for ev in self.events if ev[1] == "lock_released"}  # type: ignore[index]
        return "mmap_sem " + "/".join(sorted(modes, reverse=True)) if modes else "no lock"

    def text(self) -> str:
        parts = []
        evs = self.events
        for i, ev in enumerate(evs):
            kind = ev[1]
            if kind == "lock_released" and ev[2][1].how in ("populate", "retake", "fault") and any(  # type: ignore[index]
                    e[1] in ("page_lock", "wait") for e in evs[i + 1:i + 3]):
                parts.append(f"page cache miss: drops {ev[2][0].name} for the disk (FAULT_FLAG_ALLOW_RETRY)")  # type: ignore[index]
                continue
            if kind in _QUIET and not (kind == "lock_acquired" and (i == 0 or ev[2][1].wait_ns > 0)):  # type: ignore[index]
                continue  # a grant is worth a word when it waited, or when it was asked for in another step
            if kind == "exit" and not ev[2]:
                continue
            d = describe_event(ev)
            if kind == "lock_request" and i == len(evs) - 1:
                d = "about to " + d  # preempted before its down_*() tried
            parts.append(d)
        if not parts:  # only quiet events: say them
            parts = [describe_event(ev) for ev in self.events if ev[1] != "exit"]
        return "; ".join(parts)


def group_steps(ex: Execution) -> list[Step]:
    steps: list[Step] = []
    cur: Optional[Step] = None
    prev: Optional[Event] = None
    for ev in ex.events:
        task, kind = ev[0], ev[1]
        new = cur is None or task != cur.task or kind in ("syscall_enter", "wait") or (
            kind == "lock_request" and prev is not None and prev[1] != "syscall_enter")
        if new:
            cur = Step(task)
            if prev is not None and prev[0] != task:
                s = prev[5]
                if s < len(ex.choices) and is_preemption(tasks_of(ex.masks[s]), ex.currents[s], ex.choices[s]):
                    cur.preempts = prev[0]
            steps.append(cur)
        assert cur is not None
        cur.events.append(ev)
        prev = ev
    return [s for s in steps if not all(e[1] == "exit" and not e[2] for e in s.events)]


def format_steps(ex: Execution, steps: Optional[list[Step]] = None) -> str:
    steps = group_steps(ex) if steps is None else steps
    names = ex.names
    w = max(len(n) for n in names) if names else 4
    lines = []
    for i, s in enumerate(steps, 1):
        pre = f"  (preempts {names[s.preempts]})" if s.preempts is not None else ""
        t0 = s.events[0][3]
        lines.append(f"{i:>3}. {names[s.task]:<{w}}  [{s.locks}]  {s.text()}{pre}   @{fmt_ns(t0)}")
    return "\n".join(lines)


def format_events(ex: Execution) -> str:
    """Every schedule point, numbered, with the virtual time (``--trace``)."""
    names = ex.names
    w = max(len(n) for n in names) if names else 4
    lines = []
    for i, ev in enumerate(ex.events, 1):
        held = f"[{ev[4]}]" if ev[4] else "[-]"
        lines.append(f"{i:>4}. t={ev[3]:>12} ns  {names[ev[0]]:<{w}} {held:<4} {ev[1]:<15} {describe_event(ev)}")
    return "\n".join(lines)


def fingerprint(ex: Execution) -> str:
    """A hash of the trace and every virtual-time number in it: equal means replayed identically."""
    h = hashlib.sha256()
    h.update(ex.status.encode())
    for ev in ex.events:
        h.update(f"{ev[0]}|{ev[1]}|{ev[3]}|{ev[4]}|{describe_event(ev, exact=True)}\n".encode())
    h.update(repr((ex.choices, ex.masks)).encode())
    return h.hexdigest()[:16]
