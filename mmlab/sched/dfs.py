"""Bounded exhaustive search: depth-first over schedules, fewest preemptions first (CHESS).

Iterative context bounding (Musuvathi and Qadeer, PLDI 2007): explore every schedule with no
preemption, then every schedule with exactly one, then two, up to ``max_preemptions``. A switch
away from a task that could continue is a preemption; a switch because the running task blocked
or finished is free, and the search branches over it at every bound.

Each schedule is run once. The search at bound b starts from the *prefixes* queued while running
bound b-1: a prefix is a run of decisions that ends with one preemption. Below a prefix only free
switches branch, and at every decision step where the running task could be preempted, each
preempting choice is queued as a prefix for bound b+1 -- so schedules with fewer preemptions are
found first, as CHESS does, and the first failure found is already close to the simplest.
"""

from __future__ import annotations

import collections
from typing import Optional, Sequence

from mmlab.sched.scheduler import Divergence, Scheduler

__all__ = ["DfsScheduler"]


class _Frame:
    __slots__ = ("options", "i")

    def __init__(self, options: list[int]) -> None:
        self.options = options
        self.i = 0


class DfsScheduler(Scheduler):
    name = "dfs"

    def __init__(self, max_preemptions: int = 2, seed: int = 0) -> None:
        self.max_preemptions = max_preemptions
        self.seed = seed  # only for next_u64: the search itself is deterministic
        self.bound = 0
        self._queue: collections.deque[list[int]] = collections.deque([[]])
        self._next_queue: collections.deque[list[int]] = collections.deque()
        self._prefix: list[int] = []
        self._frames: list[_Frame] = []
        self._started = False
        self._depth = 0  # decision steps taken in this execution
        self._taken: list[int] = []
        self._u64 = seed
        self.executions_at_bound: dict[int, int] = collections.Counter()

    # ------------------------------------------------------------------ executions
    def new_execution(self) -> bool:
        self._u64 = self.seed
        if self._started and self._backtrack():
            return self._begin()
        while True:
            if self._queue:
                self._prefix = self._queue.popleft()
                self._frames = []
                self._started = True
                return self._begin()
            if self.bound >= self.max_preemptions or not self._next_queue:
                return False
            self.bound += 1
            self._queue, self._next_queue = self._next_queue, collections.deque()

    def _begin(self) -> bool:
        self._depth = 0
        self._taken = []
        self.executions_at_bound[self.bound] += 1
        return True

    def _backtrack(self) -> bool:
        """Advance the deepest frame that has an untried option; False when the subtree is done."""
        while self._frames:
            f = self._frames[-1]
            f.i += 1
            if f.i < len(f.options):
                return True
            self._frames.pop()
        return False

    # ------------------------------------------------------------------ steps
    def next_task(self, runnable: Sequence[int], current: Optional[int]) -> int:
        if len(runnable) == 1:
            return runnable[0]
        d = self._depth
        self._depth += 1
        np = len(self._prefix)
        if d < np:
            choice = self._prefix[d]
            if choice not in runnable:
                raise Divergence(d, [choice], runnable, "the search's prefix no longer fits the execution")
        else:
            fi = d - np
            if fi < len(self._frames):
                f = self._frames[fi]
                choice = f.options[f.i]
                if choice not in runnable:
                    raise Divergence(d, f.options, runnable, "the execution is not deterministic")
            else:
                if current is not None and current in runnable:
                    options = [current]  # no preemption below the prefix...
                    if self.bound < self.max_preemptions:  # ...but queue each one for the next bound
                        for t in runnable:
                            if t != current:
                                self._next_queue.append(self._taken + [t])
                else:
                    options = list(runnable)  # a free switch: every task
                self._frames.append(_Frame(options))
                choice = options[0]
        self._taken.append(choice)
        return choice

    def next_u64(self) -> int:
        self._u64 = (self._u64 * 6364136223846793005 + 1442695040888963407) & ((1 << 64) - 1)
        return self._u64

    def describe(self) -> str:
        return f"DFS, preemption bound {self.max_preemptions} (now at {self.bound})"
