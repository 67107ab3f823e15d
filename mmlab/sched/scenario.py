"""Scenarios for controlled exploration, and how an execution of one is judged.

A scenario builds a fresh model on a virtual clock, does its set-up there (free-running: nothing
else runs yet), and hands the controller its tasks. :class:`RaceScenario` is the triple of
``mmlab race``: a kernel profile, a populator (mmlab/harness/populators.py) and a racer that
replaces the populated range, each its own task, so the scheduler decides where in the populate
the racer lands (racers: mmlab/harness/racers.py; their ``prepare`` runs in the set-up). Its ``spec()`` is plain data: a replay token carries it, and
:func:`scenario_from_spec` builds the same scenario back.

Judging. An execution that did not finish is DEADLOCK, STEP_BOUND, DIVERGED or HANG; a task that
raised is ERROR. A finished one is judged by the race oracle
(mmlab/harness/oracle.py) on the model alone -- which pages a populate made present, which mapping
they belong to now, the model's invariants -- and, if a stall bound is set, on the longest
mmap_sem wait in virtual time (STALL). A syscall failing with an errno is model behaviour, not an
error: the oracle judges what it left.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any, Callable, Optional

from mmlab.clock import DEFAULT_COSTS, Costs
from mmlab.harness.oracle import check
from mmlab.harness.populators import POPULATORS
from mmlab.harness.racers import RACERS
from mmlab.kernels import Kernel, get_kernel
from mmlab.mm.mm_struct import MM
from mmlab.sched.controller import DEADLOCK, DIVERGED, DONE, HANG, STEP_BOUND, Execution, TaskSpec

__all__ = ["Outcome", "Scenario", "RaceScenario", "OK", "INTERESTING", "FORBIDDEN",
           "STALL", "ERROR", "FAILURES", "scenario_from_spec", "register_scenario_kind",
           "kernel_from_spec"]

OK, INTERESTING, FORBIDDEN, STALL, ERROR = "OK", "INTERESTING", "FORBIDDEN", "STALL", "ERROR"
_STATUS_VERDICT = {DEADLOCK: "DEADLOCK", STEP_BOUND: "STEP_BOUND", DIVERGED: "DIVERGED", HANG: "HANG"}
FAILURES = frozenset({FORBIDDEN, STALL, ERROR, "DEADLOCK", "STEP_BOUND", "HANG"})


@dataclass(frozen=True)
class Outcome:
    """A verdict and what it rests on. ``what`` names the kind of failure, for the shrinker:
    a shrunk schedule must give the same verdict *and* the same ``what``."""

    verdict: str
    what: str = ""
    detail: str = ""

    @property
    def failure(self) -> bool:
        return self.verdict in FAILURES

    @property
    def key(self) -> tuple[str, str]:
        return (self.verdict, self.what)


class Scenario:
    """What the explorer needs from a scenario."""

    kind = "?"

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def title(self) -> str:
        raise NotImplementedError

    def build(self) -> tuple[MM, list[TaskSpec]]:
        raise NotImplementedError

    def judge(self, mm: MM, ex: Execution) -> Outcome:
        raise NotImplementedError


def judge_status(ex: Execution) -> Optional[Outcome]:
    """The verdict of an execution that did not finish, or in which a task raised."""
    if ex.status != DONE:
        v = _STATUS_VERDICT[ex.status]
        detail = str(ex.divergence) if ex.divergence is not None else ex.report
        return Outcome(v, v.lower(), detail)
    if ex.errors:
        name, tb = next(iter(ex.errors.items()))
        last = tb.strip().splitlines()[-1]
        return Outcome(ERROR, last.split(":")[0], f"task {name} raised:\n{tb}")
    return None


def longest_wait(mm: MM) -> tuple[int, str]:
    """The longest lock wait of the execution in virtual ns, and who waited: mmap_sem, or a
    writer in vma_start_write() waiting for a vma's readers (mm.vma_locks.history)."""
    worst, who = 0, ""
    for r in [*mm.mmap_sem.history, *mm.vma_locks.history]:
        w = r.wait_ns
        if w > worst:
            worst, who = w, f"{r.task} waited {w / 1e6:.3f} ms (virtual) for {r.lock} {r.mode} in {r.call}"
    return worst, who


def oracle_verdict(mm: MM) -> Outcome:
    """The race oracle's verdict (mmlab/harness/oracle.py) on the finished model. ``what`` is the
    kind of the first worst finding (replacement-populated, invariant, ...)."""
    v = check(mm)
    if v.outcome == OK:
        return Outcome(OK)
    worst = next(f for f in v.findings if f.grade == v.outcome)
    return Outcome(v.outcome, worst.kind, v.report(history=False))


# ---------------------------------------------------------------------- the race triple
def kernel_from_spec(name: str, switches: Optional[dict[str, Any]] = None) -> tuple[Kernel, list[str]]:
    """The kernel profile *name* with exactly *switches* (as recorded in a token), and notes on
    what differs from today's profile of that name."""
    k = get_kernel(name)
    if switches is None:
        return k, []
    known = k.switches()
    unknown = [s for s in switches if s not in known]
    if unknown:
        raise ValueError(f"the token's kernel has switches this mmlab does not know: {', '.join(unknown)}")
    notes = [f"profile {name} changed since the token was made: {s} is now {known[s]!r}, the token has {v!r}"
             for s, v in switches.items() if known[s] != v]
    notes += [f"profile {name} has a new switch {s}={known[s]!r}" for s in known if s not in switches]
    if notes:
        k = dataclasses.replace(k, **switches)
    return k, notes


def _cost_diff(c: Costs) -> dict[str, int]:
    """The costs that differ from the built-in ones (a replay token carries them)."""
    return {f.name: getattr(c, f.name) for f in dataclasses.fields(c)
            if f.name != "time_scale" and getattr(c, f.name) != getattr(DEFAULT_COSTS, f.name)}


class RaceScenario(Scenario):
    """A populator and a racer over the same range, under one kernel profile."""

    kind = "race"

    def __init__(self, kernel: str, populator: str, racer: str, size: int = 1 << 20,
                 time_scale: float = 1.0, stall_ns: int = 0,
                 switches: Optional[dict[str, Any]] = None, racer_seed: int = 0,
                 costs: Costs = DEFAULT_COSTS) -> None:
        self.kernel, self.notes = kernel_from_spec(kernel, switches)
        self.kernel_name = kernel
        if populator not in POPULATORS:
            raise ValueError(f"unknown populator {populator!r}; known: {', '.join(POPULATORS)}")
        if racer not in RACERS:
            raise ValueError(f"unknown racer {racer!r}; known: {', '.join(RACERS)}")
        if size <= 0 or size % 4096:
            raise ValueError(f"size must be a positive multiple of 4096, not {size}")
        self.populator = populator
        self.racer = racer
        self.size = size
        self.time_scale = time_scale
        self.stall_ns = stall_ns
        self.racer_seed = racer_seed  # the racer's own choices (which part mprotect hits)
        self.costs = costs.scaled(1.0)  # a cost profile (mmlab calibrate); time_scale applies on top

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "kernel": self.kernel_name, "switches": self.kernel.switches(),
                "populator": self.populator, "racer": self.racer, "size": self.size,
                "time_scale": self.time_scale, "stall_ns": self.stall_ns, "racer_seed": self.racer_seed,
                **({"costs": _cost_diff(self.costs)} if self.costs != DEFAULT_COSTS else {})}

    @classmethod
    def from_spec(cls, d: dict[str, Any]) -> "RaceScenario":
        return cls(d["kernel"], d["populator"], d["racer"], int(d["size"]), float(d["time_scale"]),
                   int(d.get("stall_ns", 0)), d.get("switches"), int(d.get("racer_seed", 0)),
                   dataclasses.replace(DEFAULT_COSTS, **{k: int(v) for k, v in d.get("costs", {}).items()}))

    def title(self) -> str:
        return f"{self.kernel.name} / {self.populator} / {self.racer}"

    def build(self) -> tuple[MM, list[TaskSpec]]:
        mm = MM.controlled(self.kernel, self.costs.scaled(self.time_scale))
        pop = POPULATORS[self.populator]
        st = pop.setup(mm, self.size)
        racer = RACERS[self.racer]
        prepared = racer.prepare(mm, pop, st, random.Random(self.racer_seed))

        def populator() -> None:
            try:
                pop.populate(mm, st)
            except OSError:  # in the call history; the oracle judges what the model holds
                pass

        def race() -> None:
            try:
                racer.fire(mm, st, prepared)
            except OSError:
                pass
        return mm, [("populator", populator), ("racer", race)]

    def judge(self, mm: MM, ex: Execution) -> Outcome:
        out = judge_status(ex)
        if out is not None:
            return out
        out = oracle_verdict(mm)
        if out.verdict == FORBIDDEN:
            return out
        if self.stall_ns:
            worst, who = longest_wait(mm)
            if worst > self.stall_ns:
                return Outcome(STALL, "mmap_sem wait over the bound",
                               f"{who}; the bound is {self.stall_ns / 1e6:g} ms")
        return out


_KINDS: dict[str, Callable[[dict[str, Any]], Scenario]] = {"race": RaceScenario.from_spec}


def register_scenario_kind(kind: str, from_spec: Callable[[dict[str, Any]], Scenario]) -> None:
    """Let tokens of another kind of scenario (a test's own) be replayed."""
    _KINDS[kind] = from_spec


def scenario_from_spec(d: dict[str, Any]) -> Scenario:
    kind = d.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"unknown scenario kind {kind!r} in the token; known: {', '.join(_KINDS)}")
    return _KINDS[kind](d)
