"""Helpers for the controlled-scheduling tests: a planted deadlock, a livelock, tiny scenarios.

A module of its own name (pytest puts this directory on sys.path), not conftest: several
directories have a conftest.py, and `from conftest import` got whichever was imported first."""

from __future__ import annotations

from typing import Any, Callable

from mmlab import MM, ZERO_COSTS
from mmlab.sched.controller import Execution, TaskSpec
from mmlab.sched.scenario import Outcome, Scenario, judge_status, register_scenario_kind


class PlantedDeadlock(Scenario):
    """Test-only: a task that takes mmap_sem twice -- for read, then for write without letting
    go (an "upgrade"), beside a plain writer. The down_write() queues and waits for the read holds
    to drain, one of which is its own: a deadlock on every schedule."""

    kind = "planted-deadlock"

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def title(self) -> str:
        return "planted deadlock: a task takes mmap_sem twice"

    def build(self) -> tuple[MM, list[TaskSpec]]:
        mm = MM.controlled("v3.9", ZERO_COSTS, layout="bare")
        sem = mm.mmap_sem

        def takes_it_twice() -> None:
            sem.down_read()
            sem.down_write()  # the planted bug: the read hold is still ours
            sem.up_write()

        def writer() -> None:
            sem.down_write()
            sem.up_write()
        return mm, [("upgrader", takes_it_twice), ("writer", writer)]

    def judge(self, mm: MM, ex: Execution) -> Outcome:
        return judge_status(ex) or Outcome("OK")


class LockOrder(Scenario):
    """Test-only: two processes' mmap_sems taken in opposite orders (AB-BA): a deadlock only
    when each task gets its first lock before the other asks for it."""

    kind = "lock-order"

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def title(self) -> str:
        return "AB-BA"

    def build(self) -> tuple[MM, list[TaskSpec]]:
        a = MM.controlled("v3.9", ZERO_COSTS, layout="bare")
        b = MM.controlled("v3.9", ZERO_COSTS, layout="bare")
        b.clock = a.clock  # one virtual clock for the execution
        a.mmap_sem.name, b.mmap_sem.name = "A.mmap_sem", "B.mmap_sem"

        def ab() -> None:
            a.mmap_sem.down_write()
            b.mmap_sem.down_write()
            b.mmap_sem.up_write()
            a.mmap_sem.up_write()

        def ba() -> None:
            b.mmap_sem.down_write()
            a.mmap_sem.down_write()
            a.mmap_sem.up_write()
            b.mmap_sem.up_write()
        return a, [("ab", ab), ("ba", ba)]

    def judge(self, mm: MM, ex: Execution) -> Outcome:
        return judge_status(ex) or Outcome("OK")


register_scenario_kind("planted-deadlock", lambda d: PlantedDeadlock())
register_scenario_kind("lock-order", lambda d: LockOrder())


class Spinner(Scenario):
    """Test-only: a task that polls forever for a flag nobody sets (a livelock)."""

    kind = "spinner"

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def title(self) -> str:
        return "spinner"

    def build(self) -> tuple[MM, list[TaskSpec]]:
        mm = MM.controlled("v3.9", ZERO_COSTS, layout="bare")

        def spin() -> None:
            while True:
                mm.mmap_sem.down_read()
                mm.mmap_sem.up_read()

        def idle() -> None:
            mm.mmap_sem.down_read()
            mm.mmap_sem.up_read()
        return mm, [("spinner", spin), ("idle", idle)]

    def judge(self, mm: MM, ex: Execution) -> Outcome:
        return judge_status(ex) or Outcome("OK")


def points_of(fns: list[Callable[[], None]]) -> list[TaskSpec]:
    return [(f"t{i}", f) for i, f in enumerate(fns)]
