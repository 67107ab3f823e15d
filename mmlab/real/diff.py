"""Differential testing: random call sequences on the real kernel and on the model, step by step.

A *case* is a short single-threaded sequence of :class:`Op` (mmap with any combination of the
supported flags, anonymous or of a file, munmap, mprotect, mremap, mlock, mlock2, munlock,
mlockall, munlockall, madvise, remap_file_pages, touches). Each case has its own files (see
:data:`FILES`): a regular file on the disk's file system, written and then dropped from the page
cache, opened twice (read-write and read-only), and a fresh memfd (shmem) of the same size. Addresses in an Op are byte offsets into a small region; the real side runs
them inside a :class:`~mmlab.real.backend.Region` (a reserved area, unmapped inside, with a
PROT_NONE guard page at each end), the model side inside the same layout at ``MODEL_BASE`` of an
``MM("v6.18", layout="bare")``. After every call both sides are observed the same way:

* ``result``  the return value (an address as a region offset, or "outside" when the kernel
  placed the mapping elsewhere) or the errno, or the signal of a touch;
* ``layout``  vma boundaries, protections, and for a file mapping which file and the page offset,
  as /proc/self/maps shows them;
* ``mincore`` residency of every page of every vma, from mincore() (for a file mapping: the
  file's page cache, as Linux reports it);
* ``pte``     whether each page is in the page table (/proc/self/pagemap on the real side);
* ``locked``  per vma: smaps ``Locked`` (kB) and whether VmFlags has ``lo``; and the sum of
  the sizes of the real side's ``lo`` vmas against the model's locked_vm (mm->locked_vm, which
  the model keeps itself: the real VmLck counts the whole interpreter, so the real side is
  read from its vmas; the model side is its accounting, not its vmas).

A field that differs is a mismatch unless a documented difference of :mod:`mmlab.real.known`
explains it (by name, counted, never silently). A case agrees only when no step needed such an
excuse; a case that needed one is counted apart (:func:`tally`). A case that mismatches is shrunk
to the shortest sequence that still disagrees on the same model profile and printed as a
runnable Python snippet.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.util
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from mmlab.clock import ZERO_COSTS
from mmlab.errors import Signal
from mmlab.flags import (MADV_DONTNEED, MADV_POPULATE_READ, MADV_POPULATE_WRITE, MAP_ANONYMOUS,
                         MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_LOCKED, MAP_NONBLOCK, MAP_NORESERVE,
                         MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MAP_SHARED_VALIDATE, MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT,
                         MLOCK_ONFAULT, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, PAGE_SIZE,
                         PROT_NONE, PROT_READ, PROT_WRITE)
from mmlab.mm.filemap import File
from mmlab.mm.mm_struct import MM

__all__ = ["Op", "Obs", "FILES", "FILE_PAGES", "Mismatch", "CaseResult", "Side", "ModelSide", "RealSide",
           "generate_case", "run_case", "shrink", "snippet", "observe", "tally", "fails", "MODEL_BASE",
           "REGION_PAGES", "model_ops_missing"]

P = PAGE_SIZE
MODEL_BASE = 0x1000_0000_0000
REGION_PAGES = 16
OUTSIDE = "outside"

# the files of a case, by the number an mmap Op names in ``file`` (0: anonymous):
# (tag, how): "disk" a regular file opened O_RDWR, the same file again O_RDONLY, "memfd" a memfd
FILES = {1: ("disk", "rw"), 2: ("disk", "r"), 3: ("memfd", "rw")}
FILE_PAGES = 8


# ---------------------------------------------------------------------------- ops
@dataclass(frozen=True)
class Op:
    """One call. Integer args named ``off``/``new_off`` are byte offsets into the region."""

    name: str
    args: tuple[tuple[str, int], ...]

    def arg(self, key: str) -> int:
        return dict(self.args)[key]

    def call(self, mm: Any, base: int, files: Optional[dict[int, Any]] = None) -> Any:
        """Issue this call on *mm* (real or model) whose region starts at *base*; *files* maps
        the numbers of :data:`FILES` to that side's file objects."""
        a = dict(self.args)
        n = self.name
        if n == "mmap":
            addr = base + a["off"] if a["hint"] or a["flags"] & (MAP_FIXED | MAP_FIXED_NOREPLACE) else 0
            if a.get("file"):
                return mm.mmap(addr, a["len"], a["prot"], a["flags"], (files or {})[a["file"]], a["foff"])
            return mm.mmap(addr, a["len"], a["prot"], a["flags"])
        if n == "remap_file_pages":
            return mm.remap_file_pages(base + a["off"], a["len"], a["prot"], a["pgoff"], 0)
        if n == "mremap":
            new = base + a["new_off"] if a["flags"] & MREMAP_FIXED else 0
            return mm.mremap(base + a["off"], a["old_len"], a["new_len"], a["flags"], new)
        if n == "touch":
            return mm.touch(base + a["off"], bool(a["write"]))
        if n in ("mlockall",):
            return mm.mlockall(a["flags"])
        if n == "munlockall":
            return mm.munlockall()
        if n in ("munmap", "mlock", "munlock"):
            return getattr(mm, n)(base + a["off"], a["len"])
        if n == "mprotect":
            return mm.mprotect(base + a["off"], a["len"], a["prot"])
        if n == "mlock2":
            return mm.mlock2(base + a["off"], a["len"], a["flags"])
        if n == "madvise":
            return mm.madvise(base + a["off"], a["len"], a["advice"])
        raise ValueError(f"unknown op {n}")

    def source(self, mm: str = "mm", b: str = "b") -> str:
        """This call as Python source against ``mm`` with region base ``b``."""
        a = dict(self.args)
        n = self.name

        def off(key: str) -> str:
            v = a[key]
            return f"{b} + {v // P}*P" + (f" + {v % P}" if v % P else "") if v else b

        def ln(key: str) -> str:
            v = a[key]
            return f"{v // P}*P" + (f" + {v % P}" if v % P else "") if v >= P else str(v)
        if n == "mmap":
            addr = off("off") if a["hint"] or a["flags"] & (MAP_FIXED | MAP_FIXED_NOREPLACE) else "0"
            fa = f", f{a['file']}, {ln('foff')}" if a.get("file") else ""
            return f"{mm}.mmap({addr}, {ln('len')}, {prot_str(a['prot'])}, {map_str(a['flags'])}{fa})"
        if n == "remap_file_pages":
            return f"{mm}.remap_file_pages({off('off')}, {ln('len')}, {a['prot']}, {a['pgoff']}, 0)"
        if n == "mremap":
            new = f", {off('new_off')}" if a["flags"] & MREMAP_FIXED else ""
            return f"{mm}.mremap({off('off')}, {ln('old_len')}, {ln('new_len')}, {mremap_str(a['flags'])}{new})"
        if n == "touch":
            return f"{mm}.touch({off('off')}, write={bool(a['write'])})"
        if n == "mlockall":
            return f"{mm}.mlockall({mcl_str(a['flags'])})"
        if n == "munlockall":
            return f"{mm}.munlockall()"
        if n in ("munmap", "mlock", "munlock"):
            return f"{mm}.{n}({off('off')}, {ln('len')})"
        if n == "mprotect":
            return f"{mm}.mprotect({off('off')}, {ln('len')}, {prot_str(a['prot'])})"
        if n == "mlock2":
            return f"{mm}.mlock2({off('off')}, {ln('len')}, {'MLOCK_ONFAULT' if a['flags'] == MLOCK_ONFAULT else a['flags']})"
        if n == "madvise":
            adv = {MADV_DONTNEED: "MADV_DONTNEED", MADV_POPULATE_READ: "MADV_POPULATE_READ",
                   MADV_POPULATE_WRITE: "MADV_POPULATE_WRITE"}.get(a["advice"], str(a["advice"]))
            return f"{mm}.madvise({off('off')}, {ln('len')}, {adv})"
        raise ValueError(n)

    def replace(self, **kw: int) -> "Op":
        a = dict(self.args)
        a.update(kw)
        return Op(self.name, tuple(a.items()))


def op(name: str, **args: int) -> Op:
    return Op(name, tuple(args.items()))


def _names(v: int, names: list[tuple[int, str]], zero: str) -> str:
    out = [s for bit, s in names if v & bit]
    rest = v & ~sum(bit for bit, _ in names)
    if rest:
        out.append(hex(rest))
    return " | ".join(out) or zero


def prot_str(p: int) -> str:
    return _names(p, [(PROT_READ, "PROT_READ"), (PROT_WRITE, "PROT_WRITE"), (4, "PROT_EXEC")], "PROT_NONE")


def map_str(f: int) -> str:
    t = {MAP_SHARED: "MAP_SHARED", MAP_PRIVATE: "MAP_PRIVATE",
         MAP_SHARED_VALIDATE: "MAP_SHARED_VALIDATE"}.get(f & 0xF, hex(f & 0xF))
    rest = _names(f & ~0xF, [(MAP_ANONYMOUS, "MAP_ANONYMOUS"), (MAP_FIXED, "MAP_FIXED"),
                             (MAP_FIXED_NOREPLACE, "MAP_FIXED_NOREPLACE"), (MAP_POPULATE, "MAP_POPULATE"),
                             (MAP_LOCKED, "MAP_LOCKED"), (MAP_NORESERVE, "MAP_NORESERVE"),
                             (MAP_NONBLOCK, "MAP_NONBLOCK")], "")
    return t + (" | " + rest if rest else "")


def mremap_str(f: int) -> str:
    return _names(f, [(MREMAP_MAYMOVE, "MREMAP_MAYMOVE"), (MREMAP_FIXED, "MREMAP_FIXED"),
                      (MREMAP_DONTUNMAP, "MREMAP_DONTUNMAP")], "0")


def mcl_str(f: int) -> str:
    return _names(f, [(MCL_CURRENT, "MCL_CURRENT"), (MCL_FUTURE, "MCL_FUTURE"), (MCL_ONFAULT, "MCL_ONFAULT")], "0")


# ---------------------------------------------------------------------------- generation
_MODEL_MODULES = {"mprotect": "mmlab.mm.mprotect", "mremap": "mmlab.mm.mremap"}


def model_ops_missing() -> dict[str, str]:
    """Ops the model cannot run yet (its module is not there), with the module's name."""
    return {n: m for n, m in _MODEL_MODULES.items() if importlib.util.find_spec(m) is None}


_WEIGHTS = {"mmap": 8, "munmap": 3, "mprotect": 4, "mremap": 3, "mlock": 2, "mlock2": 2, "munlock": 2,
            "mlockall": 1, "munlockall": 1, "madvise": 2, "touch": 6, "remap_file_pages": 1}
_PROTS = [PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE, PROT_READ | PROT_WRITE, PROT_WRITE]


def _span(rng: random.Random, pages: int) -> tuple[int, int]:
    """(offset, length) in bytes: mostly whole pages inside the region, now and then odd."""
    n = rng.choice((1, 1, 2, 2, 3, 4, 6))
    start = rng.randrange(0, pages - min(n, pages) + 1)
    off, length = start * P, n * P
    r = rng.random()
    if r < 0.04:
        length -= rng.choice((1, P // 2))  # rounds up to whole pages
    elif r < 0.06:
        off += rng.choice((1, 8))  # unaligned start: EINVAL, or rounded down (mlock)
    elif r < 0.07:
        length = 0
    return off, length


def generate_case(rng: random.Random, steps: int, pages: int = REGION_PAGES,
                  skip: frozenset[str] = frozenset()) -> list[Op]:
    """A random sequence of *steps* calls inside a region of *pages* pages."""
    names = [n for n in _WEIGHTS if n not in skip]
    weights = [_WEIGHTS[n] for n in names]
    out = []
    for _ in range(steps):
        n = rng.choices(names, weights)[0]
        off, length = _span(rng, pages)
        if n == "mmap":
            fno = rng.choice((0, 0, 0, 1, 1, 2, 3, 3))  # half anonymous, half of a file
            if fno:
                flags = rng.choice((MAP_PRIVATE, MAP_PRIVATE, MAP_SHARED, MAP_SHARED, MAP_SHARED_VALIDATE))
            else:
                flags = rng.choice((MAP_PRIVATE, MAP_PRIVATE, MAP_PRIVATE, MAP_SHARED)) | MAP_ANONYMOUS
            place = rng.random()
            if place < 0.6:
                flags |= MAP_FIXED
            elif place < 0.75:
                flags |= MAP_FIXED_NOREPLACE
            for bit, p in ((MAP_POPULATE, 0.3), (MAP_LOCKED, 0.15), (MAP_NORESERVE, 0.2), (MAP_NONBLOCK, 0.1)):
                if rng.random() < p:
                    flags |= bit
            hint = int(place >= 0.75 and rng.random() < 0.9)
            if not fno:
                out.append(op("mmap", off=off, len=length, prot=rng.choice(_PROTS), flags=flags, hint=hint))
                continue
            # offsets mostly inside the file, now and then past its end (a touch there: SIGBUS)
            # or not page-aligned (EINVAL)
            foff = rng.randrange(FILE_PAGES + 2) * P + (rng.choice((1, P // 2)) if rng.random() < 0.03 else 0)
            out.append(op("mmap", off=off, len=length, prot=rng.choice(_PROTS), flags=flags, hint=hint,
                          file=fno, foff=foff))
        elif n == "remap_file_pages":
            out.append(op(n, off=off, len=length, prot=0 if rng.random() < 0.95 else PROT_READ,
                          pgoff=rng.randrange(FILE_PAGES + 1)))
        elif n in ("munmap", "mlock", "munlock"):
            out.append(op(n, off=off, len=length))
        elif n == "mprotect":
            out.append(op(n, off=off, len=length, prot=rng.choice(_PROTS)))
        elif n == "mlock2":
            out.append(op(n, off=off, len=length, flags=rng.choice((0, 0, MLOCK_ONFAULT, MLOCK_ONFAULT, 2))))
        elif n == "mlockall":
            out.append(op(n, flags=rng.choice((MCL_CURRENT, MCL_FUTURE, MCL_CURRENT | MCL_FUTURE,
                                                 MCL_CURRENT | MCL_ONFAULT, MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT,
                                                 MCL_FUTURE | MCL_ONFAULT, MCL_ONFAULT, 0))))
        elif n == "munlockall":
            out.append(op(n))
        elif n == "madvise":
            out.append(op(n, off=off, len=length, advice=rng.choice(
                (MADV_DONTNEED, MADV_DONTNEED, MADV_DONTNEED, MADV_POPULATE_READ, MADV_POPULATE_WRITE))))
        elif n == "touch":
            out.append(op(n, off=rng.randrange(pages) * P + rng.randrange(0, P, 8), write=int(rng.random() < 0.6)))
        elif n == "mremap":
            old = rng.choice((1, 1, 2, 3)) * P
            new = rng.choice((1, 2, 3, 4, 6)) * P
            f = rng.choice((0, 0, MREMAP_MAYMOVE, MREMAP_MAYMOVE | MREMAP_FIXED, MREMAP_MAYMOVE | MREMAP_FIXED,
                            MREMAP_MAYMOVE | MREMAP_DONTUNMAP | MREMAP_FIXED))
            start = (off // P) * P
            noff = rng.randrange(0, pages - new // P + 1) * P if new // P <= pages else 0
            out.append(op(n, off=min(start, (pages - old // P) * P), old_len=old, new_len=new, flags=f,
                          new_off=noff))
    return out


# ---------------------------------------------------------------------------- sides
class Side:
    """One side of the comparison: something with the call surface, a region base, observations."""

    name = ""
    mm: Any
    base: int
    pages: int
    files: dict[int, Any] = {}

    def run(self, o: Op) -> tuple:
        """Issue the call; return the comparable result and clean up a mapping placed outside."""
        try:
            r = o.call(self.mm, self.base, self.files)
        except OSError as e:
            return ("errno", e.errno)
        except Signal as s:
            return ("signal", s.name)
        if o.name in ("mmap", "mremap"):
            lo, hi = self.base - P, self.base + (self.pages + 1) * P
            if lo <= r < hi:
                return ("ok", r - self.base)
            length = o.arg("len") if o.name == "mmap" else o.arg("new_len")
            self.unmap_outside(r, length)
            return ("ok", OUTSIDE)
        return ("ok", 0 if r is None else r)

    def unmap_outside(self, addr: int, length: int) -> None:
        self.mm.munmap(addr, length)

    def vmas(self) -> list[tuple[int, int, str, int, bool, str, int]]:
        """(start, end, perms, Locked kB, lo, file tag, file page offset of start) per vma over
        the region and its guards; the tag is "" and the offset 0 for anonymous memory."""
        raise NotImplementedError

    def mincore(self, start: int, length: int) -> bytes:
        return bytes(self.mm.mincore(start, length))

    def locked_vm_kb(self) -> Optional[int]:
        return None


class ModelSide(Side):
    name = "model"

    def __init__(self, pages: int = REGION_PAGES, kernel: str = "v6.18") -> None:
        self.mm = MM(kernel, ZERO_COSTS, layout="bare")
        # where the real side's region starts within a 2 MiB page table: a Region is reserved at a
        # 2 MiB-aligned hint and starts one guard page in (fault-around windows, THP alignment)
        self.base = MODEL_BASE + P
        self.pages = pages
        disk = File("disk", FILE_PAGES * P, "rw")  # cold: written, then dropped from the page cache
        ro = copy.copy(disk)  # the same file (inode, page cache) through an O_RDONLY fd
        ro.mode = "r"
        self.files = {1: disk, 2: ro, 3: File("memfd", FILE_PAGES * P, "rw", holes=True)}
        # the same reservation the real side makes: reserve, then unmap the inside
        self.mm.mmap(self.base - P, (pages + 2) * P, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED)
        self.mm.munmap(self.base, pages * P)

    def vmas(self) -> list[tuple[int, int, str, int, bool, str, int]]:
        lo, hi = self.base - P, self.base + (self.pages + 1) * P
        out = []
        for s in self.mm.smaps():
            if s["end"] > lo and s["start"] < hi:
                v = self.mm.vmas.vma_lookup(s["start"])
                start = max(s["start"], lo)
                tag = v.file.name if v is not None and v.file is not None else ""
                pgoff = v.file_pgoff(start) if tag else 0
                out.append((start, min(s["end"], hi), _model_perms(self.mm, s["start"]),
                            int(s["Locked"]), "lo" in str(s["VmFlags"]).split(), tag, pgoff))
        return out

    def locked_vm_kb(self) -> Optional[int]:
        return self.mm.vm_lck_kb()


def _model_perms(mm: MM, addr: int) -> str:
    v = mm.vmas.vma_lookup(addr)
    from mmlab.mm.vma import vm_flags_str
    return vm_flags_str(v.flags)[:4] if v is not None else "????"


class RealSide(Side):
    name = "real"

    def __init__(self, region: Any, files: Optional["RealFiles"] = None) -> None:
        self.region = region
        self.mm = region.mm
        self.base = region.base
        self.pages = region.size // P
        self.real_files = files
        self.files = files.by_number if files is not None else {}

    def vmas(self) -> list[tuple[int, int, str, int, bool, str, int]]:
        lo, hi = self.base - P, self.base + (self.pages + 1) * P
        out = []
        for e in self.mm.maps(lo, hi):
            start = max(e.start, lo)
            tag = self.real_files.tag(e.name) if self.real_files is not None else ""
            pgoff = (e.offset + start - e.start) // P if tag else 0
            out.append((start, min(e.end, hi), e.perms, e.locked_kb, "lo" in e.vmflags, tag, pgoff))
        return out


class RealFiles:
    """The real files of one case (see :data:`FILES`): a file on the disk's file system under
    *directory*, written, fsync'ed and dropped from the page cache, opened O_RDWR and O_RDONLY,
    and a memfd ftruncate'd to the same size. Closed (and the file removed) on exit."""

    def __init__(self, directory: str) -> None:
        import os
        import tempfile

        from mmlab.real.backend import RealFile
        fd, path = tempfile.mkstemp(prefix="mmlab-diff-", dir=directory)
        os.close(fd)
        self.disk = RealFile(path, FILE_PAGES * P, "rw")
        self.disk.drop_cache()
        self.ro = os.open(path, os.O_RDONLY)
        self.memfd = os.memfd_create("mmlab-diff")
        os.ftruncate(self.memfd, FILE_PAGES * P)
        self.by_number: dict[int, Any] = {1: self.disk.fd, 2: self.ro, 3: self.memfd}

    def tag(self, maps_name: str) -> str:
        """The tag of :data:`FILES` for the name /proc/self/maps shows; "" for anything else."""
        if maps_name == self.disk.path:
            return "disk"
        if maps_name.startswith("/memfd:mmlab-diff"):
            return "memfd"
        return ""

    def close(self) -> None:
        import os
        for fd in (self.ro, self.memfd):
            os.close(fd)
        self.disk.close()

    def __enter__(self) -> "RealFiles":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def locked_vm_kb(self) -> Optional[int]:
        return None  # VmLck counts the whole interpreter; the sum of `lo` vmas is compared instead


# ---------------------------------------------------------------------------- observation
@dataclass
class Obs:
    """What one side shows after one call, region-relative."""

    result: tuple
    layout: tuple
    mincore: tuple
    locked: tuple
    pte: Optional[tuple] = None  # page-table presence per vma: /proc/self/pagemap, or the model's ptes

    def fields(self) -> dict[str, object]:
        return {"result": self.result, "layout": self.layout, "mincore": self.mincore, "locked": self.locked,
                "pte": self.pte}


def observe(side: Side, result: tuple) -> Obs:
    vmas = side.vmas()
    b = side.base
    layout = tuple(((s - b) // P, (e - b) // P, perms) + ((tag, pgoff) if tag else ())
                   for s, e, perms, _, _, tag, pgoff in vmas)
    mincore = tuple(side.mincore(s, e - s) for s, e, *_ in vmas)
    lo_kb = side.locked_vm_kb()  # the model: its mm->locked_vm
    if lo_kb is None:  # the real side: the sizes of its `lo` vmas
        lo_kb = sum((e - s) >> 10 for s, e, _, _, lo, *_ in vmas if lo)
    locked = (tuple((lk, lo) for _, _, _, lk, lo, *_ in vmas), lo_kb)
    if isinstance(side, RealSide):
        # mincore() of shared memory reports its page cache; pagemap reports the ptes, which
        # is what the model's page table holds (and what MADV_DONTNEED changes)
        from mmlab.real.procfs import read_pagemap_present
        pte = tuple(read_pagemap_present(s, e) for s, e, *_ in vmas)
    else:  # the model's page table (its mincore reports the page cache of file mappings)
        from mmlab.mm.pagetable import PTE_PRESENT
        pt = side.mm.pt
        pte = tuple(bytes(1 if pt.get(a) & PTE_PRESENT else 0 for a in range(s, e, P)) for s, e, *_ in vmas)
    return Obs(result, layout, mincore, locked, pte)


# ---------------------------------------------------------------------------- running
@functools.lru_cache(maxsize=None)
def file_dir() -> str:
    """Where a case's disk file goes: $MMLAB_DIFF_DIR, else the temporary directory when it is
    not tmpfs (a disk file's page cache must be dropped and read back from a disk), else the
    working directory."""
    import os
    import tempfile
    d = os.environ.get("MMLAB_DIFF_DIR")
    if d:
        return d
    t = tempfile.gettempdir()
    try:
        import subprocess
        fs = subprocess.run(["stat", "-f", "-c", "%T", t], capture_output=True, text=True).stdout.strip()
    except OSError:
        fs = ""
    return os.getcwd() if fs in ("tmpfs", "ramfs", "") else t



@dataclass
class Mismatch:
    step: int
    op: Op
    fields: list[str]
    real: Obs
    model: Obs

    def describe(self) -> str:
        lines = [f"step {self.step}: {self.op.source()} -- disagree on {', '.join(self.fields)}"]
        for f in self.fields:
            lines.append(f"    real  {f}: {_fmt(getattr(self.real, f))}")
            lines.append(f"    model {f}: {_fmt(getattr(self.model, f))}")
        return "\n".join(lines)


def _fmt(v: object) -> str:
    if isinstance(v, tuple) and v and isinstance(v[0], bytes):
        return "[" + " ".join(x.hex() for x in v) + "]"
    return repr(v)


@dataclass
class CaseResult:
    ops: list[Op]
    mismatch: Optional[Mismatch] = None
    explained: list[tuple[int, str]] = field(default_factory=list)  # (step, known difference name)
    steps_run: int = 0

    @property
    def agree(self) -> bool:
        return self.mismatch is None

    @property
    def excused(self) -> bool:
        """Agreed only thanks to documented differences."""
        return self.mismatch is None and bool(self.explained)


def tally(results: list[CaseResult]) -> dict[str, int]:
    """Cases that agree with no excuse, that agree only with documented differences, that mismatch."""
    return {"agree": sum(1 for r in results if r.agree and not r.explained),
            "excused": sum(1 for r in results if r.excused),
            "mismatch": sum(1 for r in results if not r.agree)}


ModelAction = Callable[[ModelSide], tuple]


def run_case(ops: list[Op], pages: int = REGION_PAGES, known: Optional[list] = None,
             kernel: str = "v6.18", region_factory: Optional[Callable[[int], Any]] = None) -> CaseResult:
    """Run *ops* on a fresh real region and a fresh model; stop at the first unexplained mismatch."""
    from mmlab.real import known as known_mod
    from mmlab.real.backend import Region

    known = known_mod.KNOWN if known is None else known
    res = CaseResult(list(ops))
    make = region_factory or (lambda n: Region(n * P, keep_reserved=False))
    with make(pages) as reg, RealFiles(file_dir()) as files:
        real = RealSide(reg, files)
        model = ModelSide(pages, kernel)
        actions: list[ModelAction] = []  # what the model side did, step by step (for replays)
        for i, o in enumerate(ops):
            rr = real.run(o)
            act: ModelAction = (lambda oo: (lambda side: side.run(oo)))(o)
            mr = act(model)
            ro, mo = observe(real, rr), observe(model, mr)
            res.steps_run = i + 1
            bad = _differ(ro, mo, o, real, model, known, res, i)
            if not bad:
                actions.append(act)
                continue
            # a documented state difference: the model, doing what Linux does, must then agree
            fixed = None
            for kd in known:
                alt = kd.model_action(o, model, rr, mr) if kd.model_action else None
                if alt is None:
                    continue
                m2 = ModelSide(pages, kernel)
                for a in actions:
                    a(m2)
                r2 = alt(m2)
                mo2 = observe(m2, r2 if r2 is not None else mr)
                if not _differ(ro, mo2, o, real, m2, known, res, i, record=False):
                    fixed = (kd, m2, alt)
                    break
            if fixed is None:
                res.mismatch = Mismatch(i, o, bad, ro, mo)
                return res
            kd, model, alt = fixed
            actions.append(alt)
            res.explained.append((i, kd.name))
    return res


def _differ(ro: Obs, mo: Obs, o: Op, real: Side, model: Side, known: list, res: CaseResult, step: int,
            record: bool = True) -> list[str]:
    """Fields that differ and that no documented observation difference explains."""
    bad = []
    rf, mf = ro.fields(), mo.fields()
    for name in rf:
        if rf[name] == mf[name]:
            continue
        why = next((kd for kd in known if kd.explains_obs and kd.explains_obs(name, o, ro, mo)), None)
        if why is None:
            bad.append(name)
        elif record:
            res.explained.append((step, why.name))
    return bad


# ---------------------------------------------------------------------------- shrinking
def shrink(ops: list[Op], still_fails: Callable[[list[Op]], bool]) -> list[Op]:
    """The shortest sequence found that still disagrees: cut after the failing step, then drop
    calls one at a time (and whole halves first), then simplify lengths to one page."""
    cur = list(ops)
    changed = True
    while changed:
        changed = False
        chunk = max(1, len(cur) // 2)
        while chunk >= 1:
            i = 0
            while i < len(cur):
                cand = cur[:i] + cur[i + chunk:]
                if cand and still_fails(cand):
                    cur = cand
                    changed = True
                else:
                    i += chunk
            chunk //= 2
    for i, o in enumerate(cur):
        for key in ("len", "old_len", "new_len"):
            if key in dict(o.args) and o.arg(key) > P:
                cand = cur[:i] + [o.replace(**{key: P})] + cur[i + 1:]
                if still_fails(cand):
                    cur = cand
                    o = cand[i]
    return cur


def fails(ops: list[Op], pages: int = REGION_PAGES, known: Optional[list] = None, kernel: str = "v6.18") -> bool:
    return not run_case(ops, pages, known, kernel=kernel).agree


# ---------------------------------------------------------------------------- snippet
def snippet(ops: list[Op], pages: int = REGION_PAGES, header: str = "", kernel: str = "v6.18") -> str:
    """A runnable Python script that replays *ops* on the real kernel and on the *kernel* model
    and prints what each side shows after every call."""
    body = "\n".join(f"    yield {o.source()!s}" .replace("yield ", "yield lambda: ") for o in ops)
    return f'''# {header or f"mmlab diff: a sequence on which the real kernel and the {kernel} model disagree"}
# Run it with: PYTHONPATH=. python this_file.py   (Linux, x86-64 or arm64; root for MAP_LOCKED/mlock)
from mmlab import *
from mmlab.errors import Signal
from mmlab.real.backend import Region
from mmlab.real.diff import ModelSide, RealFiles, RealSide, file_dir, observe

P = PAGE_SIZE


def calls(mm, b, f1, f2, f3):
    """f1: the disk file (O_RDWR), f2: the same file O_RDONLY, f3: a memfd."""
{body}


def result(side, call):
    """The call's return value (an address as an offset into the region), errno or signal."""
    try:
        v = call()
    except OSError as e:
        return ("errno", e.errno)
    except Signal as e:
        return ("signal", e.name)
    if isinstance(v, int) and v > 4096:
        inside = side.base - P <= v < side.base + ({pages} + 1) * P
        return ("ok", v - side.base if inside else "outside")
    return ("ok", v or 0)


with Region({pages} * P, keep_reserved=False) as reg, RealFiles(file_dir()) as files:
    sides = [RealSide(reg, files), ModelSide({pages}, {kernel!r})]
    steps = [list(calls(s.mm, s.base, *(s.files[i] for i in (1, 2, 3)))) for s in sides]
    for i in range(len(steps[0])):
        obs = [observe(s, result(s, st[i])) for s, st in zip(sides, steps)]
        print(f"step {{i}}:")
        for s, o in zip(sides, obs):
            print(f"  {{s.name:5}} result={{o.result}} layout={{o.layout}} "
                  f"mincore={{[m.hex() for m in o.mincore]}} locked={{o.locked}}")
        bad = [k for k, v in obs[0].fields().items() if v != obs[1].fields()[k]]
        if bad:
            print("  ^^^ disagree on", bad)
'''
