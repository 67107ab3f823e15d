"""Run benchmarks: a warm-up, then measured runs; median, min, max and a verdict per row.

Each benchmark is set up once, stepped once to warm up (caches, allocator, the guest's memory),
then stepped ``runs`` times (at least 5). A row's verdict comes from its median. A spread
``(max - min) / median`` above ``max_spread`` is flagged as too wide to trust, and so is a verdict
that the minimum and maximum disagree on (the goal lies inside the noise).
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Optional

from mmlab.bench.registry import Benchmark, Row

__all__ = ["RowResult", "run_benchmark", "machine_info", "MIN_RUNS", "DEFAULT_MAX_SPREAD"]

MIN_RUNS = 5
DEFAULT_MAX_SPREAD = 0.5


@dataclass
class RowResult:
    benchmark: str
    name: str
    unit: str
    goal: str
    goal_op: Optional[str]
    goal_value: Optional[float]
    status: str  # "ok", "pending", "unavailable", "error"
    median: Optional[float] = None
    min: Optional[float] = None
    max: Optional[float] = None
    runs: int = 0
    met: Optional[bool] = None
    spread: Optional[float] = None
    trusted: Optional[bool] = None
    samples: list[float] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _empty(b: Benchmark, r: Row, status: str, note: str) -> RowResult:
    return RowResult(b.name, r.name, r.unit, str(r.goal) if r.goal else "",
                     r.goal.op if r.goal else None, r.goal.value if r.goal else None, status, note=note)


def run_benchmark(b: Benchmark, *, quick: bool, runs: int = MIN_RUNS, max_spread: float = DEFAULT_MAX_SPREAD,
                  progress: Optional[Callable[[str], None]] = None) -> list[RowResult]:
    """Measure one benchmark; never raises for a benchmark's own failure (status "error")."""
    if b.pending:
        return [_empty(b, r, "pending", b.pending) for r in b.rows]
    why = b.available()
    if why:
        return [_empty(b, r, "unavailable", why) for r in b.rows]
    assert b.setup is not None
    one_shot = b.long and quick
    n = 1 if one_shot else max(runs, MIN_RUNS)
    samples: dict[str, list[float]] = {r.name: [] for r in b.rows}
    notes: list[str] = []
    try:
        run = b.setup(quick)
        notes.extend(run.notes)
        try:
            if not one_shot:
                if progress:
                    progress(f"{b.name}: warm-up")
                run.step()
            for i in range(n):
                if progress:
                    progress(f"{b.name}: run {i + 1}/{n}")
                gc.collect()
                vals = run.step()
                for k, v in vals.items():
                    if k not in samples:
                        raise KeyError(f"{b.name} reported an undeclared row {k!r}")
                    if v is not None:
                        samples[k].append(float(v))
        finally:
            run.close()
    except Exception as e:  # noqa: BLE001 - a broken benchmark is a row, not a crash
        tb = traceback.format_exception_only(type(e), e)[-1].strip()
        return [_empty(b, r, "error", tb) for r in b.rows]
    if one_shot:
        notes.append("--quick: one run, no warm-up; spread unknown")
    out = []
    for r in b.rows:
        s = samples[r.name]
        res = _empty(b, r, "ok", "; ".join(notes))
        if not s:
            res.status = "unavailable"
            res.note = res.note or "no value measured"
            out.append(res)
            continue
        med = statistics.median(s)
        res.median, res.min, res.max, res.runs, res.samples = med, min(s), max(s), len(s), s
        res.spread = (res.max - res.min) / abs(med) if med else 0.0
        res.trusted = len(s) >= MIN_RUNS and res.spread <= max_spread
        wide: list[str] = []
        if len(s) >= MIN_RUNS and res.spread > max_spread:
            wide.append(f"spread {res.spread:.0%}: too wide to trust")
        if r.goal is not None:
            res.met = r.goal.met(med)
            if r.goal.met(res.min) != r.goal.met(res.max):
                res.trusted = False
                wide.append("goal lies within the spread")
        res.note = "; ".join([*wide, *([res.note] if res.note else [])])
        out.append(res)
    return out


def machine_info() -> dict[str, object]:
    """Where the numbers came from."""
    info: dict[str, object] = {
        "uname": " ".join(platform.uname()),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from importlib.metadata import version
        info["readerwriterlock"] = version("readerwriterlock")
        info["sortedcontainers"] = version("sortedcontainers")
    except Exception:  # noqa: BLE001 - informational only
        pass
    return info
