"""One seed under controlled exploration: the race triple scheduled by PCT (or random, DFS).

Where the stress harness lets the OS interleave the threads, here the scheduler of
:mod:`mmlab.sched` decides at every schedule point, seeded by the test item's seed: the same seed
explores the same schedules, and a failure comes with a replay token (``mmlab replay TOKEN``
re-runs exactly that execution) and its shrunk interleaving. Each explored execution is counted
into the item's :class:`Row` like a stress round (its grade; latencies are virtual).
"""

from __future__ import annotations

from typing import Callable, Iterable, Union

from mmlab.ci.results import Row
from mmlab.ci.stress import ALLOW_DEFAULT, SeedFailure
from mmlab.harness.sizes import parse_size
from mmlab.kernels import Kernel

__all__ = ["Explorer"]


class Explorer:
    """Controlled exploration for one seeded test item: ``race(populator, racer)``."""

    def __init__(self, kernel: Kernel, kernel_spec: str, seed: int, time_scale: float, *, iterations: int = 200,
                 strategy: str = "pct", depth: int = 2, suite: str = "test",
                 record: Callable[[Row], None] = lambda r: None) -> None:
        self.kernel = kernel
        self.kernel_spec = kernel_spec
        self.seed = seed
        self.time_scale = time_scale
        self.iterations = iterations
        self.strategy = strategy
        self.depth = depth
        self.suite = suite
        self._record = record

    def race(self, populator: str, racer: str, *, size: Union[int, str] = "1M", iterations: int = 0,
             allow: Iterable[str] = ALLOW_DEFAULT):  # -> mmlab.sched.explore.ExploreResult
        from mmlab.sched.explore import explore
        from mmlab.sched.scenario import RaceScenario
        from mmlab.sched.trace import format_steps
        allow = tuple(allow)
        sc = RaceScenario(self.kernel_spec, populator, racer, size=parse_size(size), time_scale=self.time_scale)
        res = explore(sc, self.strategy, iterations or self.iterations, self.seed, depth=self.depth, reproduce=3,
                      stop_on_failure=True)
        row = Row(self.suite, self.kernel.name, populator, racer, seeds=1, rounds=res.executions)
        for verdict, n in res.counts.items():
            if verdict in row.outcomes:
                row.outcomes[verdict] += n
            else:  # DEADLOCK, STEP_BOUND, HANG, ERROR, STALL: the exploration itself failed
                row.broken += n
        f = res.finding
        failed = f is not None and f.outcome.verdict not in allow
        if failed:
            row.failed_seeds = [self.seed]
            row.kinds[f.outcome.what] = 1
        self._record(row)
        if failed:
            shown = f.shown
            what = (f"{f.outcome.verdict} ({f.outcome.what}) in {self.kernel.name} {populator} vs {racer}, seed "
                    f"{self.seed}: {self.strategy} schedule {f.iteration} of {res.executions}, token reproduced "
                    f"{f.reproduced}/{f.replays}")
            detail = f"{f.outcome.detail}\nshrunk interleaving (virtual time):\n{format_steps(shown)}"
            raise SeedFailure(what, detail, replay=[f"mmlab replay {f.token}"], token=f.token)
        return res
