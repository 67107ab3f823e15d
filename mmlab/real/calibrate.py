"""Measure the cost model's constants on this machine's kernel (``mmlab calibrate``).

Each constant is measured the way the model pays it (mmlab/mm/gup.py, memory.py, filemap.py,
mmap.py), as the wall time of one real system call divided by the pages it handled:

* ``anon_page_ns``: mmap(MAP_PRIVATE|MAP_ANONYMOUS|MAP_POPULATE). In the kernel that is the
  populate under the mmap_lock read hold -- __mm_populate() -> populate_vma_page_range() ->
  handle_mm_fault() per page: page allocation, clear_page(), the PTE (and page-table pages) --
  i.e. the hold a writer waits behind; the model charges it per page inside the same hold.
* ``zap_anon_page_ns`` / ``zap_locked_page_ns`` / ``zap_file_page_ns``: munmap() of a populated
  anonymous / MAP_LOCKED / shared-file mapping (unmap_region() -> zap_pte_range(), plus freeing;
  the mlocked one munlocks each page first), all under the write hold.
* ``file_page_ns``: MAP_SHARED|MAP_POPULATE of a file whose pages are all cached (mapping a
  cached page; the model's per-page cost under the lock).
* ``disk_window_ns``: the same populate from a cold cache (posix_fadvise(POSIX_FADV_DONTNEED)
  before each repeat), minus the cached populate, per read-ahead window.
* ``readahead_pages``: the read_ahead_kb of the file's backing device (bdi).
* Each call is timed by the wall clock and by the calling thread's CPU time; the CPU-bound
  costs keep the CPU time by default (``clock="cpu"``: what the work costs on this hardware,
  unmoved by other tasks sharing the CPU), the wall time with ``clock="wall"``; wall time well
  above the CPU time means the machine was busy, and a note says so.
* ``cow_page_ns``: MAP_PRIVATE|MAP_POPULATE of a cached file with PROT_WRITE (a write fault per
  page: the copy), minus ``file_page_ns``, as the model charges file_page + cow_page.

Each number is the median over ``repeats`` calls per size (after one unmeasured warm-up call, so
memory a hypervisor took back is faulted in first), and the profile's value is the median over
sizes. The spread reported with each is (max - min) / median of every per-page sample, so a
loaded machine shows up in the profile instead of hiding in it. Sizes are checked against
MemAvailable first (at most half of it in use at once); everything mapped is unmapped, also on
an exception or Ctrl-C (Region), and the file is removed.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from mmlab.flags import (MAP_ANONYMOUS, MAP_FIXED, MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE,
                         PROT_READ, PROT_WRITE)

__all__ = ["Sample", "Calibration", "calibrate", "readahead_kb", "DEFAULT_SIZES", "FILE_SIZE"]

DEFAULT_SIZES = (64 << 20, 256 << 20, 1 << 30)
FILE_SIZE = 256 << 20
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


@dataclass
class Sample:
    """Per-page times (ns) of one quantity, by size."""

    name: str
    per_size: dict[int, list[float]] = field(default_factory=dict)

    def add(self, size: int, ns_per_page: float) -> None:
        self.per_size.setdefault(size, []).append(ns_per_page)

    @property
    def median(self) -> float:
        """The median over sizes of each size's median."""
        return statistics.median(statistics.median(v) for v in self.per_size.values())

    @property
    def spread(self) -> float:
        allv = [x for v in self.per_size.values() for x in v]
        m = statistics.median(allv)
        return (max(allv) - min(allv)) / m if m > 0 else 0.0

    def by_size(self) -> dict[int, float]:
        return {s: statistics.median(v) for s, v in sorted(self.per_size.items())}


@dataclass
class Calibration:
    costs: dict[str, int]
    spread: dict[str, float]
    samples: dict[str, Sample]
    kernel: str
    notes: list[str]
    elapsed_s: float
    clock: str = "cpu"

    def measured(self) -> dict[str, object]:
        """Raw medians per size, for the profile's [measured] table and --json."""
        out: dict[str, object] = {}
        for name, s in self.samples.items():
            for size, v in s.by_size().items():
                out[f"{name}_{size >> 20}M_ns_per_page"] = round(v, 1)
        return out


def readahead_kb(path: str) -> Optional[int]:
    """read_ahead_kb of the backing device of *path* (its bdi), None if not found."""
    st = os.stat(path)
    mj, mn = os.major(st.st_dev), os.minor(st.st_dev)
    for p in (f"/sys/class/bdi/{mj}:{mn}/read_ahead_kb", f"/sys/dev/block/{mj}:{mn}/queue/read_ahead_kb",
              f"/sys/dev/block/{mj}:{mn}/../queue/read_ahead_kb"):
        try:
            with open(p) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return None


def _timed(fn: Callable[[], object]) -> int:
    t0 = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0


def _timed2(fn: Callable[[], object]) -> tuple[int, int]:
    """(wall ns, this thread's CPU ns) of one call."""
    c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
    fn()
    t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
    return t1 - t0, c1 - c0


def calibrate(sizes: tuple[int, ...] = DEFAULT_SIZES, repeats: int = 5, file_size: int = FILE_SIZE,
              file_dir: Optional[str] = None, locked: bool = True, files: bool = True, clock: str = "cpu",
              progress: Optional[Callable[[str], None]] = None) -> Calibration:
    """Run the measurements (see the module docstring); raises OSError from the kernel as is.

    Every call is timed twice: wall clock, and the calling thread's CPU time (the kernel's work
    for it: CLOCK_THREAD_CPUTIME_ID counts system time and not the time other tasks, or the
    hypervisor, ran on the CPU). *clock* chooses which the CPU-bound costs keep: ``cpu`` (the
    default) is what the work costs on this hardware whatever else runs -- an idle machine's wall
    time; ``wall`` is what it took at this moment's load. The disk wait is always wall time."""
    from mmlab.real.backend import RealFile, Region

    if clock not in ("cpu", "wall"):
        raise ValueError(f"clock must be 'cpu' or 'wall', not {clock!r}")
    say = progress or (lambda s: None)
    t_start = time.monotonic()
    S: dict[str, Sample] = {}

    def add(name: str, size: int, n: int, wall: int, cpu: int) -> None:
        S.setdefault(name, Sample(name)).add(size, wall / n)
        S.setdefault(name + "_cpu", Sample(name + "_cpu")).add(size, cpu / n)

    notes: list[str] = []
    biggest = max(sizes + ((file_size,) if files else ()))
    with Region(biggest, keep_reserved=False) as reg:
        mm, base = reg.mm, reg.base

        def anon(flags: int, pop: str, zap: str) -> None:
            """Round-robin over the sizes, so a burst of load elsewhere hits every size alike."""
            addr = 0

            def populate(size: int) -> Callable[[], None]:
                def go() -> None:
                    nonlocal addr
                    addr = mm.mmap(base, size, RW, ANON | MAP_FIXED | flags)
                return go

            for i in range(repeats + 1):  # the first round is a warm-up, not kept
                for size in sizes:
                    n = size // PAGE_SIZE
                    # as the latency scenarios time a populate (mmlab.real.scenarios, Target.warm):
                    # right after the same size was populated elsewhere and freed again
                    w = mm.mmap(0, size, RW, ANON | MAP_POPULATE)
                    mm.munmap(w, size)
                    tp, cp = _timed2(populate(size))
                    tz, cz = _timed2(lambda: mm.munmap(addr, size))
                    if i:
                        add(pop, size, n, tp, cp)
                        add(zap, size, n, tz, cz)

        say(f"anonymous populate + munmap, {', '.join(f'{s >> 20}M' for s in sizes)} x {repeats}")
        anon(MAP_POPULATE, "anon_page", "zap_anon_page")
        if locked:
            say(f"MAP_LOCKED populate + munmap, {', '.join(f'{s >> 20}M' for s in sizes)} x {repeats}")
            try:
                anon(MAP_POPULATE | MAP_LOCKED, "locked_page", "zap_locked_page")
            except OSError as e:
                notes.append(f"MAP_LOCKED not measured ({e}); zap_locked_page_ns stays built-in")
                for k in [k for k in S if "locked_page" in k]:
                    del S[k]
        ra_kb: Optional[int] = None
        if files:
            d = file_dir or ("/var/tmp" if os.path.isdir("/var/tmp") else tempfile.gettempdir())
            path = os.path.join(d, f"mmlab-calibrate-{os.getpid()}.dat")
            say(f"writing a {file_size >> 20} MiB file in {d}")
            n = file_size // PAGE_SIZE
            with RealFile(path, file_size) as f:
                ra_kb = readahead_kb(path)
                addr = 0

                def fmap(prot: int, flags: int) -> Callable[[], None]:
                    def go() -> None:
                        nonlocal addr
                        addr = mm.mmap(base, file_size, prot, flags | MAP_FIXED | MAP_POPULATE, f)
                    return go

                say(f"file populate, cold and cached, {file_size >> 20} MiB x {repeats}")
                for i in range(repeats + 1):
                    f.drop_cache()
                    tc, cc = _timed2(fmap(PROT_READ, MAP_SHARED))
                    mm.munmap(addr, file_size)
                    tw, cw = _timed2(fmap(PROT_READ, MAP_SHARED))  # every page cached now
                    tz, cz = _timed2(lambda: mm.munmap(addr, file_size))
                    tcow, ccow = _timed2(fmap(RW, MAP_PRIVATE))
                    mm.munmap(addr, file_size)
                    if i:
                        add("file_cold", file_size, n, tc, cc)
                        add("file_page", file_size, n, tw, cw)
                        add("zap_file_page", file_size, n, tz, cz)
                        add("cow", file_size, n, tcow, ccow)
    costs: dict[str, int] = {}
    spread: dict[str, float] = {}
    sfx = "_cpu" if clock == "cpu" else ""

    def put(field_: str, value: float, s: Sample) -> None:
        costs[field_] = max(0, round(value))
        spread[field_] = round(s.spread, 4)

    def cost(name: str) -> float:
        return S[name + sfx].median

    for name in ("anon_page", "zap_anon_page", "zap_locked_page"):
        if name in S:
            put(name + "_ns", cost(name), S[name + sfx])
    load = S["anon_page"].median / max(1.0, S["anon_page_cpu"].median)
    if load > 1.15:
        notes.append(f"the machine is busy: an anonymous populate took {load:.2f}x its own CPU time (other "
                     "tasks ran on its CPU). " + ("The profile keeps the CPU time: what the work costs on this "
                     "hardware; real runs measured under this load wait longer" if clock == "cpu" else
                     "The profile keeps the wall-clock time (--clock wall): what the work took at this load"))
    if files:
        fp = cost("file_page")
        put("file_page_ns", fp, S["file_page" + sfx])
        put("zap_file_page_ns", cost("zap_file_page"), S["zap_file_page" + sfx])
        put("cow_page_ns", cost("cow") - fp, S["cow" + sfx])
        if ra_kb:
            ra_pages = max(1, ra_kb * 1024 // PAGE_SIZE)
            costs["readahead_pages"] = ra_pages
            # the disk wait: wall time of the cold populate minus the mapping work (a cached populate)
            put("disk_window_ns", (S["file_cold"].median - S["file_page"].median) * ra_pages, S["file_cold"])
        else:
            notes.append("read_ahead_kb of the file's device not found: readahead_pages and disk_window_ns "
                         "stay built-in")
    return Calibration(costs, spread, S, os.uname().release, notes, time.monotonic() - t_start, clock)
