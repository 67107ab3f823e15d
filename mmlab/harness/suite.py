"""Stress suites: declarative TOML scenarios, validated strictly before anything runs.

A suite names the kernel profiles to run, race sections (populators x racers graded by the
oracle), workload tasks (real threads with call mixes, populators, the latency victims) and, per
profile, what must hold::

    [suite]
    name = "populate-race"
    kernels = ["v3.7", "v3.9-rc1", "v3.9", "v6.18", "bounded"]
    seed = 1
    time_scale = 0.5
    duration = "3s"             # how long the workload tasks run, per kernel

    [[race]]                    # rounds graded OK / INTERESTING / FORBIDDEN
    populators = ["populate-file"]
    racers = ["munmap-mmap", "mmap-fixed", "mremap-fixed", "mprotect"]
    size = "32M"
    rounds = 8                  # per cell (or: duration = "1s" per cell)
    [race.expect."v6.18"]       # this section's expectations (else the suite's)
    reproduce = ["replacement-populated"]

    [[task]]                    # workload: tasks run together for `duration`
    name = "mapper"
    count = 4
    size = "256k"
    mix = { mmap = 4, touch = 8, munmap = 3, brk = 1, mremap = 1 }

    [expect.default]            # per kernel name, or "default"
    never = ["FORBIDDEN"]       # grades that must not appear
    reproduce = []              # grades, finding kinds or "stall" that must appear (known bugs)
    stall_ms = 200              # the worst mmap_sem wait allowed
    stall_over_ms = 50          # a known stall that must be reproduced (worst wait above it)

Any unknown field, wrong type, bad size or duration, unknown kernel, populator, racer, op or
grade is a :class:`SuiteError` naming the file and line; nothing runs.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from mmlab.clock import DEFAULT_COSTS, Costs
from mmlab.harness.oracle import GRADES
from mmlab.harness.populators import POPULATORS
from mmlab.harness.racers import DEFAULT_RACERS, RACERS
from mmlab.harness.sizes import parse_size
from mmlab.kernels import get_kernel

__all__ = ["Suite", "RaceSection", "TaskSpec", "Expect", "SuiteError", "load_suite", "parse_duration",
           "MIX_OPS", "VICTIM_KINDS", "REPRODUCIBLE"]

MIX_OPS = ("mmap", "munmap", "touch", "mprotect", "mlock", "munlock", "brk", "mremap", "madvise",
           "remap_file_pages", "populate")
VICTIM_KINDS = ("fault", "writer", "vma-writer")
# populators a workload task may run: the ones that change nothing process-wide (mlockall and
# brk do; use them in [[race]] sections, or mlockall = true on a mix task)
WORKLOAD_POPULATORS = ("populate-anon", "populate-file", "map-locked")
FINDING_KINDS = ("replacement-populated", "replacement-asked", "outside-vma", "bad-state", "no-call",
                 "no-origin", "invariant", "locked-not-present", "mapping-lost")
# a finding the live oracle (--check-live) saw while the tasks ran: "live:" + its kind
LIVE_FINDING_KINDS = tuple(f"live:{k}" for k in FINDING_KINDS)
REPRODUCIBLE = GRADES + FINDING_KINDS + LIVE_FINDING_KINDS + ("stall",)


class SuiteError(ValueError):
    """A bad suite file: ``file:line: message``."""

    def __init__(self, path: str, line: int, msg: str) -> None:
        super().__init__(f"{path}:{line}: {msg}" if line else f"{path}: {msg}")
        self.path = path
        self.line = line
        self.msg = msg


@dataclass(frozen=True)
class Expect:
    never: tuple[str, ...] = ()
    reproduce: tuple[str, ...] = ()
    stall_ms: Optional[float] = None
    stall_over_ms: Optional[float] = None


@dataclass(frozen=True)
class RaceSection:
    populators: tuple[str, ...]
    racers: tuple[str, ...]
    size: int
    rounds: int = 0
    duration_s: float = 0.0
    kernels: tuple[str, ...] = ()  # empty: the suite's
    expect: dict[str, Expect] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    count: int = 1
    size: int = 1 << 20
    mix: dict[str, int] = field(default_factory=dict)
    populator: Optional[str] = None
    victim: Optional[str] = None
    interval_ns: Optional[int] = None
    mlockall: bool = False


@dataclass
class Suite:
    path: str
    name: str
    description: str
    kernels: tuple[str, ...]
    seed: int
    time_scale: float
    duration_s: float
    hang_ms: float
    races: list[RaceSection]
    tasks: list[TaskSpec]
    expect: dict[str, Expect]
    costs: Costs = DEFAULT_COSTS  # at time scale 1: the command's cost profile (--costs), not the file's
    dilation: float = 1.0  # the workload's clock: RealClock(dilation=k) (`mmlab stress --dilation`)

    def expect_for(self, kernel: str, section: Optional[RaceSection] = None) -> Expect:
        for table in ((section.expect if section else {}), self.expect):
            if kernel in table:
                return table[kernel]
            if "default" in table:
                return table["default"]
        return Expect()


# ---------------------------------------------------------------------------- parsing helpers
_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|ms|us|min)?\s*$")


def parse_duration(v: object) -> float:
    """Seconds from a number or "3s", "250ms", "500us", "2min"."""
    if isinstance(v, bool):
        raise ValueError(f"not a duration: {v!r}")
    if isinstance(v, (int, float)):
        if v < 0:
            raise ValueError(f"duration must be >= 0, not {v!r}")
        return float(v)
    if isinstance(v, str):
        m = _DUR.match(v)
        if m:
            n = float(m.group(1))
            return n * {"s": 1, None: 1, "ms": 1e-3, "us": 1e-6, "min": 60}[m.group(2)]
    raise ValueError(f"not a duration: {v!r} (write e.g. 3s, 250ms, 500us)")


class _Locator:
    """Lines of tables and keys in the TOML text, for messages (tomllib reports none)."""

    _HDR = re.compile(r"^\s*(\[\[|\[)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r'^\s*("([^"]*)"|[A-Za-z0-9_.-]+)\s*=')

    def __init__(self, text: str) -> None:
        self.entries: list[tuple[tuple, int]] = []  # (path, line)
        counters: dict[tuple, int] = {}
        cur: tuple = ()
        for i, line in enumerate(text.splitlines(), start=1):
            m = self._HDR.match(line)
            if m:
                parts = tuple(self._split(m.group(2)))
                if m.group(1) == "[[":
                    n = counters.get(parts, -1) + 1
                    counters[parts] = n
                    cur = parts[:-1] + (parts[-1], n)
                else:
                    # a sub-table of the last array element: [race.expect."v6.18"] -> race, n, ...
                    p0 = (parts[0],)
                    cur = (parts[0], counters[p0]) + parts[1:] if p0 in counters and len(parts) > 1 else parts
                self.entries.append((cur, i))
                continue
            k = self._KEY.match(line)
            if k:
                key = k.group(2) if k.group(2) is not None else k.group(1)
                self.entries.append((cur + tuple(self._split(key)) if k.group(2) is None else cur + (key,), i))

    @staticmethod
    def _split(s: str) -> list[str]:
        out, buf, q = [], "", False
        for ch in s:
            if ch == '"':
                q = not q
            elif ch == "." and not q:
                out.append(buf.strip())
                buf = ""
            else:
                buf += ch
        out.append(buf.strip())
        return out

    def line(self, path: tuple) -> int:
        """The line of *path*, or of its closest enclosing table or key."""
        while path:
            for p, i in self.entries:
                if p == path:
                    return i
            path = path[:-1]
        return 0


class _Reader:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.loc = _Locator(text)

    def fail(self, where: tuple, msg: str) -> SuiteError:
        return SuiteError(self.path, self.loc.line(where), msg)

    def table(self, d: Any, where: tuple, allowed: dict[str, bool]) -> dict[str, Any]:
        """Check *d* is a table with only *allowed* keys (value: required)."""
        name = ".".join(str(x) for x in where) or "top level"
        if not isinstance(d, dict):
            raise self.fail(where, f"{name} must be a table")
        for k in d:
            if k not in allowed:
                raise self.fail(where + (k,), f"unknown field {k!r} in [{name}]; known: {', '.join(allowed)}")
        for k, req in allowed.items():
            if req and k not in d:
                raise self.fail(where, f"[{name}] needs {k!r}")
        return d

    def typed(self, d: dict, key: str, where: tuple, types: tuple, what: str, default: Any = None) -> Any:
        if key not in d:
            return default
        v = d[key]
        if isinstance(v, bool) and bool not in types:
            raise self.fail(where + (key,), f"{key} must be {what}, not {v!r}")
        if not isinstance(v, types):
            raise self.fail(where + (key,), f"{key} must be {what}, not {type(v).__name__} {v!r}")
        return v

    def strings(self, d: dict, key: str, where: tuple, known: Optional[tuple] = None, check=None,
                default: tuple = ()) -> tuple[str, ...]:
        if key not in d:
            return default
        v = d[key]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.fail(where + (key,), f"{key} must be a list of strings, not {v!r}")
        for x in v:
            if known is not None and x not in known:
                raise self.fail(where + (key,), f"unknown {key[:-1] if key.endswith('s') else key} {x!r} in {key}; "
                                f"known: {', '.join(known)}")
            if check is not None:
                try:
                    check(x)
                except ValueError as e:
                    raise self.fail(where + (key,), str(e)) from None
        return tuple(v)

    def size(self, d: dict, key: str, where: tuple, default: int) -> int:
        if key not in d:
            return default
        try:
            return parse_size(d[key])
        except ValueError as e:
            raise self.fail(where + (key,), f"{key}: {e}") from None

    def duration(self, d: dict, key: str, where: tuple, default: float) -> float:
        if key not in d:
            return default
        try:
            return parse_duration(d[key])
        except ValueError as e:
            raise self.fail(where + (key,), f"{key}: {e}") from None

    def positive_int(self, d: dict, key: str, where: tuple, default: int) -> int:
        v = self.typed(d, key, where, (int,), "a whole number", default)
        if v is not None and v < (1 if key != "rounds" else 0):
            raise self.fail(where + (key,), f"{key} must be positive, not {v}")
        return v

    def expects(self, d: Any, where: tuple, kernels: tuple[str, ...]) -> dict[str, Expect]:
        if not isinstance(d, dict):
            raise self.fail(where, "expect must be a table of kernel names")
        out = {}
        for k, e in d.items():
            w = where + (k,)
            if k != "default" and k not in kernels:
                raise self.fail(w, f"expectations for kernel {k!r}, which the suite does not run "
                                f"(kernels: {', '.join(kernels)}; or 'default')")
            self.table(e, w, {"never": False, "reproduce": False, "stall_ms": False, "stall_over_ms": False})
            never = self.strings(e, "never", w, GRADES[1:])
            repro = self.strings(e, "reproduce", w, REPRODUCIBLE)
            sm = self.typed(e, "stall_ms", w, (int, float), "a number of ms")
            so = self.typed(e, "stall_over_ms", w, (int, float), "a number of ms")
            for key, val in (("stall_ms", sm), ("stall_over_ms", so)):
                if val is not None and val <= 0:
                    raise self.fail(w + (key,), f"{key} must be positive")
            if "stall" in repro and so is None:
                raise self.fail(w + ("reproduce",), "reproduce = [\"stall\"] needs stall_over_ms")
            clash = set(never) & set(repro)
            if clash:
                raise self.fail(w, f"{', '.join(sorted(clash))} both never and reproduce")
            out[k] = Expect(never, repro, None if sm is None else float(sm), None if so is None else float(so))
        return out


def _check_kernel(spec: str) -> None:
    get_kernel(spec)


def load_suite(path: str | Path) -> Suite:
    """Read and validate one suite file; raises SuiteError (file and line) on any problem."""
    p = str(path)
    try:
        text = Path(p).read_text()
    except OSError as e:
        raise SuiteError(p, 0, f"cannot read: {e.strerror}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise SuiteError(p, int(m.group(1)) if m else 0, f"not valid TOML: {e}") from None
    r = _Reader(p, text)
    r.table(doc, (), {"suite": True, "race": False, "task": False, "expect": False})
    s = r.table(doc["suite"], ("suite",), {"name": True, "description": False, "kernels": True, "seed": False,
                                          "time_scale": False, "duration": False, "hang_ms": False})
    name = r.typed(s, "name", ("suite",), (str,), "a string")
    desc = r.typed(s, "description", ("suite",), (str,), "a string", "")
    kernels = r.strings(s, "kernels", ("suite",), check=_check_kernel)
    if not kernels:
        raise r.fail(("suite", "kernels"), "kernels must name at least one kernel profile")
    seed = r.typed(s, "seed", ("suite",), (int,), "a whole number", 1)
    ts = r.typed(s, "time_scale", ("suite",), (int, float), "a number", 1.0)
    if ts < 0:
        raise r.fail(("suite", "time_scale"), "time_scale must be >= 0")
    dur = r.duration(s, "duration", ("suite",), 0.0)
    hang_ms = r.typed(s, "hang_ms", ("suite",), (int, float), "a number of ms", 30_000)
    races = []
    raw_races = doc.get("race", [])
    if not isinstance(raw_races, list):
        raise r.fail(("race",), "race sections are written [[race]]")
    for i, rd in enumerate(raw_races):
        w = ("race", i)
        r.table(rd, w, {"populators": True, "racers": False, "size": False, "rounds": False, "duration": False,
                        "kernels": False, "expect": False})
        pops = r.strings(rd, "populators", w, tuple(POPULATORS))
        if not pops:
            raise r.fail(w + ("populators",), "populators must name at least one populator")
        racers = r.strings(rd, "racers", w, tuple(RACERS), default=DEFAULT_RACERS)
        rk = r.strings(rd, "kernels", w, kernels)
        rounds = r.positive_int(rd, "rounds", w, 0)
        rdur = r.duration(rd, "duration", w, 0.0)
        if not rounds and not rdur:
            raise r.fail(w, "a race section needs rounds or duration (per cell)")
        if rounds and rdur:
            raise r.fail(w + ("duration",), "give rounds or duration, not both")
        exp = r.expects(rd.get("expect", {}), w + ("expect",), rk or kernels)
        for k, e in exp.items():
            if e.stall_ms is not None or e.stall_over_ms is not None or "stall" in e.reproduce:
                raise r.fail(w + ("expect", k), "stall bounds belong to the suite's [expect] (the workload), "
                             "not to a race section")
        races.append(RaceSection(pops, racers, r.size(rd, "size", w, 32 << 20), rounds, rdur, rk, exp))
    tasks = []
    raw_tasks = doc.get("task", [])
    if not isinstance(raw_tasks, list):
        raise r.fail(("task",), "tasks are written [[task]]")
    names = set()
    for i, td in enumerate(raw_tasks):
        w = ("task", i)
        r.table(td, w, {"name": True, "count": False, "size": False, "mix": False, "populator": False,
                        "victim": False, "interval": False, "mlockall": False})
        tname = r.typed(td, "name", w, (str,), "a string")
        if tname in names:
            raise r.fail(w + ("name",), f"two tasks named {tname!r}")
        names.add(tname)
        kinds = [k for k in ("mix", "populator", "victim") if k in td]
        if len(kinds) != 1:
            raise r.fail(w, f"task {tname!r} needs exactly one of mix, populator, victim")
        mix: dict[str, int] = {}
        if "mix" in td:
            md = td["mix"]
            if not isinstance(md, dict) or not md:
                raise r.fail(w + ("mix",), "mix must be a table of op = weight")
            for op, wt in md.items():
                if op not in MIX_OPS:
                    raise r.fail(w + ("mix",), f"unknown op {op!r} in mix; known: {', '.join(MIX_OPS)}")
                if isinstance(wt, bool) or not isinstance(wt, int) or wt < 0:
                    raise r.fail(w + ("mix",), f"weight of {op} must be a whole number >= 0, not {wt!r}")
                mix[op] = wt
            if not any(mix.values()):
                raise r.fail(w + ("mix",), "mix needs one op with a positive weight")
        pop = r.typed(td, "populator", w, (str,), "a string")
        if pop is not None and pop not in POPULATORS:
            raise r.fail(w + ("populator",), f"unknown populator {pop!r}; known: {', '.join(POPULATORS)}")
        if pop is not None and pop not in WORKLOAD_POPULATORS:
            raise r.fail(w + ("populator",), f"populator {pop!r} cannot be a workload task (it changes "
                         f"process-wide state); workload populators: {', '.join(WORKLOAD_POPULATORS)}")
        victim = r.typed(td, "victim", w, (str,), "a string")
        if victim is not None and victim not in VICTIM_KINDS:
            raise r.fail(w + ("victim",), f"unknown victim {victim!r}; known: {', '.join(VICTIM_KINDS)}")
        interval = r.duration(td, "interval", w, 0.0)
        tasks.append(TaskSpec(tname, r.positive_int(td, "count", w, 1), r.size(td, "size", w, 1 << 20), mix, pop,
                              victim, int(interval * 1e9) or None,
                              r.typed(td, "mlockall", w, (bool,), "true or false", False)))
    if tasks and not dur:
        raise r.fail(("suite",), "a suite with tasks needs duration (how long they run per kernel)")
    if not tasks and not races:
        raise r.fail(("suite",), "a suite needs [[race]] sections or [[task]] entries")
    expect = r.expects(doc.get("expect", {}), ("expect",), kernels)
    if not tasks:
        for k, e in expect.items():
            if e.stall_ms is not None or e.stall_over_ms is not None:
                raise r.fail(("expect", k), "stall bounds are measured on the workload: they need [[task]] entries")
    return Suite(p, name, desc, kernels, seed, float(ts), dur, float(hang_ms), races, tasks, expect)
