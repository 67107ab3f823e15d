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

from mmlab.bench.registry import Goal, Row, Run, benchmark

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


@benchmark("controlled", "controlled mode: schedule points per second (v3.9 populate-anon vs munmap-mmap, PCT)", rows=[
    Row("controlled.schedule_points", "points/s", Goal(">=", 10_000),
        "inside controlled runs: the model's task threads, one at a time, with every handoff"),
    Row("controlled.exploration", "points/s", None,
        "explore()'s own wall time: also building each model and the oracle (not the scheduler's set-up)"),
    Row("controlled.end_to_end", "points/s", None,
        "schedule points / wall time of the whole explore() call as a user runs it, timed from outside"),
    Row("controlled.machinery", "points/s", None,
        "two tasks that only pass schedule points, random walk (a handoff at every other point)"),
])
def _controlled(quick: bool) -> Run:
    from mmlab.clock import VirtualClock, hooks
    from mmlab.sched import Controller, RaceScenario, RandomScheduler, TaskThreads, explore
    sc = RaceScenario("v3.9", "populate-anon", "munmap-mmap")
    n = 200 if quick else 1000

    def bare() -> None:
        for _ in range(n):
            hooks.schedule_point("spend", "bench")  # type: ignore[misc]

    def step() -> dict[str, float]:
        t0 = time.perf_counter()
        r = explore(sc, "pct", n, 1, stop_on_failure=False, do_shrink=False, reproduce=0)
        end_to_end = r.points / (time.perf_counter() - t0)
        s = RandomScheduler(1)
        s.new_execution()
        with TaskThreads() as th:
            ex = Controller(s, VirtualClock()).run([("a", bare), ("b", bare)], th)
        return {"controlled.schedule_points": r.points / r.run_s, "controlled.exploration": r.points_per_s,
                "controlled.end_to_end": end_to_end, "controlled.machinery": ex.points / ex.wall_s}

    return Run(step)


@benchmark("pct_race", "time to find the v3.9 file populate race with PCT (median of 20 seeds)", rows=[
    Row("pct_race.time_to_find", "s", None, "wall time to the first FORBIDDEN, no shrinking or replay"),
    Row("pct_race.executions", "executions", Goal("<=", 200), "PCT executions to the first FORBIDDEN"),
])
def _pct_race(quick: bool) -> Run:
    import statistics

    from mmlab.sched import RaceScenario, explore
    sc = RaceScenario("v3.9", "populate-file", "munmap-mmap")
    seeds = range(1, 6 if quick else 21)

    def step() -> dict[str, float]:
        times, execs = [], []
        for s in seeds:
            t0 = time.perf_counter()
            r = explore(sc, "pct", 2000, s, do_shrink=False, reproduce=0)
            times.append(time.perf_counter() - t0)
            execs.append(r.first_failure_at or 2001)
        return {"pct_race.time_to_find": statistics.median(times), "pct_race.executions": statistics.median(execs)}

    return Run(step)

command_wall("latency_quick", "`mmlab latency --quick` wall time", ["latency", "--quick"], 60)
command_wall("stress", "`make stress` wall time (`mmlab stress`: the suites on their embedded defaults)", ["stress"], 120)

# 16 MiB rounds: a realistic race item (mmlab race defaults to 32 MiB); 1 MiB items were mostly
# pytest and xdist overhead, which measures start-up rather than sweep throughput.
SWEEP = ["sweep", "--populator", "populate-file", "--racer", "munmap-mmap", "--size", "16M"]


@benchmark("sweep_scaling", "seed sweep throughput, 1 vs 2 workers (`mmlab sweep` of a race triple)", rows=[
    Row("sweep_scaling.seeds_per_s_1", "seeds/s", None, "mmlab sweep --workers 1, whole command"),
    Row("sweep_scaling.seeds_per_s_2", "seeds/s", None, "mmlab sweep --workers 2, whole command"),
    Row("sweep_scaling.speedup", "x", Goal(">=", 1.7), "2 workers / 1 worker, same run"),
], long=True)
def _sweep_scaling(quick: bool) -> Run:
    seeds = 240 if quick else 480  # enough work that worker start-up is not all it measures

    def wall(workers: int) -> float:
        args = [sys.executable, "-m", "mmlab", *SWEEP, "--seeds", str(seeds), "--workers", str(workers)]
        t0 = time.perf_counter()
        p = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        dt = time.perf_counter() - t0
        if p.returncode not in (0, 1):
            raise RuntimeError(f"{' '.join(args[2:])} exited {p.returncode}: {p.stderr.strip()[-300:]}")
        return dt

    def step() -> dict[str, float]:
        t1, t2 = wall(1), wall(2)
        return {"sweep_scaling.seeds_per_s_1": seeds / t1, "sweep_scaling.seeds_per_s_2": seeds / t2,
                "sweep_scaling.speedup": t1 / t2}

    return Run(step)
