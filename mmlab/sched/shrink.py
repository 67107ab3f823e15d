"""Shrinking a failing schedule: cut context switches while the same outcome still occurs.

A recorded execution is turned into its *switches* (:func:`mmlab.sched.replay.switches_of`):
the steps where the choice was not "the running task goes on". Each switch is keyed by the task
that was running and how many schedule points it had passed, so dropping one leaves the rest
meaningful. The shrinker runs the scenario under :class:`GuidedScheduler` with a candidate set
of switches and keeps the candidate if the outcome has the same verdict and the same kind of
failure (Lockstep keeps a candidate only if strict replay hits the same bug category):

1. drop every switch after the last one still needed, by halving (truncation);
2. drop switches one at a time, earliest first;
3. repeat until nothing more can be dropped (a fixed point) or the run budget is spent.

Fewer switches means fewer preemptions and fewer steps in the printed interleaving; the result is
a recorded execution, replayable exactly like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from mmlab.sched.controller import Controller, Execution, TaskThreads
from mmlab.sched.scheduler import Scheduler
from mmlab.sched.replay import GuidedScheduler, SwitchKey, switches_of
from mmlab.sched.scenario import Outcome, Scenario

__all__ = ["shrink", "Shrunk", "run_once"]


@dataclass
class Shrunk:
    execution: Execution
    outcome: Outcome
    runs: int
    switches_before: int
    switches_after: int


def run_once(scenario: Scenario, scheduler: Scheduler, max_steps: int = 20_000,
             threads: Optional[TaskThreads] = None) -> tuple[Execution, Outcome]:
    """One execution of *scenario* under *scheduler* (new_execution() already called)."""
    mm, tasks = scenario.build()
    ex = Controller(scheduler, mm.clock, [mm.mmap_sem], max_steps=max_steps).run(tasks, threads)
    return ex, scenario.judge(mm, ex)


def shrink(scenario: Scenario, ex: Execution, outcome: Outcome, budget: int = 300,
           max_steps: int = 20_000, progress: Optional[Callable[[int], None]] = None,
           threads: Optional[TaskThreads] = None) -> Shrunk:
    key = outcome.key
    runs = 0
    best = list(switches_of(ex.choices, ex.masks, ex.currents).items())
    before = len(best)
    best_ex, best_out = ex, outcome

    def attempt(cand: list[tuple[SwitchKey, int]]) -> bool:
        nonlocal runs, best, best_ex, best_out
        runs += 1
        if progress is not None:
            progress(runs)
        g = GuidedScheduler(dict(cand), ex.u64s)
        g.new_execution()
        e, o = run_once(scenario, g, max_steps, threads)
        if o.key != key:
            return False
        best = list(switches_of(e.choices, e.masks, e.currents).items())  # some may now be moot
        best_ex, best_out = e, o
        return True

    # the guided form of the recording must fail the same way (it repeats it step for step)
    if not attempt(best):
        return Shrunk(ex, outcome, runs, before, before)
    changed = True
    while changed and runs < budget:
        changed = False
        # 1. truncation: keep only a prefix of the switches, as short as still fails
        n = len(best)
        cut = n // 2
        while cut and runs < budget:
            if attempt(best[:len(best) - cut]):
                changed = True
                cut = min(cut, len(best) // 2)
            else:
                cut //= 2
        # 2. one at a time
        i = 0
        while i < len(best) and runs < budget:
            if attempt(best[:i] + best[i + 1:]):
                changed = True
            else:
                i += 1
    return Shrunk(best_ex, best_out, runs, before, len(best))
