"""Replay: run exactly the recorded choices, and say so when the execution stops matching.

Strict replay checks at every step that the set of runnable tasks is the one recorded; the first
difference raises :class:`Divergence` naming the step, so a replay of an old token against
changed code reports a divergence instead of a false result (shuttle's
UncontrolledNondeterminismCheckScheduler, Lockstep's ReplayDivergence).

:class:`GuidedScheduler` is the lenient form the shrinker uses: a schedule given as a few
*switches*, each keyed by which task is running and how many schedule points it has passed;
everywhere else the running task continues (or, if it cannot, the lowest-numbered runnable task
runs). Removing one switch leaves the others meaningful, which is what lets the shrinker cut
preemptions one at a time.
"""

from __future__ import annotations

from typing import Optional, Sequence

from mmlab.sched.scheduler import Divergence, Scheduler

__all__ = ["ReplayScheduler", "GuidedScheduler", "SwitchKey", "default_choice", "mask_of", "tasks_of"]

SwitchKey = tuple[int, int]  # (running task or -1, that task's schedule points so far)


def mask_of(runnable: Sequence[int]) -> int:
    m = 0
    for t in runnable:
        m |= 1 << t
    return m


def tasks_of(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def default_choice(runnable: Sequence[int], current: Optional[int]) -> int:
    """No switch: the running task goes on; if it cannot, the lowest-numbered runnable task."""
    if current is not None and current in runnable:
        return current
    return runnable[0]


class ReplayScheduler(Scheduler):
    name = "replay"

    def __init__(self, choices: Sequence[int], runnable_masks: Sequence[int], u64s: Sequence[int] = ()) -> None:
        if len(choices) != len(runnable_masks):
            raise ValueError("a recording needs one runnable set per choice")
        self.choices = list(choices)
        self.masks = list(runnable_masks)
        self.u64s = list(u64s)
        self._i = 0
        self._u = 0

    def new_execution(self) -> bool:
        self._i = 0
        self._u = 0
        return True

    def next_task(self, runnable: Sequence[int], current: Optional[int]) -> int:
        i = self._i
        if i >= len(self.choices):
            raise Divergence(i, [], runnable, f"the recording ends after {i} steps but the execution goes on")
        m = mask_of(runnable)
        if m != self.masks[i]:
            raise Divergence(i, tasks_of(self.masks[i]), runnable)
        self._i = i + 1
        return self.choices[i]

    def next_u64(self) -> int:
        if self._u >= len(self.u64s):
            raise Divergence(self._i, [], [], "the scenario asks for more random numbers than recorded")
        v = self.u64s[self._u]
        self._u += 1
        return v

    @property
    def finished(self) -> bool:
        return self._i == len(self.choices)


class GuidedScheduler(Scheduler):
    """Follow *switches* where they apply; elsewhere, no preemption."""

    name = "guided"

    def __init__(self, switches: dict[SwitchKey, int], u64s: Sequence[int] = ()) -> None:
        self.switches = dict(switches)
        self.u64s = list(u64s)
        self._points: dict[int, int] = {}
        self._u = 0

    def new_execution(self) -> bool:
        self._points = {}
        self._u = 0
        return True

    def key(self, current: Optional[int]) -> SwitchKey:
        c = -1 if current is None else current
        n = self._points.get(c, 0)
        self._points[c] = n + 1
        return (c, n)

    def next_task(self, runnable: Sequence[int], current: Optional[int]) -> int:
        want = self.switches.get(self.key(current))
        if want is not None and want in runnable:
            return want
        return default_choice(runnable, current)

    def next_u64(self) -> int:
        if self._u < len(self.u64s):
            v = self.u64s[self._u]
            self._u += 1
            return v
        return 0


def switches_of(choices: Sequence[int], masks: Sequence[int], currents: Sequence[Optional[int]]) -> dict[SwitchKey, int]:
    """The switches that make GuidedScheduler repeat a recorded execution exactly."""
    points: dict[int, int] = {}
    out: dict[SwitchKey, int] = {}
    for ch, m, cur in zip(choices, masks, currents):
        c = -1 if cur is None else cur
        n = points.get(c, 0)
        points[c] = n + 1
        if ch != default_choice(tasks_of(m), cur):
            out[(c, n)] = ch
    return out


__all__.append("switches_of")
