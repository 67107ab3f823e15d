"""Cost profiles: the cost model's constants (:class:`mmlab.clock.Costs`) measured on a machine.

The built-in costs were measured once, on one machine (research/real-kernel-6.18.md). ``mmlab
calibrate`` measures them on this machine's kernel and writes a cost profile, a small TOML file::

    [profile]
    kernel = "6.18.0"                     # uname -r where it was measured
    date = "2026-11-30 11:40 UTC"
    host = "box"

    [costs]                               # Costs fields in ns (any subset; the rest stay built-in)
    anon_page_ns = 2250
    zap_anon_page_ns = 310

    [spread]                              # (max - min) / median over the repeats, per field
    anon_page_ns = 0.04

Every command that takes costs resolves one profile (:func:`resolve`): ``--costs FILE``, else the
file named by ``$MMLAB_COSTS`` (which must exist), else the default location
(``$XDG_CONFIG_HOME/mmlab/costs.toml`` or ``~/.config/mmlab/costs.toml``) when that file exists,
else the built-in costs. The report header names which (:attr:`CostProfile.header`). A file that
does not parse, or a field that is unknown, negative or not an integer, is a
:class:`CostProfileError` naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from mmlab.clock import DEFAULT_COSTS, Costs

__all__ = ["CostProfile", "CostProfileError", "BUILTIN", "COST_FIELDS", "CALIBRATED", "ENV_VAR", "default_path", "load",
           "resolve", "dumps", "save"]

ENV_VAR = "MMLAB_COSTS"
BUILTIN_NAMES = ("builtin", "built-in")
# every Costs field but time_scale (a run's choice, not the machine's)
COST_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Costs) if f.name != "time_scale")
# what `mmlab calibrate` measures; vma_op_ns (the fixed part of a write-locked call) is not: the
# interpreter's own per-call time already exceeds the kernel's (~4 us), so it stays 0
CALIBRATED: tuple[str, ...] = tuple(f for f in COST_FIELDS if f != "vma_op_ns")
_MIN = {"readahead_pages": 1}  # a read-ahead window of no pages would never end


class CostProfileError(ValueError):
    """A cost profile that cannot be used; the message names the file and the field."""

    def __init__(self, path: str, what: str, fld: str = "") -> None:
        self.path = path
        self.field = fld
        super().__init__(f"{path}: {'field ' + repr(fld) + ': ' if fld else ''}{what}")


@dataclass(frozen=True)
class CostProfile:
    """Costs at time scale 1.0, and where they came from."""

    costs: Costs = DEFAULT_COSTS
    path: str = ""                      # "" for the built-in costs
    date: str = ""
    kernel: str = ""
    host: str = ""
    spread: dict[str, float] = field(default_factory=dict)
    measured: tuple[str, ...] = ()      # the fields the file set (the rest are built-in)

    @property
    def builtin(self) -> bool:
        return not self.path

    def scaled(self, time_scale: float) -> Costs:
        return self.costs.scaled(time_scale)

    @property
    def header(self) -> str:
        """One line for a report header: "costs: calibrated FILE, DATE" or "costs: built-in"."""
        if self.builtin:
            return "costs: built-in"
        s = f"costs: calibrated {self.path}"
        if self.date:
            s += f", {self.date}"
        if self.kernel:
            s += f" (kernel {self.kernel})"
        rest = [f for f in CALIBRATED if f not in self.measured]
        if self.measured and rest:
            s += f"; built-in: {', '.join(rest)}"
        return s

    def as_dict(self) -> dict[str, Any]:
        return {"source": "built-in" if self.builtin else "calibrated", "path": self.path or None,
                "date": self.date or None, "kernel": self.kernel or None,
                "costs": {f: getattr(self.costs, f) for f in COST_FIELDS}, "spread": dict(self.spread)}


BUILTIN = CostProfile()


def default_path() -> Path:
    """Where a calibrated profile is looked for (and written by default): $XDG_CONFIG_HOME/mmlab/
    costs.toml, or ~/.config/mmlab/costs.toml. (``$MMLAB_COSTS`` overrides it in :func:`resolve`.)"""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "mmlab" / "costs.toml"


def load(path: str | os.PathLike[str]) -> CostProfile:
    """Read and check a profile; :class:`CostProfileError` names the file and the bad field."""
    p = str(path)
    try:
        text = Path(p).read_text()
    except OSError as e:
        raise CostProfileError(p, f"cannot read: {e.strerror or e}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CostProfileError(p, f"not TOML: {e}") from None
    unknown = set(doc) - {"profile", "costs", "spread", "measured"}
    if unknown:
        raise CostProfileError(p, "unknown table (known: profile, costs, spread, measured)", sorted(unknown)[0])
    costs = doc.get("costs")
    if not isinstance(costs, dict) or not costs:
        raise CostProfileError(p, "missing or empty [costs] table", "costs")
    vals: dict[str, int] = {}
    for k, v in costs.items():
        if k not in COST_FIELDS:
            raise CostProfileError(p, f"unknown cost (known: {', '.join(COST_FIELDS)})", f"costs.{k}")
        if isinstance(v, bool) or not isinstance(v, int):
            raise CostProfileError(p, f"must be an integer (ns), not {v!r}", f"costs.{k}")
        if v < _MIN.get(k, 0):
            raise CostProfileError(p, f"must be >= {_MIN.get(k, 0)}, not {v}", f"costs.{k}")
        vals[k] = v
    meta = doc.get("profile", {})
    if not isinstance(meta, dict):
        raise CostProfileError(p, "must be a table", "profile")
    for k in ("kernel", "date", "host"):
        if k in meta and not isinstance(meta[k], str):
            raise CostProfileError(p, f"must be a string, not {meta[k]!r}", f"profile.{k}")
    spread = doc.get("spread", {})
    if not isinstance(spread, dict) or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                           for v in spread.values()):
        raise CostProfileError(p, "must be a table of numbers", "spread")
    return CostProfile(dataclasses.replace(DEFAULT_COSTS, **vals), os.path.abspath(p), meta.get("date", ""),
                       meta.get("kernel", ""), meta.get("host", ""), {k: float(v) for k, v in spread.items()},
                       tuple(f for f in COST_FIELDS if f in vals))


def resolve(path: Optional[str] = None) -> CostProfile:
    """The profile a command uses: *path* ("builtin" for the built-in costs), else $MMLAB_COSTS
    (which must exist), else the default location when a file is there, else the built-in costs."""
    if path:
        return BUILTIN if path in BUILTIN_NAMES else load(path)
    env = os.environ.get(ENV_VAR)
    if env:
        if env in BUILTIN_NAMES:
            return BUILTIN
        if not os.path.exists(env):
            raise CostProfileError(env, f"named by ${ENV_VAR} but does not exist")
        return load(env)
    d = default_path()
    return load(d) if d.is_file() else BUILTIN


def dumps(costs: dict[str, int], *, kernel: str, date: str, host: str = "", spread: Optional[dict[str, float]] = None,
          measured: Optional[dict[str, Any]] = None, comments: Optional[dict[str, str]] = None) -> str:
    """The TOML text of a profile (what :func:`load` reads back)."""
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines = ["# mmlab cost profile, written by `mmlab calibrate` (see mmlab/costprofile.py)",
             "[profile]", f"kernel = {q(kernel)}", f"date = {q(date)}", f"host = {q(host)}", "",
             "[costs]  # ns, at time scale 1.0"]
    for k in COST_FIELDS:
        if k in costs:
            c = (comments or {}).get(k)
            lines.append(f"{k} = {int(costs[k])}" + (f"  # {c}" if c else ""))
    if spread:
        lines += ["", "[spread]  # (max - min) / median over the repeats"]
        lines += [f"{k} = {v:.4f}" for k, v in spread.items()]
    if measured:
        lines += ["", "[measured]  # the raw medians behind the costs"]
        for k, v in measured.items():
            lines.append(f"{k} = {q(v) if isinstance(v, str) else (f'{v:.6g}' if isinstance(v, float) else v)}")
    return "\n".join(lines) + "\n"


def save(path: str | os.PathLike[str], text: str) -> Path:
    """Write *text* to *path* (parents created) atomically, and check it loads."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    try:
        load(tmp)
    except CostProfileError:
        tmp.unlink()
        raise
    os.replace(tmp, p)
    return p
