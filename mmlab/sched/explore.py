"""Exploration: run a scenario under a strategy many times; on a failure, shrink it, make a
replay token and check that the token reproduces it.

:func:`explore` is what ``mmlab explore`` runs for each scenario; :func:`replay_token` is
``mmlab replay``. Both work on any :class:`~mmlab.sched.scenario.Scenario`.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from mmlab.sched.controller import DIVERGED, DONE, Execution, TaskThreads
from mmlab.sched.dfs import DfsScheduler
from mmlab.sched.pct import PctScheduler
from mmlab.sched.random_walk import RandomScheduler
from mmlab.sched.replay import ReplayScheduler
from mmlab.sched.scenario import Outcome, Scenario, scenario_from_spec
from mmlab.sched.scheduler import Divergence, Scheduler
from mmlab.sched.shrink import Shrunk, run_once, shrink
from mmlab.sched.token import decode_token, encode_token
from mmlab.sched.trace import fingerprint

__all__ = ["STRATEGIES", "make_scheduler", "explore", "matches", "never_violated", "ExploreResult", "Finding", "replay_token",
           "ReplayResult", "token_for"]

STRATEGIES = ("pct", "random", "dfs")


def make_scheduler(strategy: str, seed: int, depth: int = 2, max_preemptions: int = 2) -> Scheduler:
    if strategy == "pct":
        return PctScheduler(seed, depth)
    if strategy == "random":
        return RandomScheduler(seed)
    if strategy == "dfs":
        return DfsScheduler(max_preemptions, seed)
    raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")


@dataclass
class Finding:
    """The first failure of an exploration, shrunk, tokenized and replayed."""

    iteration: int
    execution: Execution
    outcome: Outcome
    shrunk: Optional[Shrunk] = None
    token: str = ""
    replays: int = 0
    reproduced: int = 0
    replay_problems: list[str] = field(default_factory=list)

    @property
    def shown(self) -> Execution:
        return self.shrunk.execution if self.shrunk is not None else self.execution


@dataclass
class ExploreResult:
    scenario: Scenario
    strategy: str
    seed: int
    params: dict[str, Any]
    executions: int = 0
    counts: collections.Counter = field(default_factory=collections.Counter)
    points: int = 0
    steps: int = 0
    max_decisions: int = 0
    max_tasks: int = 0
    wall_s: float = 0.0
    run_s: float = 0.0  # wall time inside the controller (schedule points and handoffs)
    exhausted: bool = False
    finding: Optional[Finding] = None
    first_failure_at: Optional[int] = None
    wanted: tuple[str, ...] = ()  # outcomes that must be reproduced (a suite's known bugs)
    reproductions: dict[str, Finding] = field(default_factory=dict)  # wanted item -> first execution

    @property
    def missing(self) -> list[str]:
        """Wanted outcomes not reproduced."""
        return [w for w in self.wanted if w not in self.reproductions]

    @property
    def points_per_s(self) -> float:
        return self.points / self.wall_s if self.wall_s else 0.0

    def pct_guarantee(self) -> Optional[tuple[int, int, int, float]]:
        """(n, k, d, p): PCT's per-execution probability for this run's n and k."""
        if self.strategy != "pct":
            return None
        from mmlab.sched.pct import pct_bound
        n, k, d = self.max_tasks, self.max_decisions, int(self.params["depth"])
        return n, k, d, pct_bound(n, k, d)


def token_for(scenario: Scenario, strategy: str, seed: int, params: dict[str, Any], iteration: int,
              ex: Execution, out: Outcome, shrunk: bool) -> str:
    return encode_token({
        "scenario": scenario.spec(), "strategy": strategy, "seed": seed, "params": params,
        "iteration": iteration, "shrunk": shrunk, "choices": ex.choices, "masks": ex.masks,
        "u64s": ex.u64s, "outcome": out.verdict, "what": out.what, "fingerprint": fingerprint(ex),
        "steps": ex.steps})


def matches(out: Outcome, item: str) -> bool:
    """Does *out* show *item*: a verdict (FORBIDDEN, INTERESTING, DEADLOCK...), the kind of a
    finding (replacement-populated...) or "stall"."""
    return item in (out.verdict, out.what) or (item == "stall" and out.verdict == "STALL")


def explore(scenario: Scenario, strategy: str = "pct", iterations: int = 1000, seed: int = 0, *,
            depth: int = 2, max_preemptions: int = 2, max_steps: int = 20_000, do_shrink: bool = True,
            reproduce: int = 10, stop_on_failure: bool = True,
            violation: Optional[Callable[[Outcome], bool]] = None, wanted: tuple[str, ...] = (),
            stop_when_reproduced: bool = False, progress: Optional[Callable[[ExploreResult], None]] = None) -> ExploreResult:
    """Explore *scenario* for up to *iterations* executions. An outcome for which *violation* is
    true (default: any failure) is the finding: shrunk, tokenized and replayed *reproduce* times.
    *wanted* outcomes (known bugs a suite expects) are recorded, shrunk and replayed the same way
    when they first appear; with *stop_when_reproduced* the search ends once all are seen."""
    sched = make_scheduler(strategy, seed, depth, max_preemptions)
    params: dict[str, Any] = {"depth": depth} if strategy == "pct" else (
        {"max_preemptions": max_preemptions} if strategy == "dfs" else {})
    res = ExploreResult(scenario, strategy, seed, params, wanted=tuple(wanted))
    bad = violation or (lambda o: o.failure)
    with TaskThreads() as threads:
        _explore(res, sched, scenario, iterations, max_steps, stop_on_failure, bad, stop_when_reproduced,
                 progress, threads)
        for f in ([res.finding] if res.finding else []) + list(res.reproductions.values()):
            if do_shrink:
                f.shrunk = shrink(scenario, f.execution, f.outcome, max_steps=max_steps, threads=threads)
            f.token = token_for(scenario, strategy, seed, params, f.iteration, f.shown,
                                f.shrunk.outcome if f.shrunk else f.outcome, do_shrink)
            if reproduce:
                rr = replay_token(f.token, reproduce, max_steps, threads)
                f.replays, f.reproduced = len(rr.runs), rr.identical
                f.replay_problems = rr.problems
    return res


def _explore(res: ExploreResult, sched: Scheduler, scenario: Scenario, iterations: int, max_steps: int,
             stop_on_failure: bool, bad: Callable[[Outcome], bool], stop_when_reproduced: bool,
             progress: Optional[Callable[[ExploreResult], None]], threads: TaskThreads) -> None:
    t0 = time.perf_counter()
    for i in range(1, iterations + 1):
        if not sched.new_execution():
            res.exhausted = True
            break
        ex, out = run_once(scenario, sched, max_steps, threads)
        res.executions += 1
        res.counts[out.verdict] += 1
        res.points += ex.points
        res.steps += ex.steps
        res.run_s += ex.wall_s
        res.max_decisions = max(res.max_decisions, ex.decisions)
        res.max_tasks = max(res.max_tasks, len(ex.names))
        for w in res.wanted:
            if w not in res.reproductions and matches(out, w):
                res.reproductions[w] = Finding(i, ex, out)
        if bad(out) and res.finding is None:
            res.first_failure_at = i
            res.finding = Finding(i, ex, out)
            if stop_on_failure:
                break
        if stop_when_reproduced and res.wanted and not res.missing:
            break
        if progress is not None and i % 50 == 0:
            res.wall_s = time.perf_counter() - t0
            progress(res)
    res.wall_s = time.perf_counter() - t0


def never_violated(never: tuple[str, ...]) -> Callable[[Outcome], bool]:
    """A violation test from a suite's ``never`` list; any failure that is not a verdict of the
    race (a deadlock, an error, a hang, a livelock) always violates."""
    if not never:
        return lambda o: o.verdict in ("DEADLOCK", "ERROR", "HANG", "STEP_BOUND")
    return lambda o: any(matches(o, n) for n in never) or o.verdict in ("DEADLOCK", "ERROR", "HANG", "STEP_BOUND")


@dataclass
class ReplayResult:
    data: dict[str, Any]
    scenario: Scenario
    notes: list[str]
    runs: list[tuple[Execution, Outcome]] = field(default_factory=list)
    identical: int = 0
    problems: list[str] = field(default_factory=list)
    divergence: Optional[Divergence] = None


def replay_token(token: str, times: int = 1, max_steps: int = 20_000,
                 threads: Optional[TaskThreads] = None) -> ReplayResult:
    """Run the token's execution *times* times; count those identical to the recording (same
    outcome, same trace, same virtual times). Raises TokenError/ValueError for a bad token."""
    from mmlab import __version__
    d = decode_token(token)
    scenario = scenario_from_spec(d["scenario"])
    notes = list(getattr(scenario, "notes", []))
    if d.get("mmlab") != __version__:
        notes.append(f"the token was made by mmlab {d.get('mmlab')}, this is {__version__}")
    rr = ReplayResult(d, scenario, notes)
    if threads is None:
        with TaskThreads() as own:
            _replay(rr, d, scenario, times, max_steps, own)
    else:
        _replay(rr, d, scenario, times, max_steps, threads)
    return rr


def _replay(rr: ReplayResult, d: dict[str, Any], scenario: Scenario, times: int, max_steps: int,
            threads: TaskThreads) -> None:
    for _ in range(times):
        sched = ReplayScheduler(d["choices"], d["masks"], d.get("u64s", ()))
        sched.new_execution()
        ex, out = run_once(scenario, sched, max_steps, threads)
        if ex.status == DONE and not sched.finished:
            ex.status = DIVERGED
            ex.divergence = Divergence(ex.steps, [], [], f"the execution ended after {ex.steps} steps; "
                                       f"the recording has {len(d['choices'])}")
            out = Outcome("DIVERGED", "diverged", str(ex.divergence))
        rr.runs.append((ex, out))
        if ex.status == DIVERGED:
            rr.divergence = rr.divergence or ex.divergence
            rr.problems.append(str(ex.divergence))
            continue
        same_out = out.verdict == d.get("outcome") and out.what == d.get("what", out.what)
        same_fp = fingerprint(ex) == d.get("fingerprint")
        if same_out and same_fp:
            rr.identical += 1
        else:
            rr.problems.append(
                f"outcome {out.verdict} (recorded {d.get('outcome')})" if not same_out else
                "same outcome, but the trace or its virtual times differ from the recording")
