"""Lock-protocol conformance: each call's mmap_lock sequence on the real kernel and in the model.

A catalogue of single calls and short sequences (:data:`CATALOGUE`) runs twice: on this machine's
kernel, in a child process traced through the kernel's own ``mmap_lock`` tracepoints
(:class:`mmlab.trace.Capture`, filtered to the child's calling thread), and on a model profile,
whose :class:`~mmlab.locking.rwsem.LockRecord` history says what the model did. For every compared
call both sides' acquisitions are reduced to the same neutral holds -- (mode, kind) with kind ""
(a plain hold), "downgrade" (``downgrade_write()``: the write hold became a read hold without
``start_locking``) or "failed" (a failed trylock) -- and normalised (:func:`normalise`) into a
:class:`Shape` such as ``W R``, ``W ↓R`` or ``W R×11``. Nothing about the expected answer lives
here: flip a profile switch (``v6.18+munmap_downgrade=off``) and the model's own records move the
verdict.

Counts of repeated holds may differ within an entry's stated :class:`CountTolerance` (read-ahead
and I/O completion depend on the device). A difference made on purpose is listed in
:data:`KNOWN_PROTOCOL` with its reason, and excuses a mismatch only when its own check explains
the observed pair of shapes for that call -- never by name alone.

Real-kernel state stays contained: each entry that changes process-wide state (mlockall, the
program break) runs in a child process of its own, every other entry in one shared child; the
parent never calls mlockall or moves its own break, and every file and mapping is removed.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Optional, Protocol, Sequence

from mmlab.clock import DEFAULT_COSTS, Costs
from mmlab.flags import (MADV_DONTNEED, MADV_POPULATE_READ, MADV_POPULATE_WRITE, MAP_ANONYMOUS, MAP_FIXED, MAP_LOCKED,
                         MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT,
                         MREMAP_MAYMOVE, PAGE_SIZE, PROT_READ, PROT_WRITE)
from mmlab.kernels import Kernel, claiming_profile, get_kernel

__all__ = ["Hold", "Shape", "normalise", "holds_from_model", "holds_from_trace", "CountTolerance",
           "compare_shapes", "Entry", "CATALOGUE", "select", "Step", "ModelSide", "run_model", "real_steps_from_trace",
           "run_real", "ProtocolDifference", "KNOWN_PROTOCOL", "judge", "conform", "is_reference", "reference"]

M = 1 << 20
P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def reference(release: Optional[str] = None) -> Optional[str]:
    """The profile spec this machine's kernel (*release*, default ``uname -r``) is held to: the one
    that claims it by behaviour (mmlab.kernels.claiming_profile), or None when none does."""
    return claiming_profile(release if release is not None else os.uname().release)

# ============================================================================ normalising
Hold = tuple[str, str]  # (mode "R"/"W", kind "" | "downgrade" | "failed")


class _Rec(Protocol):
    mode: str
    how: str


def holds_from_model(records: Iterable[_Rec]) -> list[Hold]:
    """The model's LockRecords as neutral holds. Its ``how`` says why a hold was taken
    ("populate", "retake", "fault") or how ("trylock": a *successful* trylock -- the model records
    only those; "downgrade"); only the downgrade changes the protocol's shape."""
    return [(r.mode, "downgrade" if r.how == "downgrade" else "") for r in records]


def holds_from_trace(records: Iterable[_Rec]) -> list[Hold]:
    """mmlab.trace lock records as neutral holds: ``how`` is "" (start_locking, then
    acquire_returned success=true), "downgrade" (acquire_returned write=false with no
    start_locking, while the task held it for write) or "trylock" (success=false: a failed
    trylock, nothing held)."""
    kinds = {"": "", "downgrade": "downgrade", "trylock": "failed"}
    return [(r.mode, kinds.get(r.how, r.how)) for r in records]


def _token(h: Hold) -> str:
    mode, kind = h
    if kind == "downgrade":
        return "↓" + mode
    if kind == "failed":
        return mode + "✗"
    if kind:
        return f"{mode}({kind})"
    return mode


@dataclass(frozen=True)
class Shape:
    """A normalised lock sequence: runs of (token, count), e.g. (("W", 1), ("R", 11)) = ``W R×11``."""

    runs: tuple[tuple[str, int], ...]

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self.runs)

    def __str__(self) -> str:
        if not self.runs:
            return "—"
        return " ".join(t if n == 1 else f"{t}×{n}" for t, n in self.runs)

    @classmethod
    def parse(cls, text: str) -> "Shape":
        """The inverse of str(): ``"W R×3"`` -> Shape((("W", 1), ("R", 3)))."""
        if text.strip() in ("", "—"):
            return cls(())
        runs = []
        for part in text.split():
            tok, _, n = part.partition("×")
            runs.append((tok, int(n) if n else 1))
        return cls(tuple(runs))


def normalise(holds: Sequence[Hold]) -> Shape:
    """Consecutive holds with the same token become one run: W, R, R, R -> ``W R×3``; a downgrade
    is its own token (``W ↓R``), so ``W ↓R`` never merges with a following plain ``R``."""
    runs: list[list[Any]] = []
    for h in holds:
        t = _token(h)
        if runs and runs[-1][0] == t:
            runs[-1][1] += 1
        else:
            runs.append([t, 1])
    return Shape(tuple((t, n) for t, n in runs))


# ============================================================================ comparing
@dataclass(frozen=True)
class CountTolerance:
    """How far the count of one repeated token may differ between the sides, and why.

    Both counts must be at least ``at_least`` (e.g. 2: the lock really was dropped and re-taken
    on both sides) and the real count within ``[model / factor, model * factor]``."""

    token: str
    factor: float
    at_least: int
    why: str

    def allows(self, model_n: int, real_n: int) -> bool:
        if model_n < self.at_least or real_n < self.at_least:
            return False
        return model_n / self.factor <= real_n <= model_n * self.factor

    def describe(self) -> str:
        return f"{self.token}×k: both k >= {self.at_least}, real k within ×{self.factor:g} of the model's ({self.why})"


def compare_shapes(model: Shape, real: Shape, tol: Optional[CountTolerance]) -> tuple[str, str]:
    """("agree" | "tolerance" | "mismatch", what differs)."""
    if model.tokens != real.tokens:
        mt, rt = model.tokens, real.tokens
        i = next((j for j in range(min(len(mt), len(rt))) if mt[j] != rt[j]), min(len(mt), len(rt)))
        return "mismatch", (f"from run {i + 1}: real {' '.join(rt[i:]) or '—'}, "
                            f"model {' '.join(mt[i:]) or '—'}")
    if model.runs == real.runs:
        return "agree", ""
    notes = []
    for (t, mn), (_, rn) in zip(model.runs, real.runs):
        if mn == rn:
            continue
        if tol is not None and t == tol.token and tol.allows(mn, rn):
            notes.append(f"{t}×{rn} real vs ×{mn} model, ratio {rn / mn:.2f}, within ×{tol.factor:g}")
            continue
        return "mismatch", f"{t} count: real {rn}, model {mn}" + ("" if tol is None or t != tol.token
                                                                   else f" (outside {tol.describe()})")
    return "tolerance", "; ".join(notes)


# ============================================================================ steps and sides
@dataclass
class Step:
    """One call of an entry. Compared calls have a label; setup and teardown calls do not."""

    label: str
    call: str  # the syscall's name, as traced (sys_enter_<call>)
    args: tuple[int, ...]
    ret: Optional[int] = None
    error: Optional[str] = None
    t0: int = 0  # CLOCK_MONOTONIC ns around the call (real side): the window its trace record falls in
    t1: int = 0
    tid: int = 0
    holds: list[Hold] = field(default_factory=list)
    hold_us: list[float] = field(default_factory=list)

    @property
    def shape(self) -> Shape:
        return normalise(self.holds)


class Side:
    """Issues an entry's calls to one target and records the compared ones."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    # -- what entries use
    def call(self, label: Optional[str], name: str, *args: int, file: Any = None) -> int:
        """Issue syscall *name*; with a *label*, record it as a compared step."""
        raise NotImplementedError

    def touch(self, label: str, addr: int, write: bool) -> None:
        """A user load (or store) of *addr*: a page fault, recorded as a compared step ``fault``."""
        raise NotImplementedError

    def file(self, size: int) -> Any:
        raise NotImplementedError

    def cold(self, f: Any) -> None:
        """posix_fadvise(POSIX_FADV_DONTNEED): drop the file's page cache."""
        raise NotImplementedError

    def warm(self, f: Any) -> None:
        """Read the whole file, so that its pages are in the page cache (the model's files are)."""

    def close(self) -> None:
        pass


# ============================================================================ the catalogue
@dataclass(frozen=True)
class Entry:
    name: str
    what: str
    run: Callable[[Side], None]
    tolerance: Optional[CountTolerance] = None
    isolated: bool = False  # changes process-wide state: its own child process on the real side
    why_isolated: str = ""
    warm_image: bool = False  # populates the whole process: its mapped files are read into the page cache first


_READAHEAD = CountTolerance(
    "R", factor=4.0, at_least=2,
    why="a cold file populate drops mmap_lock for every disk wait (FAULT_FLAG_ALLOW_RETRY) and re-takes it; "
        "the model waits once per read-ahead window (its window set to the device's read_ahead_kb), the "
        "kernel also for async read-ahead and for each part of a window whose I/O completes separately; "
        "measured here under load (8 MiB windows, 32 MiB files): real/model 1.4-2.8 in 15 runs, 3.3 at worst "
        "earlier; ×4 is that worst plus a fifth")


def _e_populate_anon(s: Side) -> None:
    a = s.call("mmap(ANON|POPULATE) 8M", "mmap", 0, 8 * M, RW, ANON | MAP_POPULATE)
    s.call(None, "munmap", a, 8 * M)


def _e_populate_shared_anon(s: Side) -> None:
    a = s.call("mmap(SHARED|ANON|POPULATE) 8M", "mmap", 0, 8 * M, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE)
    s.call(None, "munmap", a, 8 * M)


def _e_populate_file(s: Side) -> None:
    f = s.file(8 * M)
    s.warm(f)
    a = s.call("mmap(file, POPULATE) 8M, cached", "mmap", 0, 8 * M, PROT_READ, MAP_PRIVATE | MAP_POPULATE, file=f)
    s.call(None, "munmap", a, 8 * M)


def _e_populate_file_cold(s: Side) -> None:
    f = s.file(32 * M)
    s.cold(f)
    a = s.call("mmap(file, POPULATE) 32M, cold", "mmap", 0, 32 * M, PROT_READ, MAP_PRIVATE | MAP_POPULATE, file=f)
    s.call(None, "munmap", a, 32 * M)


def _e_map_locked(s: Side) -> None:
    a = s.call("mmap(ANON|LOCKED) 4M", "mmap", 0, 4 * M, RW, ANON | MAP_LOCKED)
    s.call(None, "munmap", a, 4 * M)


def _e_mlock(s: Side) -> None:
    a = s.call(None, "mmap", 0, 4 * M, RW, ANON)
    s.call("mlock 4M", "mlock", a, 4 * M)
    s.call("munlock 4M", "munlock", a, 4 * M)
    s.call(None, "munmap", a, 4 * M)


def _e_mlockall(s: Side) -> None:
    s.call("mlockall(CURRENT|FUTURE)", "mlockall", MCL_CURRENT | MCL_FUTURE)
    a = s.call("mmap(ANON) 4M under MCL_FUTURE", "mmap", 0, 4 * M, RW, ANON)
    s.call("munlockall", "munlockall")
    s.call(None, "munmap", a, 4 * M)


def _e_munmap(s: Side) -> None:
    a = s.call(None, "mmap", 0, 8 * M, RW, ANON | MAP_POPULATE)
    s.call("munmap 8M populated", "munmap", a, 8 * M)


def _e_mremap_locked(s: Side) -> None:
    a = s.call(None, "mmap", 0, 1 * M, RW, ANON | MAP_LOCKED)
    b = s.call("mremap VM_LOCKED 1M -> 8M", "mremap", a, 1 * M, 8 * M, MREMAP_MAYMOVE, 0)
    s.call(None, "munmap", b, 8 * M)


def _e_madvise(s: Side) -> None:
    a = s.call(None, "mmap", 0, 4 * M, RW, ANON)
    s.call("madvise(POPULATE_READ) 4M", "madvise", a, 4 * M, MADV_POPULATE_READ)
    s.call("madvise(POPULATE_WRITE) 4M", "madvise", a, 4 * M, MADV_POPULATE_WRITE)
    s.call("madvise(DONTNEED) 4M", "madvise", a, 4 * M, MADV_DONTNEED)
    s.call(None, "munmap", a, 4 * M)


def _e_mprotect(s: Side) -> None:
    a = s.call(None, "mmap", 0, 4 * M, RW, ANON | MAP_POPULATE)
    s.call("mprotect(READ) 4M", "mprotect", a, 4 * M, PROT_READ)
    s.call(None, "munmap", a, 4 * M)


def _e_remap_file_pages(s: Side) -> None:
    f = s.file(4 * M)
    s.warm(f)
    a = s.call(None, "mmap", 0, 4 * M, RW, MAP_SHARED, file=f)
    s.call("remap_file_pages 1M -> pgoff 2", "remap_file_pages", a, 1 * M, 0, 2, 0)
    s.call(None, "munmap", a, 4 * M)


def _e_remap_file_pages_cold(s: Side) -> None:
    f = s.file(32 * M)
    a = s.call(None, "mmap", 0, 16 * M, RW, MAP_SHARED, file=f)
    s.cold(f)
    s.call("remap_file_pages 16M -> pgoff 4096, cold", "remap_file_pages", a, 16 * M, 0, 4096, 0)
    s.call(None, "munmap", a, 16 * M)


def _e_madvise_populate_cold(s: Side) -> None:
    f = s.file(32 * M)
    a = s.call(None, "mmap", 0, 32 * M, PROT_READ, MAP_PRIVATE, file=f)
    s.cold(f)
    s.call("madvise(POPULATE_READ) 32M, cold", "madvise", a, 32 * M, MADV_POPULATE_READ)
    s.call(None, "munmap", a, 32 * M)


def _guarded(s: Side, size: int, prot: int, flags: int, file: Any = None) -> int:
    """A mapping of *size* between two PROT_NONE guard pages, so it merges with nothing and
    starts with no anon_vma on both sides (a fresh process and a Python child alike)."""
    g = s.call(None, "mmap", 0, size + 2 * P, 0, ANON)
    return s.call(None, "mmap", g + P, size, prot, flags | MAP_FIXED, file=file)


def _unguard(s: Side, a: int, size: int) -> None:
    s.call(None, "munmap", a - P, size + 2 * P)


def _e_mlock_onfault(s: Side) -> None:
    a = _guarded(s, 4 * M, RW, ANON)
    s.call("mlock2(MLOCK_ONFAULT) 4M", "mlock2", a, 4 * M, MLOCK_ONFAULT)
    s.touch("first write fault in the VM_LOCKONFAULT vma", a, True)
    s.touch("second write fault", a + 4 * P, True)
    _unguard(s, a, 4 * M)


def _e_mlockall_onfault(s: Side) -> None:
    s.call("mlockall(CURRENT|ONFAULT)", "mlockall", MCL_CURRENT | MCL_ONFAULT)
    s.call("munlockall", "munlockall")


def _e_faults(s: Side) -> None:
    a = _guarded(s, 1 * M, RW, ANON)
    s.touch("first write fault, fresh anonymous vma", a, True)
    s.touch("second write fault, same vma", a + 4 * P, True)
    s.touch("read fault, same vma", a + 8 * P, False)
    _unguard(s, a, 1 * M)
    f = s.file(1 * M)
    s.warm(f)
    b = _guarded(s, 1 * M, PROT_READ, MAP_SHARED, file=f)
    s.touch("read fault, file in the page cache", b, False)
    _unguard(s, b, 1 * M)


def _e_fault_file_cold(s: Side) -> None:
    f = s.file(4 * M)
    b = s.call(None, "mmap", 0, 4 * M, PROT_READ, MAP_SHARED, file=f)
    s.cold(f)
    s.touch("read fault, file not in the page cache", b, False)
    s.call(None, "munmap", b, 4 * M)


def _e_brk(s: Side) -> None:
    s.call(None, "mlockall", MCL_FUTURE)
    base = s.call("brk(0)", "brk", 0)
    s.call("brk(+1M) under MCL_FUTURE", "brk", base + M)
    s.call("brk(-1M) shrink", "brk", base)
    s.call(None, "munlockall")


CATALOGUE: dict[str, Entry] = {e.name: e for e in (
    Entry("populate-anon", "mmap(MAP_PRIVATE|MAP_ANONYMOUS|MAP_POPULATE)", _e_populate_anon),
    Entry("populate-shared-anon", "mmap(MAP_SHARED|MAP_ANONYMOUS|MAP_POPULATE)", _e_populate_shared_anon),
    Entry("populate-file", "mmap(MAP_POPULATE) of a file in the page cache", _e_populate_file),
    Entry("populate-file-cold", "mmap(MAP_POPULATE) of a 32 MiB file with its page cache dropped: "
          "several read-ahead windows", _e_populate_file_cold, tolerance=_READAHEAD),
    Entry("map-locked", "mmap(MAP_LOCKED) of anonymous memory", _e_map_locked),
    Entry("mlock", "mlock() then munlock() of a plain anonymous mapping", _e_mlock),
    Entry("mlockall", "mlockall(MCL_CURRENT|MCL_FUTURE), a plain mmap under MCL_FUTURE, munlockall()",
          _e_mlockall, isolated=True, why_isolated="mlockall() is process-wide", warm_image=True),
    Entry("munmap", "munmap() of a populated anonymous range", _e_munmap),
    Entry("mremap-locked", "mremap() growth (MREMAP_MAYMOVE) of a VM_LOCKED vma", _e_mremap_locked),
    Entry("madvise", "madvise(MADV_POPULATE_READ), (MADV_POPULATE_WRITE), (MADV_DONTNEED)", _e_madvise),
    Entry("mprotect", "mprotect() of a populated anonymous range", _e_mprotect),
    Entry("remap-file-pages", "remap_file_pages() of a shared file mapping, page cache warm", _e_remap_file_pages),
    Entry("remap-file-pages-cold", "remap_file_pages() of 16 MiB of a shared file mapping, page cache dropped",
          _e_remap_file_pages_cold, tolerance=_READAHEAD),
    Entry("madvise-populate-cold", "madvise(MADV_POPULATE_READ) of a 32 MiB file mapping, page cache dropped",
          _e_madvise_populate_cold, tolerance=_READAHEAD),
    Entry("mlock-onfault", "mlock2(MLOCK_ONFAULT), then a write fault in the range", _e_mlock_onfault),
    Entry("mlockall-onfault", "mlockall(MCL_CURRENT|MCL_ONFAULT), munlockall()", _e_mlockall_onfault,
          isolated=True, why_isolated="mlockall() is process-wide"),
    Entry("faults", "user page faults: the first write fault of a fresh anonymous vma (anon_vma set up), "
          "later ones, a file page in the page cache", _e_faults),
    Entry("fault-file-cold", "a read fault on a file page not in the page cache (I/O under the per-VMA lock)",
          _e_fault_file_cold),
    Entry("brk", "brk() growth under mlockall(MCL_FUTURE), then shrink", _e_brk, isolated=True,
          why_isolated="the program break of a Python process belongs to glibc's malloc; mlockall is process-wide"),
)}


def select(names: Optional[Sequence[str]]) -> list[Entry]:
    """Entries by name (all when *names* is empty); ValueError naming the unknown ones."""
    if not names:
        return list(CATALOGUE.values())
    bad = [n for n in names if n not in CATALOGUE]
    if bad:
        raise ValueError(f"unknown entry {', '.join(map(repr, bad))}; known: {', '.join(CATALOGUE)}")
    return [CATALOGUE[n] for n in dict.fromkeys(names)]


# ============================================================================ the model side
class ModelSide(Side):
    """A fresh :class:`~mmlab.mm.mm_struct.MM` of one profile per entry. A compared call's holds are
    the lock records of that call (its call_id) in ``mm.mmap_sem.history``."""

    def __init__(self, kernel: Kernel | str, costs: Optional[Costs] = None) -> None:
        super().__init__()
        from mmlab.mm.mm_struct import MM
        self.mm = MM(kernel, costs or DEFAULT_COSTS)

    def file(self, size: int) -> Any:
        from mmlab.mm.filemap import File
        return File(f"conform-{size >> 20}M.dat", size, cached=True)

    def cold(self, f: Any) -> None:
        f.drop_caches()

    def call(self, label: Optional[str], name: str, *args: int, file: Any = None) -> int:
        mm = self.mm
        n0 = len(mm.mmap_sem.history)
        c0 = len(mm.call_history)
        st = Step(label or "", name, tuple(args))
        try:
            if name == "mmap":
                r = mm.mmap(*args, file, 0) if file is not None else mm.mmap(*args)
            else:
                r = getattr(mm, name)(*args)
            st.ret = int(r)
        except OSError as e:
            st.error = f"errno {e.errno}"
            r = -1
        if label is None:
            if st.error:
                raise RuntimeError(f"model setup call {name}{tuple(args)} failed: {st.error}")
            return r
        calls = [c for c in itertools.islice(mm.call_history, c0, None) if c.name == name]
        if len(calls) != 1:
            raise RuntimeError(f"model: {name} left {len(calls)} call records, not one")
        cid = calls[0].call_id
        recs = sorted((x for x in itertools.islice(mm.mmap_sem.history, n0, None) if x.call_id == cid),
                      key=lambda x: x.acq_ns)
        st.holds = holds_from_model(recs)
        st.hold_us = [x.hold_ns / 1e3 for x in recs]
        self.steps.append(st)
        return r


    def touch(self, label: str, addr: int, write: bool) -> None:
        """do_user_addr_fault(): its holds are the records named "fault" it leaves in the history
        (none when the per-VMA lock served it)."""
        mm = self.mm
        n0 = len(mm.mmap_sem.history)
        st = Step(label, "fault", (addr, int(write)))
        try:
            mm.touch(addr, write)
        except Exception as e:  # SIGSEGV/SIGBUS: the entry's setup did not happen as meant
            st.error = f"{type(e).__name__}: {e}"
        recs = sorted((x for x in itertools.islice(mm.mmap_sem.history, n0, None) if x.call == "fault"),
                      key=lambda x: x.acq_ns)
        st.holds = holds_from_model(recs)
        st.hold_us = [x.hold_ns / 1e3 for x in recs]
        self.steps.append(st)


def run_model(entry: Entry, kernel: Kernel | str, costs: Optional[Costs] = None) -> list[Step]:
    side = ModelSide(kernel, costs)
    entry.run(side)
    return side.steps


def device_readahead_kb(path: str) -> Optional[int]:
    """read_ahead_kb of the block device under *path* (its bdi), or None if it cannot be read."""
    try:
        d = os.stat(path).st_dev
    except OSError:
        return None
    mm = f"{os.major(d)}:{os.minor(d)}"
    for p in (f"/sys/class/bdi/{mm}/read_ahead_kb", f"/sys/dev/block/{mm}/queue/read_ahead_kb",
              f"/sys/dev/block/{mm}/../queue/read_ahead_kb"):
        try:
            with open(p) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            continue
    return None


def model_costs(readahead_kb: Optional[int]) -> Costs:
    """The default costs, with the model's read-ahead window set to the device's (at least a page)."""
    if not readahead_kb:
        return DEFAULT_COSTS
    return dataclasses.replace(DEFAULT_COSTS, readahead_pages=max(1, readahead_kb * 1024 // PAGE_SIZE))


def file_dir() -> str:
    """Where the real side's files live (and whose device's read-ahead the model takes)."""
    return "/var/tmp" if os.path.isdir("/var/tmp") else tempfile.gettempdir()


# ============================================================================ the real side
# syscall numbers for brk, which glibc's wrapper would also record in its own __curbrk
_NR_BRK = {"x86_64": 12, "aarch64": 214}


class RealSide(Side):
    """This machine's kernel, called through libc (mmlab.real.libc) from the calling thread; each
    compared call is stamped with CLOCK_MONOTONIC before and after, and the thread's tid, which is
    how its traced call record is found. Runs inside the conformance child process."""

    def __init__(self, dir: str) -> None:
        super().__init__()
        from mmlab.real.libc import libc
        self.lib = libc()
        self.tid = _gettid()
        self.dir = dir  # the parent's: it removes the directory even if this process is killed
        self.files: list[Any] = []
        self.maps: dict[int, int] = {}  # what is mapped, to undo on failure

    def file(self, size: int) -> Any:
        from mmlab.real.backend import RealFile
        f = RealFile(os.path.join(self.dir, f"conform-{size >> 20}M-{len(self.files)}.dat"), size)
        self.files.append(f)
        return f

    def cold(self, f: Any) -> None:
        f.drop_cache()

    def warm(self, f: Any) -> None:
        os.pread(f.fd, f.size, 0)  # the files here are opened "rw"

    def _issue(self, name: str, args: tuple[int, ...], file: Any) -> int:
        lib = self.lib
        if name == "mmap":
            return lib.mmap(*args, file.fd if file is not None else -1, 0)
        if name == "brk":
            return int(lib._syscall(_NR_BRK[platform.machine()], args[0], 0, 0, 0, 0, 0))
        return int(getattr(lib, name)(*args))

    def call(self, label: Optional[str], name: str, *args: int, file: Any = None) -> int:
        st = Step(label or "", name, tuple(args), tid=self.tid)
        st.t0 = time.monotonic_ns()
        try:
            r = self._issue(name, st.args, file)
            st.ret = r
        except OSError as e:
            st.error = f"errno {e.errno}"
            r = -1
        st.t1 = time.monotonic_ns()
        if st.error is None:
            if name == "mmap":
                self.maps[r] = args[1]
            elif name == "munmap":
                self.maps.pop(args[0], None)
            elif name == "mremap":
                self.maps.pop(args[0], None)
                self.maps[r] = args[2]
        if label is None and st.error:
            raise RuntimeError(f"real setup call {name}{tuple(hex(a) for a in args)} failed: {st.error}")
        if label is not None:
            self.steps.append(st)
        return r

    def touch(self, label: str, addr: int, write: bool) -> None:
        from mmlab.real.backend import peek, poke
        st = Step(label, "fault", (addr, int(write)), tid=self.tid)
        st.t0 = time.monotonic_ns()
        (poke if write else peek)(addr)
        st.t1 = time.monotonic_ns()
        self.steps.append(st)

    def close(self) -> None:
        for a, n in list(self.maps.items()):
            try:
                self.lib.munmap(a, n)
            except OSError:
                pass
        self.maps.clear()
        for f in self.files:
            f.close()


def _gettid() -> int:
    import threading
    return threading.get_native_id()


def child_main(dir: str, names: Sequence[str]) -> int:
    """The conformance child: say "ready", wait for "go" (the parent's capture is on by then), run
    the entries, print one JSON line per entry, exit. Nothing else is written to stdout."""
    out = sys.stdout
    if any(CATALOGUE[n].warm_image for n in names):
        _warm_process_image()
    out.write("ready\n")
    out.flush()
    if sys.stdin.readline().strip() != "go":
        return 2
    for name in names:
        side = RealSide(dir)
        res: dict[str, Any] = {"entry": name}
        try:
            CATALOGUE[name].run(side)
        except Exception as e:  # reported as the entry's error, never as a verdict
            res["error"] = f"{type(e).__name__}: {e}"
        finally:
            side.close()
        res["steps"] = [asdict(s) for s in side.steps]
        out.write(json.dumps(res) + "\n")
        out.flush()
    return 0


# the trace's timestamps may have microsecond resolution (the text reader): a call record's enter
# may then read up to 1 µs before the monotonic stamp taken just before the call
_SLACK_NS = 2_000


def _warm_process_image() -> None:
    """Read every file this process maps into the page cache, so that mlockall(MCL_CURRENT)'s
    populate of the whole process meets no disk wait (the model's process maps no file): the
    entry's setup is then the same on both sides, wherever the machine's page cache stands."""
    paths = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                paths.add(parts[5].strip())
    for p in sorted(paths):
        try:
            with open(p, "rb", buffering=0) as fh:
                while fh.read(1 << 20):
                    pass
        except OSError:
            continue  # deleted or unreadable: mlockall may wait for it; the table will say so


def real_steps_from_trace(tr: Any, steps: list[Step]) -> None:
    """Fill each real step's holds from the trace: its call record is the one of the same tid and
    syscall that entered inside the step's [t0, t1] window (and, where there are several, whose
    first two arguments match); its holds are ``tr.locks_in(call)``. A step whose call was not
    seen, or a trace that lost events, is an error, never an empty sequence."""
    lost = int(getattr(tr, "lost", 0) or 0)
    for st in steps:
        if st.error:
            continue
        if lost:
            st.error = f"the trace lost {lost} events"
            continue
        cands = tr.calls_in(st.tid, st.call, st.t0, st.t1, args=st.args[:2], slack_ns=_SLACK_NS)
        if len(cands) != 1:
            st.error = f"{len(cands)} traced {st.call} calls in the step's window (expected one)"
            continue
        recs = sorted(tr.locks_in(cands[0]), key=lambda r: (r.acq_ns if r.acq_ns >= 0 else r.req_ns))
        st.holds = holds_from_trace(recs)
        st.hold_us = [r.hold_ns / 1e3 for r in recs]


def run_real(entries: Sequence[Entry], progress: Optional[Callable[[str], None]] = None,
             timeout: float = 120.0) -> dict[str, dict[str, Any]]:
    """Run *entries* on this machine's kernel under trace. Returns, per entry name,
    {"steps": [Step], "error": str|None, "lost": int, "counts": {...}, "group": int}: the entries of
    one child process share one trace, so its lost count and counts are the group's (count them once
    per group). A child that hangs raises subprocess.TimeoutExpired; one that does not start,
    RuntimeError."""
    from mmlab.trace import Capture
    groups: list[list[Entry]] = []
    shared = [e for e in entries if not e.isolated]
    if shared:
        groups.append(shared)
    groups += [[e] for e in entries if e.isolated]
    out: dict[str, dict[str, Any]] = {}
    for gi, g in enumerate(groups):
        names = [e.name for e in g]
        if progress:
            progress(", ".join(names))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([p for p in (_root(), env.get("PYTHONPATH", "")) if p])
        tmp = tempfile.mkdtemp(prefix="mmlab-conform-", dir=file_dir())
        proc = subprocess.Popen([sys.executable, "-m", "mmlab.real.conform", "--child", tmp, *names],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                proc.kill()
                err = proc.communicate(timeout=timeout)[1]
                raise RuntimeError(f"the conformance child did not start: {line!r} {err.strip()[-400:]}")
            with Capture(pid=proc.pid, buffer_kb=4096, syscalls=True, faults=True, name="conform") as cap:
                proc.stdin.write("go\n")
                proc.stdin.flush()
                text, err = proc.communicate(timeout=timeout)
            tr = cap.trace
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            shutil.rmtree(tmp, ignore_errors=True)
        got = {}
        for ln in text.splitlines():
            d = json.loads(ln)
            got[d["entry"]] = d
        for n in names:
            d = got.get(n)
            if d is None:
                out[n] = {"steps": [], "error": f"the child exited {proc.returncode} before reporting: "
                          f"{err.strip()[-400:]}", "lost": 0, "group": gi}
                continue
            steps = [Step(**{**s, "args": tuple(s["args"]), "holds": [tuple(h) for h in s["holds"]]})
                     for s in d["steps"]]
            real_steps_from_trace(tr, steps)
            out[n] = {"steps": steps, "error": d.get("error"), "lost": int(getattr(tr, "lost", 0) or 0),
                      "counts": dict(getattr(tr, "counts", {}) or {}), "group": gi}
    return out


def _root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ============================================================================ deliberate differences
@dataclass(frozen=True)
class ProtocolDifference:
    """A deliberate difference between the model's lock protocol and the real kernel's, with its
    reason. ``explains(entry, label, model, real)`` is its own check: it must hold for the observed
    pair of shapes of that call, or the difference excuses nothing."""

    name: str
    reason: str
    explains: Callable[[str, "Step", Shape, Shape], bool]


KNOWN_PROTOCOL: list[ProtocolDifference] = []


# ============================================================================ judging
@dataclass
class Row:
    entry: str
    label: str
    real: str
    model: str
    verdict: str  # agree | tolerance | known | MISMATCH | error
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(entry: Entry, model_steps: list[Step], real_steps: list[Step], real_error: Optional[str] = None,
          model_error: Optional[str] = None,
          known: Sequence[ProtocolDifference] = KNOWN_PROTOCOL) -> list[Row]:
    """One row per compared call: the two shapes and the verdict."""
    rows: list[Row] = []
    if real_error or model_error:
        rows.append(Row(entry.name, "(entry)", "", "", "error",
                        "; ".join(x for x in (f"real: {real_error}" if real_error else "",
                                              f"model: {model_error}" if model_error else "") if x)))
    by_label = {s.label: s for s in real_steps}
    for ms in model_steps:
        rs = by_label.get(ms.label)
        if rs is None:
            if not (real_error or model_error):
                rows.append(Row(entry.name, ms.label, "", str(ms.shape), "error", "not run on the real kernel"))
            continue
        if rs.error or ms.error:
            why = "; ".join(x for x in (f"real: {rs.error}" if rs.error else "",
                                        f"model: {ms.error}" if ms.error else "") if x)
            rows.append(Row(entry.name, ms.label, "" if rs.error else str(rs.shape),
                            "" if ms.error else str(ms.shape), "error", why))
            continue
        v, note = compare_shapes(ms.shape, rs.shape, entry.tolerance)
        verdict = {"agree": "agree", "tolerance": "tolerance", "mismatch": "MISMATCH"}[v]
        if v == "mismatch":
            for k in known:
                if k.explains(entry.name, rs, ms.shape, rs.shape):
                    verdict, note = "known", f"{k.name}: {k.reason}"
                    break
        rows.append(Row(entry.name, ms.label, str(rs.shape), str(ms.shape), verdict, note))
    return rows


def is_reference(kernel: Kernel, release: Optional[str] = None) -> bool:
    """Whether *kernel* behaves as the profile that claims kernel *release* (default this
    machine's; v6.18 on 6.17 and later, ``v6.18+madvise_vma_lock=off+mremap_move_multi_vma=off`` on 6.15-6.16): only its
    table sets the exit status. False when no profile claims the release."""
    ref = reference(release)
    return ref is not None and kernel.switches() == get_kernel(ref).switches()


def conform(kernels: Sequence[str], entries: Sequence[Entry], real: Optional[dict[str, dict[str, Any]]],
            costs: Optional[Costs] = None) -> dict[str, Any]:
    """The report: per kernel, one row per compared call. *real* is run_real()'s result; *costs*
    the model's (model_costs(device_readahead_kb(file_dir())) to match this machine's device)."""
    out: dict[str, Any] = {"kernels": []}
    for spec in kernels:
        k = get_kernel(spec)
        rows: list[Row] = []
        for e in entries:
            merr = None
            try:
                ms = run_model(e, k, costs)
            except Exception as ex:  # a model that cannot run the entry is an error row
                ms, merr = [], f"{type(ex).__name__}: {ex}"
            if real is None:  # the model's side only: its sequences, no verdicts
                rows += [Row(e.name, "(entry)", "", "", "error", f"model: {merr}")] if merr else []
                rows += [Row(e.name, s.label, "", s.error or str(s.shape), "model") for s in ms]
                continue
            r = real.get(e.name, {"steps": [], "error": "not run"})
            rows += judge(e, ms, r["steps"], r.get("error"), merr)
        bad = [x for x in rows if x.verdict in ("MISMATCH", "error")]
        out["kernels"].append({"kernel": k.name, "reference": is_reference(k), "rows": [x.as_dict() for x in rows],
                               "unexplained": len(bad)})
    return out


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        raise SystemExit(child_main(sys.argv[2], sys.argv[3:]))
    raise SystemExit("mmlab.real.conform is a library; run `mmlab conform`")
