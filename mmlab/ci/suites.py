"""Stress suite files as the seed sweep runs them: one seed of one kernel at a time.

The race part of a suite -- kernels, populators, racers, rounds, size, time scale, and per
kernel which grades may never appear and which known bug must be reproduced -- is what a seed
sweep runs, one item per (kernel, seed):

    [suite]
    name = "populate-race"
    description = "replacement mappings must never be populated"
    kernels = ["v3.7", "v3.9", "bounded"]
    populators = ["populate-file"]
    racers = ["munmap-mmap", "mmap-fixed"]
    rounds = 4            # rounds per cell per seed
    size = "1M"
    time_scale = 0.1

    [expect.default]
    never = ["FORBIDDEN"]
    [expect."v3.9"]       # the shipped kernel: the known bug must show up in the sweep
    never = []
    reproduce = ["FORBIDDEN"]

``never`` is checked per seed (the item fails, with the seed and the replay commands);
``reproduce`` over the whole sweep (the session fails if no seed reproduced it).

Interim: the stress suites proper (``mmlab stress``, branch ``race``) own the suite format; this
reads the race section of it so the sweep has something to run until then.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmlab.clock import DEFAULT_COSTS, Costs
from mmlab.harness.populators import POPULATORS
from mmlab.harness.racers import RACERS
from mmlab.harness.sizes import parse_size
from mmlab.kernels import get_kernel

__all__ = ["SuiteError", "Suite", "Expect", "load_suite", "is_suite_file", "GRADES"]

GRADES = ("OK", "INTERESTING", "FORBIDDEN")
_SUITE_KEYS = {"name", "description", "kernels", "populators", "racers", "rounds", "size", "time_scale"}
_EXPECT_KEYS = {"never", "reproduce"}


class SuiteError(ValueError):
    """A bad suite file: the message names the file and what is wrong."""


@dataclass(frozen=True)
class Expect:
    never: tuple[str, ...] = ("FORBIDDEN",)
    reproduce: tuple[str, ...] = ()


@dataclass
class Suite:
    path: Path
    name: str
    description: str
    kernels: list[str]
    populators: list[str]
    racers: list[str]
    rounds: int = 4
    size: int = 1 << 20
    time_scale: float = 0.1
    expect: dict[str, Expect] = field(default_factory=dict)

    @property
    def costs(self) -> Costs:
        return DEFAULT_COSTS.scaled(self.time_scale)

    def expect_for(self, kernel: str) -> Expect:
        return self.expect.get(kernel) or self.expect.get("default") or Expect()

    def cells(self) -> list[tuple[str, str]]:
        return [(p, r) for p in self.populators for r in self.racers]


def is_suite_file(path: Path) -> bool:
    """A TOML file in a directory named ``stress`` (what pytest collects as a suite)."""
    return path.suffix == ".toml" and path.parent.name == "stress"


def _names(path: Path, where: str, value: Any, known: dict[str, Any] | None, check=None) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(x, str) for x in value):
        raise SuiteError(f"{path}: {where} must be a non-empty list of names, not {value!r}")
    for x in value:
        if known is not None and x not in known:
            raise SuiteError(f"{path}: {where}: unknown name {x!r}; known: {', '.join(known)}")
        if check is not None:
            try:
                check(x)
            except ValueError as e:
                raise SuiteError(f"{path}: {where}: {e}") from None
    return list(value)


def load_suite(path: Path | str) -> Suite:
    """Read and check a suite file; SuiteError names the file and the field."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise SuiteError(f"{path}: {e.strerror or e}") from None
    s = doc.get("suite")
    if not isinstance(s, dict):
        raise SuiteError(f"{path}: no [suite] table")
    unknown = set(s) - _SUITE_KEYS
    if unknown:
        raise SuiteError(f"{path}: [suite]: unknown field(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(_SUITE_KEYS))}")
    name = s.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise SuiteError(f"{path}: [suite] name must be a string")
    kernels = _names(path, "[suite] kernels", s.get("kernels", ["v3.9", "bounded"]), None, get_kernel)
    pops = _names(path, "[suite] populators", s.get("populators", ["populate-file"]), POPULATORS)
    racers = _names(path, "[suite] racers", s.get("racers", ["munmap-mmap"]), RACERS)
    rounds = s.get("rounds", 4)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds <= 0:
        raise SuiteError(f"{path}: [suite] rounds must be a positive integer, not {rounds!r}")
    try:
        size = parse_size(s.get("size", "1M"))
    except ValueError as e:
        raise SuiteError(f"{path}: [suite] size: {e}") from None
    ts = s.get("time_scale", 0.1)
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or ts < 0:
        raise SuiteError(f"{path}: [suite] time_scale must be a number >= 0, not {ts!r}")
    expect: dict[str, Expect] = {}
    ex = doc.get("expect", {})
    if not isinstance(ex, dict):
        raise SuiteError(f"{path}: [expect] must be a table of kernels")
    for kname, e in ex.items():
        if kname != "default":
            try:
                get_kernel(kname)
            except ValueError as err:
                raise SuiteError(f"{path}: [expect.{kname}]: {err}") from None
        if not isinstance(e, dict) or set(e) - _EXPECT_KEYS:
            raise SuiteError(f"{path}: [expect.{kname}] takes only {', '.join(sorted(_EXPECT_KEYS))}")
        grades = {}
        for key in _EXPECT_KEYS:
            v = e.get(key, [] if key == "reproduce" else ["FORBIDDEN"])
            if not isinstance(v, list) or any(g not in GRADES for g in v):
                raise SuiteError(f"{path}: [expect.{kname}] {key} must be a list of {', '.join(GRADES)}")
            grades[key] = tuple(v)
        expect[kname] = Expect(grades["never"], grades["reproduce"])
    for key in set(doc) - {"suite", "expect"}:
        raise SuiteError(f"{path}: unknown table [{key}]; known: [suite], [expect]")
    return Suite(path, name, str(s.get("description", "")), kernels, pops, racers, rounds, size, float(ts), expect)
