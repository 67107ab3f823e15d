"""PCT: probabilistic concurrency testing (Burckhardt, Kothari, Musuvathi, Nagarakatte, ASPLOS 2010).

Each task gets a random distinct priority (>= d) when it first appears; d-1 *change points* are
drawn among the k decision steps of an execution. At every step the highest-priority runnable task
runs; at the i-th change point, the task that would run drops to priority d-i, below every
initial priority. Any bug of depth d (d ordering constraints must hold for it to show) is found
with probability at least 1/(n * k^(d-1)) per execution.

k counts decision steps only (steps with two or more runnable tasks): a forced step runs its only
task whatever the priorities, so an ordering constraint can only ever need a priority change at a
decision step. k is learned as in shuttle's PCT: the largest k seen so far (the first execution
uses ``k_guess``).
"""

from __future__ import annotations

import random
from typing import Optional, Sequence

from mmlab.sched.scheduler import Scheduler

__all__ = ["PctScheduler", "pct_bound"]


def pct_bound(n: int, k: int, d: int) -> float:
    """The per-execution probability PCT guarantees for a depth-d bug among n tasks and k steps."""
    return 1.0 / (max(n, 1) * max(k, 1) ** (d - 1))


class PctScheduler(Scheduler):
    name = "pct"

    def __init__(self, seed: int, depth: int = 2, k_guess: int = 20) -> None:
        if depth < 1:
            raise ValueError("PCT depth must be >= 1")
        self.seed = seed
        self.depth = depth
        self._rng = random.Random(seed)
        self.k = k_guess  # decision steps per execution, learned
        self.n = 0  # tasks per execution, learned
        self._prio: dict[int, int] = {}
        self._order: list[int] = []
        self._changes: dict[int, int] = {}
        self._step = 0

    def new_execution(self) -> bool:
        if self._step > self.k:
            self.k = self._step
        self._step = 0
        self._prio = {}
        self._order = []
        d = self.depth
        points = self._rng.sample(range(1, self.k + 1), min(d - 1, self.k))
        self._changes = {p: d - 1 - i for i, p in enumerate(sorted(points))}  # step -> new priority
        return True

    def _see(self, task: int) -> None:
        """A task seen for the first time goes to a random place in the priority order."""
        self._order.insert(self._rng.randrange(len(self._order) + 1), task)
        for i, t in enumerate(self._order):
            self._prio[t] = self.depth + i
        if len(self._order) > self.n:
            self.n = len(self._order)

    def next_task(self, runnable: Sequence[int], current: Optional[int]) -> int:
        prio = self._prio
        for t in runnable:
            if t not in prio:
                self._see(t)
        if len(runnable) == 1:
            return runnable[0]
        self._step += 1
        best = max(runnable, key=prio.__getitem__)
        newp = self._changes.get(self._step)
        if newp is not None:
            if best in self._order:
                self._order.remove(best)  # no longer among the initial priorities
            prio[best] = newp
            best = max(runnable, key=prio.__getitem__)
        return best

    def next_u64(self) -> int:
        return self._rng.getrandbits(64)

    def guarantee(self) -> float:
        return pct_bound(self.n, self.k, self.depth)

    def describe(self) -> str:
        return f"PCT depth {self.depth}, seed {self.seed}"
