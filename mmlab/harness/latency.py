"""The latency scenario: one populator thread beside the victim threads, per kernel and size.

This is Andy Lutomirski's report (Dec 2012) as an experiment: while one thread of a process
populates a large range (MAP_POPULATE, MAP_LOCKED, mlockall(MCL_FUTURE), brk, mremap,
remap_file_pages), how long do the process's other threads -- a faulting reader and an
mmap/mprotect/munmap writer -- wait for mmap_sem? :func:`run_one` runs one kernel, populator and
size on a fresh MM; :func:`run_noise_floor` runs the victims alone; :func:`run_latency` runs the
whole matrix and hands each (kernel, populator, victim op) to :func:`mmlab.harness.verdict.judge`.

Waits are the model's own lock-record waits (exact; ``acq_ns - req_ns`` of each mmap_sem
acquisition), so verdicts do not depend on a stopwatch around Python code; wall-clock totals are
kept beside them.

The populating thread's own cost: every (kernel, populator, size) also runs the populate alone
(no victims, same kernel and size; :func:`run_alone`), and each run carries ``alone_ms`` and
``slowdown`` = populate_ms / alone_ms -- what yielding to the victims costs the populate.

Time: with ``LatencyConfig.dilation`` every run's MM gets a dilated RealClock (see
:mod:`mmlab.harness.dilation`), so the interpreter's per-call time counts only 1/k in the waits
and populate times; the residual is in the result.
"""

from __future__ import annotations

import dataclasses
import gc
import random
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional

import statistics

from mmlab.clock import DEFAULT_COSTS, ZERO_COSTS, Costs, RealClock
from mmlab.current import set_task_name
from mmlab.harness.dilation import Dilation
from mmlab.harness.populators import Populator, PopState
from mmlab.harness.tasks import GroupResult, LockSpan, OpStats, Step, Task, TaskGroup
from mmlab.harness.verdict import Verdict, judge
from mmlab.harness.victims import make_victims
from mmlab.harness.watchdog import Watchdog
from mmlab.kernels import Kernel
from mmlab.mm.mm_struct import MM

__all__ = ["LatencyConfig", "RunResult", "LatencyResult", "PolicyCost", "run_one", "run_alone", "dilation_text",
           "run_noise_floor", "run_latency", "populator_available", "policy_costs", "VICTIM_OPS",
           "VERDICT_OPS"]

VICTIM_OPS = ("fault", "mmap", "mprotect", "munmap")
DEFAULT_INTERVAL_NS = 250_000
# Verdicts are per victim: the reader's faults, and the writer's write-lock calls taken together
# (a populate catches the writer in whichever of its calls it is in at the time).
VERDICT_OPS = ("fault", "writer", "vma-mprotect")  # the last only with the vma-writer victim
WRITER_OPS = ("mmap", "mprotect", "munmap")


@dataclass
class LatencyConfig:
    kernels: list[Kernel]
    populators: list[Populator]
    sizes: list[int]
    costs: Costs = DEFAULT_COSTS
    victims: tuple[str, ...] = ("fault", "writer")
    stall_ms: float = 100.0
    hang_ms: float = 30_000.0
    seed: int = 0
    # Victims run open loop at this interval (coordinated-omission corrected); None: closed loop.
    # A closed-loop Python victim holds the GIL nearly all the time, which the kernel's victims
    # (3-4 us per op in C) never do; it raises the noise floor and slows the populator.
    interval_ns: Optional[int] = DEFAULT_INTERVAL_NS
    rounds: int = 1                     # populate calls per run (worst wait over all of them)
    repeats: int = 1                    # runs per size on fresh MMs; verdicts use the smallest worst
    noise_s: float = 0.25               # length of the noise-floor run
    timeline_for: Optional[tuple[str, str, int]] = None  # (kernel, populator, size) to keep spans of
    watchdog_out: Optional[Callable[[str], None]] = None
    # Called with each finished run and its MM (e.g. to write its lock and call records out).
    on_run: Optional[Callable[["RunResult", MM], None]] = None
    dilation: Optional[Dilation] = None  # None: an undilated clock (interpreter time counts in full)
    alone_repeats: Optional[int] = None  # populate-alone runs per size (default: repeats)

    def run_dilation(self) -> Optional[Dilation]:
        """The dilation of the next run: an automatic one measured again now."""
        return self.dilation.recalibrated() if self.dilation is not None else None


@dataclass
class RunResult:
    kernel: str
    populator: str            # "" for the noise floor
    size_bytes: int
    populate_ms: float        # wall time of the populating call(s), worst round
    populate_hold_ms: float   # its mmap_sem hold time (sum over its acquisitions), worst round
    victim: dict[str, dict[str, object]]
    stalls: list[dict[str, object]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reason: str = "done"
    hang: Optional[dict[str, object]] = None
    spans: list[LockSpan] = field(default_factory=list)
    elapsed_ms: float = 0.0
    repeat: int = 0
    alone_ms: Optional[float] = None  # the same populate with no victims (median of its runs)
    yields: int = 0                   # times the populate dropped the lock for a waiter (worst round)
    dilation: Optional[Dilation] = None  # this run's clock (k, residuals)

    @property
    def slowdown(self) -> Optional[float]:
        """populate_ms / alone_ms: what the victims cost the populating thread."""
        if self.alone_ms is None or self.alone_ms <= 0 or not self.populator:
            return None
        return self.populate_ms / self.alone_ms

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"kernel": self.kernel, "populator": self.populator,
                                "size_bytes": self.size_bytes, "populate_ms": self.populate_ms,
                                "populate_hold_ms": self.populate_hold_ms, "victim": self.victim}
        if self.populator:
            d.update(alone_ms=self.alone_ms, slowdown=self.slowdown, yields=self.yields)
        d["time"] = _time_dict(self.dilation)
        if self.stalls:
            d["stalls"] = self.stalls
        if self.errors:
            d["errors"] = self.errors
        if self.reason != "done":
            d["reason"] = self.reason
        if self.repeat:
            d["repeat"] = self.repeat
        return d

    def worst_wait_us(self, op: str) -> Optional[float]:
        s = self.victim.get(op)
        return float(s["max_us"]) if s and s.get("count") else None  # type: ignore[arg-type]


@dataclass
class LatencyResult:
    config: LatencyConfig
    runs: list[RunResult]
    noise: list[RunResult]
    verdicts: list[Verdict]
    skipped: dict[str, str]
    alone: list[RunResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        c = self.config
        return {
            "config": {"kernels": [k.name for k in c.kernels], "populators": [p.name for p in c.populators],
                       "sizes": c.sizes, "time_scale": c.costs.time_scale, "seed": c.seed,
                       "victims": list(c.victims), "interval_ns": c.interval_ns, "rounds": c.rounds,
                       "repeats": c.repeats,
                       "stall_ms": c.stall_ms},
            "time": _time_dict(c.dilation),
            "time_per_run": dilation_range(self.runs + self.noise + self.alone),
            "runs": [r.as_dict() for r in self.runs],
            "alone": [{"kernel": r.kernel, "populator": r.populator, "size_bytes": r.size_bytes,
                       "populate_ms": r.populate_ms, "repeat": r.repeat} for r in self.alone],
            "policies": [p.as_dict() for p in policy_costs(self)],
            "noise_floor": [r.as_dict() for r in self.noise],
            "verdicts": [{"kernel": v.kernel, "populator": v.populator, "op": v.op, "growth": v.growth,
                          "bounded": v.bounded, "slope": v.slope, "share": v.share, "worst_us": v.worst_us,
                          "sizes": v.sizes, "floor_us": v.floor_us, "noise_p99_us": v.noise_p99_us,
                          "noise_max_us": v.noise_max_us,
                          "why": v.why} for v in self.verdicts],
            "skipped": self.skipped,
            "hangs": [r.hang for r in self.runs + self.noise if r.hang],
        }

    @property
    def hung(self) -> bool:
        return any(r.reason == "hang" for r in self.runs + self.noise + self.alone)

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.runs + self.noise + self.alone if r.errors]


def dilation_range(runs: list["RunResult"]) -> dict[str, object]:
    """k and the residuals over a report's runs (an automatic k is measured before each)."""
    ds = [r.dilation for r in runs if r.dilation is not None]
    if not ds:
        return {"k_min": 1.0, "k_max": 1.0, "residual_ns_max": None, "handoff_residual_ns_max": None}
    return {"k_min": min(d.k for d in ds), "k_median": statistics.median(d.k for d in ds),
            "k_max": max(d.k for d in ds), "residual_ns_max": max(d.residual_ns for d in ds),
            "handoff_residual_ns_max": max(d.handoff_residual_ns for d in ds)}


def dilation_text(runs: list["RunResult"]) -> str:
    d = dilation_range(runs)
    if d["residual_ns_max"] is None:
        return "undilated: the interpreter's time counts in full as modelled time"
    return (f"per run: dilation k {d['k_min']:.1f}-{d['k_max']:.1f} (median {d['k_median']:.1f}); residual at "
            f"most {d['residual_ns_max'] / 1e3:.2f} us of modelled time per call, "  # type: ignore[operator]
            f"a thread hand-off at most {d['handoff_residual_ns_max'] / 1e3:.2f} us")  # type: ignore[operator]


def _time_dict(d: Optional[Dilation]) -> dict[str, object]:
    if d is None:
        return {"dilation": 1.0, "residual_ns": None,
                "note": "undilated: the interpreter's time per call counts in full as modelled time"}
    return d.as_dict()


@dataclass
class PolicyCost:
    """One kernel and populator at its largest size: the writer's bound and the populate's price.

    ``text`` is the verdict line: "writer bounded (<= x ms), populate y x slower"."""

    kernel: str
    populator: str
    size_bytes: int
    writer_bounded: Optional[bool]
    writer_worst_ms: Optional[float]   # worst wait over every size (smallest over repeats)
    slowdown: Optional[float]          # at the largest size, median over repeats
    populate_ms: Optional[float]
    alone_ms: Optional[float]
    vma_bounded: Optional[bool] = None    # the vma-writer victim (a writer on the populated vma), if run
    vma_worst_ms: Optional[float] = None

    @property
    def text(self) -> str:
        if self.writer_bounded is None:
            w = "writer ?"
        elif self.writer_bounded:
            w = f"writer bounded (\u2264 {self.writer_worst_ms:.2f} ms)"
        else:
            w = f"writer UNBOUNDED (waits {self.writer_worst_ms:.2f} ms, growing with the size)"
        if self.vma_bounded is not None:
            w += (f", writer on its vma bounded (\u2264 {self.vma_worst_ms:.2f} ms)" if self.vma_bounded
                  else f", writer on its vma UNBOUNDED (waits {self.vma_worst_ms:.2f} ms)")
        if self.slowdown is None:
            sl = "populate slowdown ?"
        elif self.slowdown < 0.95:  # faster beside the victims than alone: say so, not "0.5x slower"
            sl = f"populate {self.slowdown:.2f}\u00d7 its time alone"
        else:
            sl = f"populate {self.slowdown:.2f}\u00d7 slower"
        return f"{w}, {sl}"

    def as_dict(self) -> dict[str, object]:
        d = dataclasses.asdict(self)
        d["text"] = self.text
        return d


def median_slowdown(runs: list[RunResult]) -> Optional[float]:
    xs = [r.slowdown for r in runs if r.slowdown is not None]
    return statistics.median(xs) if xs else None


def policy_costs(res: "LatencyResult") -> list[PolicyCost]:
    """Per (kernel, populator): the writer verdict and the slowdown at the largest size run."""
    out = []
    verd = {(v.kernel, v.populator, v.op): v for v in res.verdicts}
    keys = list(dict.fromkeys((r.kernel, r.populator) for r in res.runs))
    for kname, pname in keys:
        mine = [r for r in res.runs if r.kernel == kname and r.populator == pname
                and r.reason == "done" and not r.errors]
        if not mine:
            continue
        size = max(r.size_bytes for r in mine)
        top = [r for r in mine if r.size_bytes == size]
        v = verd.get((kname, pname, "writer"))
        worst = max(v.worst_us) / 1e3 if v is not None else None
        pops = [r.populate_ms for r in top]
        alone = next((r.alone_ms for r in top if r.alone_ms is not None), None)
        vv = verd.get((kname, pname, "vma-mprotect"))
        out.append(PolicyCost(kname, pname, size, v.bounded if v is not None else None, worst,
                              median_slowdown(top), statistics.median(pops), alone,
                              vv.bounded if vv is not None else None,
                              max(vv.worst_us) / 1e3 if vv is not None else None))
    return out


def populator_available(p: Populator) -> Optional[str]:
    """None if *p* runs in this model; else why not (a syscall not modelled yet)."""
    mm = MM("v6.18", ZERO_COSTS)
    try:
        st = p.setup(mm, 1 << 20)
        p.populate(mm, st)
        p.teardown(mm, st)
    except (ImportError, NotImplementedError) as e:
        return f"not modelled yet: {e}"
    return None


def _victim_summary(tasks: list[Task]) -> dict[str, dict[str, object]]:
    """op -> summary for every op of every victim, plus ``writer``: the writer task's
    write-lock calls merged (HDR ``add``)."""
    out: dict[str, dict[str, object]] = {}
    for t in tasks:
        merged: Optional[OpStats] = None
        for op, s in t.stats.items():
            out[op] = s.summary()
            if op in WRITER_OPS:
                if merged is None:
                    merged = OpStats("writer")
                merged.merge(s)
        if merged is not None:
            out["writer"] = merged.summary()
    return out


def _prepare_process() -> float:
    """The interpreter as the real-kernel measurements ran it (switch interval 0.5 ms), and no
    cyclic-GC pass during the run: a full collection over the model's histories stops every
    thread for 10-25 ms, which is interpreter noise, not the lock."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    gc.collect()
    gc.freeze()
    gc.disable()
    return old


def _restore_process(old_switchinterval: float) -> None:
    gc.enable()
    gc.unfreeze()
    sys.setswitchinterval(old_switchinterval)


def run_one(kernel: Kernel, populator: Optional[Populator], size: int, cfg: LatencyConfig,
            seed: int, duration_s: Optional[float] = None, timeline: bool = False,
            victims_on: bool = True, dilation: Optional[Dilation] = None) -> RunResult:
    """One run on a fresh MM: victims start, then (once they run) the populator populates
    *size* bytes ``cfg.rounds`` times; without a populator, the victims run ``duration_s`` of
    clock time; without victims (*victims_on* False) the populate runs alone. *dilation*: this
    run's clock (default: ``cfg.run_dilation()``, measured now)."""
    dil = dilation if dilation is not None else cfg.run_dilation()
    k = dil.k if dil is not None else 1.0
    # dilated runs keep a sleep's overshoot as credit past a lock release (RealClock.carry_credit):
    # a populate that yields then pays its oversleeping once, as it does alone
    mm = MM(kernel, cfg.costs, RealClock(dilation=k, carry_credit=dil is not None))
    rng = random.Random(seed)
    set_task_name("mmlab-main")
    st: Optional[PopState] = None
    if populator is not None:
        st = populator.setup(mm, size)
    victims = make_victims(list(cfg.victims), seed=rng.randrange(1 << 30), interval_ns=cfg.interval_ns) \
        if victims_on else []
    tasks = list(victims)
    pop_task: Optional[Task] = None
    if populator is not None and st is not None:
        state = st

        def lead_in(mm_: MM) -> None:
            for v in victims:
                ev = v.user.get("ready")
                if ev is not None:
                    ev.wait(5.0)  # type: ignore[union-attr]

        steps = [Step("lead-in", lead_in, timed=False)]
        for r in range(cfg.rounds):
            if r:
                steps.append(Step("teardown", lambda mm_: populator.teardown(mm_, state), timed=False))
                steps.append(Step("setup", lambda mm_: _resetup(populator, mm_, state, size), timed=False))
            steps.append(Step("populate", lambda mm_: populator.populate(mm_, state)))
        pop_task = Task("populator", steps)
        tasks.append(pop_task)
    wd = Watchdog(mm, stall_ms=cfg.stall_ms, hang_ms=cfg.hang_ms, out=cfg.watchdog_out)
    group = TaskGroup(mm, tasks, duration_s=duration_s * k if duration_s is not None else None,
                      watchdog=wd, timeline=timeline, timeout_s=max(60.0, cfg.hang_ms / 1e3 + 10) * k)
    old_si = _prepare_process()
    try:
        res: GroupResult = group.run()
    finally:
        _restore_process(old_si)
    if populator is not None and st is not None and res.reason != "hang":
        try:
            populator.teardown(mm, st)
        except OSError:
            pass
    pop_ms = hold_ms = 0.0
    if pop_task is not None and "populate" in pop_task.stats:
        s = pop_task.stats["populate"]
        pop_ms = s.max_total_ns / 1e6
        hold_ms = s.max_hold_ns / 1e6
    yields = max((c.yields for c in mm.call_history if c.task == "populator" and c.populates), default=0)
    spans: list[LockSpan] = []
    if timeline:
        for t in tasks:
            spans.extend(t.spans or [])
        t0 = group.t_start_ns
        spans = [LockSpan(x.task, x.op, x.mode, x.how, x.req_ns - t0, x.acq_ns - t0, x.rel_ns - t0)
                 for x in spans]
    result = RunResult(kernel.name, populator.name if populator else "", size if populator else 0,
                       pop_ms, hold_ms, _victim_summary(victims), stalls=res.stalls,
                       errors=[str(e) for e in res.errors] + ([f"tasks did not stop: {res.hung}"] if res.hung else []),
                       reason=res.reason, hang=res.hang_report, spans=spans, elapsed_ms=res.elapsed_ns / 1e6,
                       yields=yields, dilation=dil)
    if cfg.on_run is not None:
        cfg.on_run(result, mm)
    return result


def _resetup(p: Populator, mm: MM, st: PopState, size: int) -> None:
    new = p.setup(mm, size)
    st.addr, st.length, st.file, st.extra = new.addr, new.length, new.file, new.extra


def run_alone(kernel: Kernel, populator: Populator, size: int, cfg: LatencyConfig, seed: int,
              dilation: Optional[Dilation] = None) -> RunResult:
    """The populate with nobody beside it: the baseline of its slowdown. Give it the *dilation*
    of the runs it is the baseline of: the populate's own interpreter time per page (a file
    populate's page-cache walk) is divided by k, so a different k would be a different baseline."""
    return run_one(kernel, populator, size, cfg, seed, victims_on=False, dilation=dilation)


def run_noise_floor(kernel: Kernel, cfg: LatencyConfig, seed: int) -> RunResult:
    """The victims alone: what the interpreter and the lock cost with nobody populating."""
    return run_one(kernel, None, 0, cfg, seed, duration_s=cfg.noise_s)


def run_latency(cfg: LatencyConfig, progress: Optional[Callable[[str, RunResult, int, int], None]] = None
                ) -> LatencyResult:
    """Every kernel x populator x size, plus a noise floor per kernel, then the verdicts."""
    if len(cfg.sizes) < 2:
        raise ValueError("verdicts need at least two sizes")
    skipped: dict[str, str] = {}
    pops = []
    for p in cfg.populators:
        why = populator_available(p)
        if why is None:
            pops.append(p)
        else:
            skipped[p.name] = why
    n_alone = cfg.alone_repeats if cfg.alone_repeats is not None else cfg.repeats
    total = len(cfg.kernels) * (1 + len(pops) * len(cfg.sizes) * (cfg.repeats + n_alone))
    done = 0
    rng = random.Random(cfg.seed)
    runs: list[RunResult] = []
    noise: list[RunResult] = []
    alone: list[RunResult] = []
    verdicts: list[Verdict] = []
    def ran(kind: str, r: RunResult) -> bool:
        """Count *r* for the progress line; True when it hung (the populator's runs stop)."""
        nonlocal done
        done += 1
        if progress:
            progress(kind, r, done, total)
        return r.reason == "hang"

    for k in cfg.kernels:
        nf = run_noise_floor(k, cfg, rng.randrange(1 << 30))
        noise.append(nf)
        ran("noise floor", nf)
        for p in pops:
            mine: list[RunResult] = []
            hung = False
            for size in sorted(cfg.sizes):
                dil = cfg.run_dilation()  # one k for a size's alone and beside-the-victims runs
                base: list[RunResult] = []
                for rep in range(n_alone):
                    a = run_alone(k, p, size, cfg, rng.randrange(1 << 30), dilation=dil)
                    a.repeat = rep
                    base.append(a)
                    alone.append(a)
                    if ran("alone", a):
                        hung = True
                        break
                if hung:
                    break
                ok_base = [a.populate_ms for a in base if a.reason == "done" and not a.errors]
                alone_ms = statistics.median(ok_base) if ok_base else None
                for rep in range(cfg.repeats):
                    tl = rep == 0 and cfg.timeline_for == (k.name, p.name, size)
                    r = run_one(k, p, size, cfg, rng.randrange(1 << 30), timeline=tl, dilation=dil)
                    r.repeat = rep
                    r.alone_ms = alone_ms
                    mine.append(r)
                    runs.append(r)
                    if ran("run", r):
                        hung = True
                        break
                if hung:
                    break
            verdicts.extend(_judge_all(k.name, p.name, mine, nf))
    return LatencyResult(cfg, runs, noise, verdicts, skipped, alone)


def _judge_all(kernel: str, populator: str, runs: list[RunResult], nf: RunResult) -> list[Verdict]:
    out = []
    ok = [r for r in runs if r.reason in ("done",) and not r.errors]
    if len({r.size_bytes for r in ok}) < 2:
        return out
    for op in VERDICT_OPS:
        by_size: dict[int, list[RunResult]] = {}
        for r in ok:
            by_size.setdefault(r.size_bytes, []).append(r)
        pts = []
        for size in sorted(by_size):
            rs = by_size[size]
            ws = [r.worst_wait_us(op) for r in rs]
            if any(w is None for w in ws):
                break
            i = min(range(len(rs)), key=lambda j: ws[j])  # type: ignore[arg-type, return-value]
            pts.append((size, ws[i], rs[i].populate_ms * 1e3))
        if len(pts) < 2 or len(pts) != len(by_size):
            continue
        ns = nf.victim.get(op) or {}
        out.append(judge(kernel, populator, op, [s for s, _, _ in pts], [w for _, w, _ in pts],  # type: ignore[misc]
                         [p for _, _, p in pts], float(ns.get("p50_us", 0.0)),  # type: ignore[arg-type]
                         float(ns.get("p99_us", 0.0)), float(ns.get("max_us", 0.0))))  # type: ignore[arg-type]
    return out
