"""The scheduler interface: three methods, as in shuttle's ``Scheduler`` trait.

A controlled execution is a sequence of *steps*. At every schedule point the controller asks the
scheduler which task runs next, among the tasks that can run now (``runnable``: task indices in
ascending order). The scheduler never sees the model; a strategy is only a way to choose.

* :meth:`Scheduler.new_execution` starts an execution; it answers False when the strategy has
  nothing left to try (an exhausted bounded search).
* :meth:`Scheduler.next_task` picks one of ``runnable``. ``current`` is the task that reached the
  schedule point (None at the start, or when that task has just finished or blocked before
  running); choosing another task while ``current`` is runnable is a *preemption*.
* :meth:`Scheduler.next_u64` gives a random number to a scenario that needs one, so that every
  source of nondeterminism goes through the scheduler and is replayed with it.

A step with a single runnable task is *forced*; the strategies that count steps (PCT, DFS) count
only *decision* steps, those with two or more runnable tasks -- the only steps where a choice can
change what happens.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional, Sequence

__all__ = ["Scheduler", "Divergence", "is_preemption"]


class Divergence(Exception):
    """A replayed execution stopped matching its recording: a different set of runnable tasks at
    ``step`` (the code, the scenario or the kernel profile changed since it was recorded)."""

    def __init__(self, step: int, expected: Sequence[int], actual: Sequence[int], detail: str = "") -> None:
        self.step = step
        self.expected = list(expected)
        self.actual = list(actual)
        msg = detail or f"runnable tasks {self.actual} where the recording had {self.expected}"
        super().__init__(f"replay diverged at step {step}: {msg}")


def is_preemption(runnable: Sequence[int], current: Optional[int], choice: int) -> bool:
    """A switch away from a task that could have continued."""
    return current is not None and choice != current and current in runnable


class Scheduler(ABC):
    """One strategy for choosing the next task. Subclasses live one per module."""

    name: str = "?"

    @abstractmethod
    def new_execution(self) -> bool:
        """Prepare the next execution; False when there is nothing left to explore."""

    @abstractmethod
    def next_task(self, runnable: Sequence[int], current: Optional[int]) -> int:
        """Which of *runnable* (non-empty, ascending) runs next."""

    @abstractmethod
    def next_u64(self) -> int:
        """A random 64-bit number for the scenario."""

    def describe(self) -> str:
        """One line for reports: the strategy and its parameters."""
        return self.name
