"""The random walk: at every step, any runnable task with equal probability.

Simple and surprisingly strong for shallow bugs; every choice comes from one seeded generator,
so (seed, iteration) names an execution as well as its recorded choices do.
"""

from __future__ import annotations

import random
from typing import Optional, Sequence

from mmlab.sched.scheduler import Scheduler

__all__ = ["RandomScheduler"]


class RandomScheduler(Scheduler):
    name = "random"

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    def new_execution(self) -> bool:
        return True

    def next_task(self, runnable: Sequence[int], current: Optional[int]) -> int:
        if len(runnable) == 1:
            return runnable[0]
        return runnable[self._rng.randrange(len(runnable))]

    def next_u64(self) -> int:
        return self._rng.getrandbits(64)

    def describe(self) -> str:
        return f"random walk, seed {self.seed}"
