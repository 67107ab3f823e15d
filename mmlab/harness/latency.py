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
"""

from __future__ import annotations

import gc
import random
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional

from mmlab.clock import DEFAULT_COSTS, ZERO_COSTS, Costs
from mmlab.current import set_task_name
from mmlab.harness.populators import Populator, PopState
from mmlab.harness.tasks import GroupResult, LockSpan, OpStats, Step, Task, TaskGroup
from mmlab.harness.verdict import Verdict, judge
from mmlab.harness.victims import make_victims
from mmlab.harness.watchdog import Watchdog
from mmlab.kernels import Kernel
from mmlab.mm.mm_struct import MM

__all__ = ["LatencyConfig", "RunResult", "LatencyResult", "run_one", "run_noise_floor", "run_latency",
           "populator_available", "VICTIM_OPS", "VERDICT_OPS"]

VICTIM_OPS = ("fault", "mmap", "mprotect", "munmap")
DEFAULT_INTERVAL_NS = 250_000
# Verdicts are per victim: the reader's faults, and the writer's write-lock calls taken together
# (a populate catches the writer in whichever of its calls it is in at the time).
VERDICT_OPS = ("fault", "writer")
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

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"kernel": self.kernel, "populator": self.populator,
                                "size_bytes": self.size_bytes, "populate_ms": self.populate_ms,
                                "populate_hold_ms": self.populate_hold_ms, "victim": self.victim}
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

    def as_dict(self) -> dict[str, object]:
        c = self.config
        return {
            "config": {"kernels": [k.name for k in c.kernels], "populators": [p.name for p in c.populators],
                       "sizes": c.sizes, "time_scale": c.costs.time_scale, "seed": c.seed,
                       "victims": list(c.victims), "interval_ns": c.interval_ns, "rounds": c.rounds,
                       "repeats": c.repeats,
                       "stall_ms": c.stall_ms},
            "runs": [r.as_dict() for r in self.runs],
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
        return any(r.reason == "hang" for r in self.runs + self.noise)

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.runs + self.noise if r.errors]


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
            seed: int, duration_s: Optional[float] = None, timeline: bool = False) -> RunResult:
    """One run on a fresh MM: victims start, then (once they run) the populator populates
    *size* bytes ``cfg.rounds`` times; without a populator, the victims run ``duration_s``."""
    mm = MM(kernel, cfg.costs)
    rng = random.Random(seed)
    set_task_name("mmlab-main")
    st: Optional[PopState] = None
    if populator is not None:
        st = populator.setup(mm, size)
    victims = make_victims(list(cfg.victims), seed=rng.randrange(1 << 30), interval_ns=cfg.interval_ns)
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
    group = TaskGroup(mm, tasks, duration_s=duration_s, watchdog=wd, timeline=timeline,
                      timeout_s=max(60.0, cfg.hang_ms / 1e3 + 10))
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
                       reason=res.reason, hang=res.hang_report, spans=spans, elapsed_ms=res.elapsed_ns / 1e6)
    if cfg.on_run is not None:
        cfg.on_run(result, mm)
    return result


def _resetup(p: Populator, mm: MM, st: PopState, size: int) -> None:
    new = p.setup(mm, size)
    st.addr, st.length, st.file, st.extra = new.addr, new.length, new.file, new.extra


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
    total = len(cfg.kernels) * (1 + len(pops) * len(cfg.sizes) * cfg.repeats)
    done = 0
    rng = random.Random(cfg.seed)
    runs: list[RunResult] = []
    noise: list[RunResult] = []
    verdicts: list[Verdict] = []
    for k in cfg.kernels:
        nf = run_noise_floor(k, cfg, rng.randrange(1 << 30))
        noise.append(nf)
        done += 1
        if progress:
            progress("noise floor", nf, done, total)
        for p in pops:
            mine: list[RunResult] = []
            hung = False
            for size in sorted(cfg.sizes):
                for rep in range(cfg.repeats):
                    tl = rep == 0 and cfg.timeline_for == (k.name, p.name, size)
                    r = run_one(k, p, size, cfg, rng.randrange(1 << 30), timeline=tl)
                    r.repeat = rep
                    mine.append(r)
                    runs.append(r)
                    done += 1
                    if progress:
                        progress("run", r, done, total)
                    if r.reason == "hang":
                        hung = True
                        break
                if hung:
                    break
            verdicts.extend(_judge_all(k.name, p.name, mine, nf))
    return LatencyResult(cfg, runs, noise, verdicts, skipped)


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
