"""The trade-off explorer behind `mmlab tune`: a policy's writer wait against its populate cost.

For every value (or pair of values) of one or two kernel switches, one populator populates one
size beside the victims ``repeats`` times and alone ``repeats`` times (:func:`run_one`,
:func:`run_alone` of :mod:`mmlab.harness.latency`, on the same dilated clock). A point is the
median over the repeats of the writer's worst wait and of the populate's slowdown (populate /
median alone). The reference kernels (v6.18) are measured the same way. A point is on the Pareto
front when no other point of the sweep has both a smaller wait and a smaller slowdown.
"""

from __future__ import annotations

import itertools
import random
import statistics
from dataclasses import dataclass, field
from typing import Callable, Optional

from mmlab.harness.latency import LatencyConfig, RunResult, run_alone, run_one
from mmlab.harness.populators import Populator
from mmlab.kernels import Kernel, get_kernel

__all__ = ["Sweep", "TunePoint", "TuneResult", "parse_sweep", "run_tune"]


@dataclass(frozen=True)
class Sweep:
    switch: str
    values: tuple[object, ...]


def parse_sweep(text: str, base: Kernel) -> Sweep:
    """``populate_batch_pages=64,256,1024`` against *base*'s switches; ValueError names what is wrong."""
    name, eq, vals = text.partition("=")
    name = name.strip()
    if not eq or not vals.strip():
        raise ValueError(f"--sweep takes SWITCH=V1,V2,..., not {text!r}")
    if name not in base.switches():
        raise ValueError(f"unknown switch {name!r}; known: {', '.join(base.switches())}")
    values = []
    for v in vals.split(","):
        k = get_kernel(f"{base.name}+{name}={v.strip()}")  # validates the value's type
        values.append(getattr(k, name))
    if len(values) < 2:
        raise ValueError(f"--sweep {name} needs at least two values")
    return Sweep(name, tuple(values))


@dataclass
class TunePoint:
    kernel: str                       # the spec, e.g. bounded+populate_batch_pages=64
    values: dict[str, object]         # the swept switches' values ({} for a reference)
    reference: bool
    worst_wait_ms: list[float] = field(default_factory=list)  # per repeat
    populate_ms: list[float] = field(default_factory=list)
    alone_ms: list[float] = field(default_factory=list)
    yields: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pareto: bool = False

    @property
    def wait_ms(self) -> Optional[float]:
        return statistics.median(self.worst_wait_ms) if self.worst_wait_ms else None

    @property
    def slowdown(self) -> Optional[float]:
        if not self.populate_ms or not self.alone_ms:
            return None
        a = statistics.median(self.alone_ms)
        return statistics.median(p / a for p in self.populate_ms) if a > 0 else None

    def as_dict(self) -> dict[str, object]:
        return {"kernel": self.kernel, "values": self.values, "reference": self.reference,
                "worst_wait_ms": self.wait_ms, "slowdown": self.slowdown, "pareto": self.pareto,
                "runs": {"worst_wait_ms": self.worst_wait_ms, "populate_ms": self.populate_ms,
                         "alone_ms": self.alone_ms, "yields": self.yields}, "errors": self.errors}


@dataclass
class TuneResult:
    config: LatencyConfig
    size: int
    sweeps: list[Sweep]
    points: list[TunePoint]
    runs: list[RunResult] = field(default_factory=list)  # every run, for the per-run dilations

    def as_dict(self) -> dict[str, object]:
        from mmlab.harness.latency import _time_dict, dilation_range
        c = self.config
        return {"config": {"kernel": c.kernels[0].name, "populator": c.populators[0].name, "size_bytes": self.size,
                           "victims": list(c.victims), "interval_ns": c.interval_ns, "repeats": c.repeats,
                           "time_scale": c.costs.time_scale, "seed": c.seed,
                           "sweeps": [{"switch": s.switch, "values": list(s.values)} for s in self.sweeps]},
                "time": _time_dict(c.dilation), "time_per_run": dilation_range(self.runs),
                "points": [p.as_dict() for p in self.points]}


def _measure(pt: TunePoint, k: Kernel, pop: Populator, size: int, cfg: LatencyConfig, rng: random.Random,
             progress: Optional[Callable[[TunePoint, str], None]], runs: list[RunResult]) -> None:
    dil = cfg.run_dilation()  # one k for the point's alone and beside-the-victims runs
    for _ in range(cfg.repeats):
        a = run_alone(k, pop, size, cfg, rng.randrange(1 << 30), dilation=dil)
        runs.append(a)
        if a.errors or a.reason != "done":
            pt.errors.extend(a.errors or [a.reason])
            continue
        pt.alone_ms.append(a.populate_ms)
    for _ in range(cfg.repeats):
        r: RunResult = run_one(k, pop, size, cfg, rng.randrange(1 << 30), dilation=dil)
        runs.append(r)
        # the worst of every writer: elsewhere, and (with the vma-writer victim) on the populated vma
        ws = [x for x in (r.worst_wait_us("writer"), r.worst_wait_us("vma-mprotect")) if x is not None]
        w = max(ws) if ws else None
        if r.errors or r.reason != "done" or w is None:
            pt.errors.extend(r.errors or [f"{r.reason}: no writer wait recorded"])
            continue
        pt.worst_wait_ms.append(w / 1e3)
        pt.populate_ms.append(r.populate_ms)
        pt.yields.append(r.yields)
        if progress:
            progress(pt, f"populate {r.populate_ms:.1f} ms, writer worst {w / 1e3:.2f} ms, {r.yields} yields")


def _mark_pareto(points: list[TunePoint]) -> None:
    ok = [p for p in points if not p.reference and p.wait_ms is not None and p.slowdown is not None]
    for p in ok:
        p.pareto = not any(q is not p and q.wait_ms <= p.wait_ms and q.slowdown <= p.slowdown  # type: ignore[operator]
                           and (q.wait_ms < p.wait_ms or q.slowdown < p.slowdown)  # type: ignore[operator]
                           for q in ok)


def run_tune(cfg: LatencyConfig, size: int, sweeps: list[Sweep], references: list[Kernel],
             progress: Optional[Callable[[TunePoint, str], None]] = None) -> TuneResult:
    """Every combination of the sweeps' values on ``cfg.kernels[0]``, then each reference."""
    base = cfg.kernels[0]
    pop = cfg.populators[0]
    rng = random.Random(cfg.seed)
    points = []
    runs: list[RunResult] = []
    for combo in itertools.product(*(s.values for s in sweeps)):
        changes = {s.switch: v for s, v in zip(sweeps, combo)}
        k = base.with_switches(**changes)
        pt = TunePoint(k.name, changes, False)
        _measure(pt, k, pop, size, cfg, rng, progress, runs)
        points.append(pt)
    for ref in references:
        pt = TunePoint(ref.name, {}, True)
        _measure(pt, ref, pop, size, cfg, rng, progress, runs)
        points.append(pt)
    _mark_pareto(points)
    return TuneResult(cfg, size, sweeps, points, runs)
