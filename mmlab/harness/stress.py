"""The stress runner: a suite's race sections and workload on each kernel, then its expectations.

Per kernel profile of the suite:

* every race section runs its populator x racer cells (:func:`mmlab.harness.race.run_cell`), each
  round graded by the oracle;
* the workload -- the suite's ``[[task]]`` entries as real threads (:class:`TaskGroup` of the
  latency harness, with its stall :class:`Watchdog`) -- runs for the suite's duration on one MM,
  after which the oracle judges the whole model (invariants, lineage, populated pages).

Then the expectations: for each kernel, the parts that share one ``Expect`` (a race section's own,
else the suite's) are checked together -- a ``never`` grade seen anywhere is a violation, a
``reproduce`` item (a grade, a finding kind, or "stall") seen nowhere is a violation (a known bug
that did not show), and the workload's worst mmap_sem wait must stay under ``stall_ms`` (or,
for a known stall, exceed ``stall_over_ms``). A round that hangs, or a workload the watchdog
declares hung, ends the run with ``hang`` set.
"""

from __future__ import annotations

import importlib.util
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from mmlab.current import set_task_name
from mmlab.errors import Signal
from mmlab.flags import (MADV_DONTNEED, MAP_ANONYMOUS, MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MCL_CURRENT,
                         MCL_FUTURE, MREMAP_MAYMOVE, PAGE_SIZE, PROT_READ, PROT_WRITE)
from mmlab.harness.latency import _prepare_process, _restore_process
from mmlab.harness.live import ORACLE_TASK, LiveChecker, LiveResult, merge_live
from mmlab.harness.oracle import Verdict, check
from mmlab.harness.populators import POPULATORS
from mmlab.harness.race import CellResult, RoundHang, run_cell
from mmlab.harness.racers import RACERS
from mmlab.harness.suite import Expect, RaceSection, Suite, TaskSpec
from mmlab.harness.tasks import Step, Task, TaskGroup
from mmlab.harness.victims import fault_victim, vma_writer_victim, writer_victim
from mmlab.harness.watchdog import Watchdog
from mmlab.kernels import get_kernel
from mmlab.mm.filemap import File
from mmlab.clock import RealClock
from mmlab.mm.mm_struct import MM

__all__ = ["SuiteResult", "KernelRun", "WorkloadResult", "Live", "run_suite", "missing_features"]

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS

# what a feature needs from the model (some syscalls are written on another branch)
_NEEDS = {"mremap": "mmlab.mm.mremap", "mprotect": "mmlab.mm.mprotect", "remap_file_pages": "mmlab.mm.fremap",
          "mremap-fixed": "mmlab.mm.mremap", "mremap-locked": "mmlab.mm.mremap",
          "remap-file-pages": "mmlab.mm.fremap"}


def _missing(feature: str) -> Optional[str]:
    mod = _NEEDS.get(feature)
    if mod and importlib.util.find_spec(mod) is None:
        return f"{feature} needs {mod}, not modelled yet"
    return None


def missing_features(suite: Suite) -> dict[str, str]:
    """Populators, racers and ops the suite uses that the model cannot run yet: feature -> why."""
    out = {}
    feats = set()
    for r in suite.races:
        feats.update(r.populators)
        feats.update(r.racers)
    for t in suite.tasks:
        feats.update(t.mix)
        if t.populator:
            feats.add(t.populator)
    for f in sorted(feats):
        why = _missing(f)
        if why:
            out[f] = why
    return out


@dataclass
class WorkloadResult:
    kernel: str
    calls: int = 0
    elapsed_s: float = 0.0
    worst_wait_ms: float = 0.0
    worst_wait_where: str = ""
    verdict: Optional[Verdict] = None
    errors: list[str] = field(default_factory=list)
    reason: str = "done"
    hang_text: str = ""
    stalls: int = 0
    live: Optional[LiveResult] = None  # --check-live: the live oracle's record, merged into verdict
    final_outcome: Optional[str] = None  # the after-the-run check alone
    populate_ms: Optional[float] = None  # the populator tasks' median populate call in the workload
    alone_ms: Optional[float] = None     # the same populate with nothing beside it (median)
    dilation: float = 1.0                # the workload clock's k (times are that clock's)

    @property
    def slowdown(self) -> Optional[float]:
        """populate_ms / alone_ms: what the other tasks cost the populating thread."""
        if self.populate_ms is None or not self.alone_ms:
            return None
        return self.populate_ms / self.alone_ms

    def as_dict(self) -> dict[str, object]:
        v = self.verdict
        return {"kernel": self.kernel, "calls": self.calls, "elapsed_s": round(self.elapsed_s, 3),
                "worst_wait_ms": round(self.worst_wait_ms, 3), "worst_wait_where": self.worst_wait_where,
                "stall_reports": self.stalls, "outcome": v.outcome if v else None,
                "pages": dict(v.pages) if v else None,
                "findings": [f.as_dict() for f in v.findings] if v else [], "errors": self.errors,
                "reason": self.reason, "final_outcome": self.final_outcome,
                "populate_ms": self.populate_ms, "alone_ms": self.alone_ms, "slowdown": self.slowdown,
                "dilation": self.dilation,
                "live": self.live.as_dict() if self.live is not None else None}


@dataclass
class KernelRun:
    kernel: str
    cells: list[tuple[int, CellResult]] = field(default_factory=list)  # (race section index, cell)
    workload: Optional[WorkloadResult] = None


@dataclass
class SuiteResult:
    suite: Suite
    runs: list[KernelRun] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # reports (seed, history) behind violations
    skipped: dict[str, str] = field(default_factory=dict)
    hang: str = ""
    interrupted: bool = False
    elapsed_s: float = 0.0

    @property
    def status(self) -> str:
        if self.hang:
            return "HANG"
        if self.violations:
            return "VIOLATED"
        if self.interrupted:
            return "INTERRUPTED"
        return "HELD"

    def outcome_counts(self) -> dict[str, int]:
        c = {"OK": 0, "INTERESTING": 0, "FORBIDDEN": 0}
        for run in self.runs:
            for _i, cell in run.cells:
                for g in c:
                    c[g] += cell.outcomes[g]
            if run.workload is not None and run.workload.verdict is not None:
                c[run.workload.verdict.outcome] += 1
        return c

    def worst_wait_ms(self) -> float:
        return max((r.workload.worst_wait_ms for r in self.runs if r.workload), default=0.0)

    def as_dict(self) -> dict[str, object]:
        s = self.suite
        return {"suite": s.name, "file": s.path, "status": self.status, "violations": self.violations,
                "skipped": self.skipped, "hang": self.hang or None, "elapsed_s": round(self.elapsed_s, 3),
                "seed": s.seed, "time_scale": s.time_scale, "outcomes": self.outcome_counts(),
                "worst_wait_ms": round(self.worst_wait_ms(), 3),
                "kernels": [{"kernel": r.kernel, "race": [dict(c.as_dict(), section=i) for i, c in r.cells],
                             "workload": r.workload.as_dict() if r.workload else None} for r in self.runs]}


class Live:
    """What the dashboard shows while a suite runs; written by the runner, read by the display."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.phase = "waiting"
        self.done = 0
        self.total = 0
        self.calls = 0
        self.t0 = time.monotonic()
        self.worst_wait_ns = 0
        self.outcomes = {"OK": 0, "INTERESTING": 0, "FORBIDDEN": 0}
        self.group: Optional[TaskGroup] = None
        self.status = "running"

    @property
    def calls_now(self) -> int:
        g = self.group
        return self.calls + (sum(t.steps_done for t in g.tasks) if g is not None else 0)

    def calls_per_s(self) -> float:
        dt = time.monotonic() - self.t0
        return self.calls_now / dt if dt > 0 else 0.0


# ---------------------------------------------------------------------------- the workload
def _mix_task(spec: TaskSpec, name: str, seed: int, mlockall: bool) -> Task:
    """A task making a seeded random mix of calls on mappings of its own (and the shared brk)."""
    rng = random.Random(seed)
    ops = [op for op, w in spec.mix.items() if w > 0 and _missing(op) is None]
    weights = [spec.mix[op] for op in ops]
    maxpages = max(1, spec.size // PAGE_SIZE)
    regions: list[list[int]] = []  # [addr, length, writable]

    def setup(task: Task) -> None:
        if mlockall:
            task.mm.mlockall(MCL_CURRENT | MCL_FUTURE)
        if "remap_file_pages" in ops:
            f = File(f"{name}.dat", spec.size)
            task.user["file"] = (task.mm.mmap(0, spec.size, RW, MAP_SHARED, f), f)

    def pick() -> Optional[list[int]]:
        return regions[rng.randrange(len(regions))] if regions else None

    def step(op: str) -> Optional[Step]:
        n = rng.randint(1, maxpages) * PAGE_SIZE
        r = pick()
        if op in ("mmap", "populate"):
            flags = ANON | (MAP_POPULATE if op == "populate" else 0)
            return Step(op, lambda mm: regions.append([mm.mmap(0, n, RW, flags), n, 1]), expect=(OSError,))
        if op == "brk":
            grow = rng.random() < 0.6

            def do_brk(mm: MM) -> None:
                cur = mm.brk(0)
                mm.brk(cur + n if grow else max(mm.start_brk, cur - n))
            return Step(op, do_brk, expect=(OSError,))
        if op == "remap_file_pages" and "file" in ops_state:
            a, f = ops_state["file"]
            pg = rng.randrange(max(1, f.npages))
            return Step(op, lambda mm: mm.remap_file_pages(a, PAGE_SIZE, 0, pg, 0), expect=(OSError,))
        if r is None:
            return None
        a, ln = r[0], r[1]
        if op == "munmap":
            regions.remove(r)
            return Step(op, lambda mm: mm.munmap(a, ln), expect=(OSError,))
        if op == "touch":
            addr = a + rng.randrange(ln // PAGE_SIZE) * PAGE_SIZE
            w = bool(r[2])
            return Step(op, lambda mm: mm.touch(addr, write=w))
        if op == "mprotect":
            r[2] = 1 - r[2]
            prot = RW if r[2] else PROT_READ
            return Step(op, lambda mm: mm.mprotect(a, ln, prot), expect=(OSError,))
        if op == "mlock":
            return Step(op, lambda mm: mm.mlock(a, ln), expect=(OSError,))
        if op == "munlock":
            return Step(op, lambda mm: mm.munlock(a, ln), expect=(OSError,))
        if op == "madvise":
            return Step(op, lambda mm: mm.madvise(a, ln, MADV_DONTNEED), expect=(OSError,))
        if op == "mremap":
            new = rng.randint(1, maxpages) * PAGE_SIZE

            def do_mremap(mm: MM) -> None:
                r[0] = mm.mremap(a, ln, new, MREMAP_MAYMOVE)
                r[1] = new
            return Step(op, do_mremap, expect=(OSError,))
        return None

    ops_state: dict = {}

    def script(task: Task) -> Iterator[Step]:
        if "file" in task.user:
            ops_state["file"] = task.user["file"]
        if not ops:
            return
        for _ in range(64):
            s = step(rng.choices(ops, weights)[0])
            if s is not None:
                yield s

    return Task(name, script, repeat=True, interval_ns=spec.interval_ns, setup=setup)


_WORKLOAD_POPULATE = {  # populator -> (prot, flags, file-backed): the populating mmap, at an address of its choosing
    "populate-anon": (RW, ANON | MAP_POPULATE, False),
    "populate-file": (PROT_READ, MAP_SHARED | MAP_POPULATE, True),
    "map-locked": (RW, ANON | MAP_LOCKED, False),
}


def _populator_task(spec: TaskSpec, name: str, size: int) -> Task:
    """A task that maps *size* with its populating mmap and unmaps it again, over and over."""
    prot, flags, file_backed = _WORKLOAD_POPULATE[spec.populator]  # type: ignore[index]

    def script(task: Task) -> Iterator[Step]:
        box: dict = {}
        if file_backed:
            box["file"] = File(f"{name}.dat", size)  # a new file each time: a cold page cache
        yield Step("populate", lambda mm: box.__setitem__("a", mm.mmap(0, size, prot, flags, box.get("file"))),
                   expect=(OSError,))
        if "a" in box:
            yield Step("munmap", lambda mm: mm.munmap(box["a"], size), timed=False)

    return Task(name, script, repeat=True, interval_ns=spec.interval_ns)


def _build_tasks(suite: Suite, seed: int) -> list[Task]:
    rng = random.Random(seed)
    tasks = []
    for spec in suite.tasks:
        for i in range(spec.count):
            name = spec.name if spec.count == 1 else f"{spec.name}{i}"
            s = rng.randrange(1 << 31)
            if spec.victim == "fault":
                tasks.append(fault_victim(name, seed=s, interval_ns=spec.interval_ns))
            elif spec.victim == "writer":
                tasks.append(writer_victim(name, interval_ns=spec.interval_ns))
            elif spec.victim == "vma-writer":  # mprotects the last page of whatever populates now
                tasks.append(vma_writer_victim(name, interval_ns=spec.interval_ns))
            elif spec.populator is not None:
                if _missing(spec.populator) is None:
                    tasks.append(_populator_task(spec, name, spec.size))
            else:
                tasks.append(_mix_task(spec, name, s, spec.mlockall and i == 0))
    return tasks


ALONE_CALLS = 3


def _populate_alone_ms(suite: Suite, kernel: str) -> Optional[float]:
    """The workload's populating mmap with nothing beside it: same kernel, costs and size, on a
    fresh MM, ALONE_CALLS times on this thread; the median call (ms of clock time)."""
    specs = [t for t in suite.tasks if t.populator and _missing(t.populator) is None]
    if not specs:
        return None
    spec = specs[0]
    prot, flags, file_backed = _WORKLOAD_POPULATE[spec.populator]  # type: ignore[index]
    mm = MM(kernel, suite.costs.scaled(suite.time_scale), _workload_clock(suite))  # the workload's own costs
    set_task_name(spec.name)
    times = []
    for i in range(ALONE_CALLS):
        f = File(f"alone{i}.dat", spec.size) if file_backed else None
        t0 = mm.clock.now_ns()
        a = mm.mmap(0, spec.size, prot, flags, f)
        times.append((mm.clock.now_ns() - t0) / 1e6)
        mm.munmap(a, spec.size)
    times.sort()
    return times[len(times) // 2]


def _workload_populate_ms(suite: Suite, tasks: list[Task]) -> Optional[float]:
    pops = {s.name for s in suite.tasks if s.populator}
    stats = [st for t in tasks if t.name.startswith(tuple(pops)) for op, st in t.stats.items() if op == "populate"]
    stats = [st for st in stats if st.count]
    if not stats:
        return None
    merged = stats[0].total.__class__(stats[0].total.lowest_trackable_value, stats[0].total.highest_trackable_value,
                                      stats[0].total.significant_figures)
    for st in stats:
        merged.add(st.total)
    return merged.get_value_at_percentile(50.0) / 1e6


def _workload_clock(suite: Suite) -> RealClock:
    """The workload's clock: dilated ``suite.dilation``-fold (mmlab.harness.dilation), the
    populate alone on the same; a suite's duration stays real seconds, so a dilated workload
    covers 1/k of it in modelled time."""
    k = suite.dilation
    return RealClock(dilation=k, carry_credit=k > 1)


def _run_workload(suite: Suite, kernel: str, seed: int, live: Live, out: Optional[Callable[[str], None]],
                  check_live_ms: float = 0.0) -> WorkloadResult:
    costs = suite.costs.scaled(suite.time_scale)
    mm = MM(kernel, costs, _workload_clock(suite))
    res = WorkloadResult(kernel, dilation=suite.dilation)
    tasks = _build_tasks(suite, seed)
    if not tasks:
        res.reason = "skipped"
        return res
    worst = {"ns": 0, "where": ""}
    # the stall is what the *other* tasks suffer: a populator waiting to re-take the lock it
    # yielded is the cause, not a victim
    causes = {t.name for t in tasks if t.name.startswith(tuple(s.name for s in suite.tasks if s.populator))}
    causes.add(ORACLE_TASK)  # the live checker observes; its waits are not a task's stall

    def on_lock(rec) -> None:
        if rec.acq_ns >= 0 and rec.how not in ("downgrade", "trylock") and rec.task not in causes:
            w = rec.acq_ns - rec.req_ns
            if w > worst["ns"]:
                worst["ns"] = w
                worst["where"] = f"{rec.task} {rec.call or 'fault'} ({rec.mode})"
                if w > live.worst_wait_ns:
                    live.worst_wait_ns = w
    mm.mmap_sem.listeners.append(on_lock)
    stall_ms = min([e.stall_ms for e in suite.expect.values() if e.stall_ms] or [100.0])
    wd = Watchdog(mm, stall_ms=stall_ms, hang_ms=suite.hang_ms, out=None)
    group = TaskGroup(mm, tasks, duration_s=suite.duration_s, watchdog=wd,
                      timeout_s=suite.duration_s + suite.hang_ms / 1e3 + 10, join_timeout_s=10.0)
    live.group = group
    t0 = time.monotonic()
    old = _prepare_process()  # no cyclic-GC pause in the middle of a measured wait
    checker = LiveChecker(mm, check_live_ms) if check_live_ms > 0 else None
    try:
        if checker is not None:
            checker.start()
        try:
            gr = group.run()
        finally:
            if checker is not None:
                res.live = checker.stop()
    finally:
        _restore_process(old)
        live.calls += sum(t.steps_done for t in tasks)
        live.group = None
        mm.mmap_sem.listeners.remove(on_lock)
    res.elapsed_s = time.monotonic() - t0
    res.calls = sum(t.steps_done for t in tasks)
    res.worst_wait_ms = worst["ns"] / 1e6
    res.worst_wait_where = worst["where"]
    res.stalls = len(gr.stalls)
    res.reason = gr.reason
    res.errors = [str(e) for e in gr.errors] + ([f"tasks did not stop: {', '.join(gr.hung)}"] if gr.hung else [])
    if res.live is not None and res.live.error:
        res.errors.append(f"live oracle: {res.live.error}")
    if gr.reason == "hang" or gr.hung:
        res.reason = "hang"
        res.hang_text = wd.hang_text() or f"tasks did not stop: {gr.hung}"
        return res
    res.verdict = check(mm)
    res.final_outcome = res.verdict.outcome
    merge_live(res.verdict, res.live)
    res.populate_ms = _workload_populate_ms(suite, tasks)
    if res.populate_ms is not None:
        res.alone_ms = _populate_alone_ms(suite, kernel)
    return res


# ---------------------------------------------------------------------------- the run
def run_suite(suite: Suite, live: Optional[Live] = None, stop: Optional[threading.Event] = None,
              out: Optional[Callable[[str], None]] = None,
              on_round: Optional[Callable[[str, CellResult, object], None]] = None,
              check_live_ms: float = 0.0) -> SuiteResult:
    """Run *suite*; KeyboardInterrupt is caught (``interrupted`` set, expectations still checked
    on what was measured). A hang stops the run. ``on_round(kernel, cell, round)`` sees every
    race round (the seed sweep records its latencies). *check_live_ms* > 0 runs the oracle that
    often under mmap_sem (read) during every race round and workload (live.py); what it sees
    counts toward the expectations."""
    live = live or Live(suite)
    res = SuiteResult(suite, skipped=missing_features(suite))
    t0 = time.monotonic()
    live.t0 = t0
    costs = suite.costs.scaled(suite.time_scale)
    plan = []
    for k in suite.kernels:
        for i, sec in enumerate(suite.races):
            if sec.kernels and k not in sec.kernels:
                continue
            for p in sec.populators:
                for r in sec.racers:
                    if _missing(p) is None and _missing(r) is None:
                        plan.append((k, i, sec, p, r))
        if suite.tasks:
            plan.append((k, -1, None, "", ""))
    live.total = len(plan)
    runs: dict[str, KernelRun] = {}
    try:
        for k, i, sec, p, r in plan:
            if stop is not None and stop.is_set():
                res.interrupted = True
                break
            run = runs.get(k)
            if run is None:
                run = runs[k] = KernelRun(k)
                res.runs.append(run)
            if sec is not None:
                live.phase = f"{k}: race {p} x {r}"

                def each_round(cell: CellResult, rr, k: str = k) -> None:
                    live.calls += rr.calls
                    live.outcomes[rr.outcome] += 1
                    if on_round is not None:
                        on_round(k, cell, rr)
                cell = run_cell(get_kernel(k), POPULATORS[p], RACERS[r], seed=suite.seed, size=sec.size,
                                costs=costs, rounds=sec.rounds, duration_s=sec.duration_s, keep=1, stop=stop,
                                on_round=each_round, check_live_ms=check_live_ms)
                run.cells.append((i, cell))
            else:
                live.phase = f"{k}: workload ({len(suite.tasks)} task kinds, {suite.duration_s:g} s)"
                wl = _run_workload(suite, k, random.Random(f"{suite.seed}/{k}").randrange(1 << 31), live, out,
                                   check_live_ms)
                run.workload = wl
                if wl.verdict is not None:
                    live.outcomes[wl.verdict.outcome] += 1
                if wl.reason == "hang":
                    res.hang = f"{k} workload: {wl.hang_text}"
                    break
            live.done += 1
    except KeyboardInterrupt:
        res.interrupted = True
    except RoundHang as h:
        res.hang = f"{h}\n{h.stacks}\nlock state: {h.lock_state}"
    res.elapsed_s = time.monotonic() - t0
    _check_expectations(res)
    live.status = res.status
    return res


def _check_expectations(res: SuiteResult) -> None:
    suite = res.suite
    for run in res.runs:
        k = run.kernel
        groups: dict[int, tuple[Expect, list]] = {}
        for i, cell in run.cells:
            e = suite.expect_for(k, suite.races[i])
            groups.setdefault(id(e), (e, []))[1].append(cell)
        if run.workload is not None:
            e = suite.expect_for(k)
            groups.setdefault(id(e), (e, []))[1].append(run.workload)
        for e, parts in groups.values():
            seen: dict[str, int] = {}
            for part in parts:
                for g, n in _seen(part).items():
                    seen[g] = seen.get(g, 0) + n
            for g in e.never:
                if seen.get(g):
                    res.violations.append(f"{k}: {g} appeared ({seen[g]}x) where it must never appear")
                    res.details.extend(_reports(k, parts, g))
            complete = not res.interrupted and not res.hang
            for item in e.reproduce:
                if item == "stall":
                    continue
                if not seen.get(item) and complete:
                    res.violations.append(f"{k}: known bug not reproduced: no {item} outcome in "
                                          f"{_describe_parts(parts)}")
            wl = next((p for p in parts if isinstance(p, WorkloadResult)), None)
            if wl is not None and wl.reason != "skipped":
                if e.stall_ms is not None and wl.worst_wait_ms > e.stall_ms:
                    res.violations.append(f"{k}: worst mmap_sem wait {wl.worst_wait_ms:.1f} ms ({wl.worst_wait_where}) "
                                          f"over the bound of {e.stall_ms:g} ms")
                if e.stall_over_ms is not None and "stall" in e.reproduce and complete and \
                        wl.worst_wait_ms <= e.stall_over_ms:
                    res.violations.append(f"{k}: known stall not reproduced: worst wait {wl.worst_wait_ms:.1f} ms, "
                                          f"expected over {e.stall_over_ms:g} ms")
                for err in wl.errors:
                    res.violations.append(f"{k}: workload task failed: {err.splitlines()[0]}")
            for cell in parts:
                if isinstance(cell, CellResult) and cell.broken:
                    res.violations.append(f"{k}: {cell.populator} x {cell.racer} broken: {cell.broken_msg}")


def _seen(part) -> dict[str, int]:
    if isinstance(part, CellResult):
        d = {g: n for g, n in part.outcomes.items() if n}
        d.update(part.kinds)
        return d
    v = part.verdict
    if v is None:
        return {}
    d = {v.outcome: 1}
    for f in v.findings:
        if f.grade != "OK":
            d[f.kind] = d.get(f.kind, 0) + 1
    return d


def _describe_parts(parts) -> str:
    names = []
    for p in parts:
        if isinstance(p, CellResult):
            names.append(f"{p.populator} x {p.racer} ({p.rounds} rounds, {p.window_hits} window hits)")
        else:
            names.append(f"the workload ({p.calls} calls)")
    return ", ".join(names)


def _reports(kernel: str, parts, grade: str) -> list[str]:
    out = []
    for p in parts:
        if isinstance(p, CellResult):
            for r in p.forbidden[:1]:
                if r.outcome == grade:
                    out.append(f"{kernel} {p.populator} x {p.racer}: round seed {r.seed} (replay: mmlab race "
                               f"--kernel {kernel} --populator {p.populator} --racer {p.racer} --round-seed {r.seed})\n"
                               + r.verdict.report())
        elif p.verdict is not None and p.verdict.outcome == grade:
            out.append(f"{kernel} workload:\n" + p.verdict.report())
    return out
