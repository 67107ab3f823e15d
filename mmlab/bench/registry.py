"""The benchmark registry: what a benchmark is, what a goal is, and how rows are declared.

A :class:`Benchmark` measures one thing and reports one or more rows (a :class:`Row` has a name,
a unit and an optional :class:`Goal`). Where a comparison exists the rows are measured side by side
in the same run -- the model against the real kernel, the recorded lock against the bare one --
and the ratio row is computed run by run, so noise that hits both sides cancels out.

A benchmark whose feature has not landed yet is registered with ``pending`` (a one-line reason);
it is listed and reported, never run. Adding a benchmark is one decorated function::

    @benchmark("name", "what it measures", rows=[Row("name.x", "us", Goal("<=", 20))])
    def _bench(quick: bool) -> Run:
        ...  # set up; return a Run whose step() measures once and returns {row name: value}
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Callable, Optional

__all__ = ["Goal", "Row", "Run", "Benchmark", "benchmark", "pending", "REGISTRY", "select"]


@dataclass(frozen=True)
class Goal:
    """``op`` is ``"<="`` or ``">="``: the value must be at most / at least ``value``."""

    op: str
    value: float

    def met(self, x: float) -> bool:
        return x <= self.value if self.op == "<=" else x >= self.value

    def __str__(self) -> str:
        v = f"{self.value:g}"
        return f"{'≤' if self.op == '<=' else '≥'} {v}"


@dataclass(frozen=True)
class Row:
    """One reported number. ``goal`` None: a reference value (e.g. the real kernel's)."""

    name: str
    unit: str
    goal: Optional[Goal] = None
    doc: str = ""


@dataclass
class Run:
    """A prepared benchmark: ``step()`` measures once and returns {row name: value}; ``close()``
    frees what setup made. The runner calls step() for the warm-up and for every measured run."""

    step: Callable[[], dict[str, float]]
    close: Callable[[], None] = lambda: None
    notes: list[str] = field(default_factory=list)


@dataclass
class Benchmark:
    name: str
    title: str
    rows: list[Row]
    setup: Optional[Callable[[bool], Run]] = None  # setup(quick) -> Run
    pending: str = ""  # non-empty: not runnable yet, and why
    long: bool = False  # minutes per run: --quick runs it once, without a warm-up
    available: Callable[[], str] = lambda: ""  # returns a reason it cannot run here, or ""

    @property
    def runnable(self) -> bool:
        return self.setup is not None and not self.pending


REGISTRY: dict[str, Benchmark] = {}


def benchmark(name: str, title: str, rows: list[Row], *, long: bool = False,
              available: Callable[[], str] = lambda: "") -> Callable[[Callable[[bool], Run]], Callable[[bool], Run]]:
    """Register ``setup(quick) -> Run`` as the benchmark *name*."""

    def deco(fn: Callable[[bool], Run]) -> Callable[[bool], Run]:
        if name in REGISTRY:
            raise ValueError(f"benchmark {name!r} registered twice")
        REGISTRY[name] = Benchmark(name, title, rows, fn, long=long, available=available)
        return fn

    return deco


def pending(name: str, title: str, rows: list[Row], reason: str) -> None:
    """Register a benchmark whose feature is not on main yet: listed and reported, not run."""
    if name in REGISTRY:
        raise ValueError(f"benchmark {name!r} registered twice")
    REGISTRY[name] = Benchmark(name, title, rows, None, pending=reason)


def select(patterns: list[str]) -> list[Benchmark]:
    """Benchmarks whose name matches any glob in *patterns* (all when empty), in registry order.
    Raises ValueError naming a pattern that matches nothing."""
    if not patterns:
        return list(REGISTRY.values())
    out: list[Benchmark] = []
    for p in patterns:
        hit = [b for b in REGISTRY.values() if fnmatch.fnmatchcase(b.name, p) or b.name == p]
        if not hit:
            raise ValueError(f"no benchmark matches {p!r} (see `mmlab bench --list`)")
        out.extend(b for b in hit if b not in out)
    return [b for b in REGISTRY.values() if b in out]
