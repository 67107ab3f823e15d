"""Benchmarks of features that land later: controlled mode, PCT, latency, stress and sweeps.

Until a feature is on main its benchmark is registered as pending (listed and reported, never
run). :func:`command_wall` turns an ``mmlab`` command line into a wall-time benchmark, so adding
one of them when its command lands is a single call.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Sequence

from mmlab.bench.registry import Goal, Row, Run, benchmark, pending

__all__ = ["command_wall"]


def command_wall(name: str, title: str, argv: Sequence[str], goal_s: float, quick_argv: Sequence[str] = ()) -> None:
    """Register the wall time of ``python -m mmlab ARGV`` (a fresh interpreter per run)."""

    @benchmark(name, title, rows=[Row(f"{name}.wall", "s", Goal("<=", goal_s), " ".join(["mmlab", *argv]))],
               long=True)
    def _setup(quick: bool) -> Run:
        args = [sys.executable, "-m", "mmlab", *(quick_argv or argv)]

        def step() -> dict[str, float]:
            t0 = time.perf_counter()
            p = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            dt = time.perf_counter() - t0
            if p.returncode not in (0, 1):  # 1 is a finding: the command ran to its end
                raise RuntimeError(f"{' '.join(args[2:])} exited {p.returncode}: {p.stderr.strip()[-300:]}")
            return {f"{name}.wall": dt}

        return Run(step)


pending("controlled", "controlled mode: schedule points per second", [
    Row("controlled.schedule_points", "points/s", Goal(">=", 10_000)),
], "pending: controlled mode (mmlab.sched) not on main")

pending("pct_race", "time to find the v3.9 file populate race with PCT (median of 20 seeds)", [
    Row("pct_race.time_to_find", "s"),
], "pending: PCT exploration not on main")

pending("latency_quick", "`mmlab latency --quick` wall time", [
    Row("latency_quick.wall", "s", Goal("<=", 60)),
], "pending: `mmlab latency` not on main")

pending("stress", "`make stress` wall time (mmlab stress on its embedded defaults)", [
    Row("stress.wall", "s", Goal("<=", 120)),
], "pending: `mmlab stress` not on main")

pending("sweep_scaling", "seed sweep throughput, 1 vs 2 workers", [
    Row("sweep_scaling.seeds_per_s_1", "seeds/s"),
    Row("sweep_scaling.seeds_per_s_2", "seeds/s"),
    Row("sweep_scaling.speedup", "x", Goal(">=", 1.7)),
], "pending: seed sweeps not on main")
