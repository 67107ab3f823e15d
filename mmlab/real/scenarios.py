"""The latency and race scenarios, run the same way on the real kernel and on a model profile.

One procedure, two targets: a :class:`RealTarget` issues the calls to this machine's kernel
(through :class:`~mmlab.real.backend.RealMM`, inside reserved regions, with real files whose page
cache is dropped with posix_fadvise), a :class:`ModelTarget` issues the same calls to an
:class:`~mmlab.mm.mm_struct.MM` of a chosen profile at real-time costs. What is measured is what
can be observed on both: wall-clock latency of the victims' calls, and how many pages of a
replacement mapping that nobody touched are resident afterwards (mincore).

* populators (issue 3): populate-anon, populate-file (cold page cache), map-locked, mlockall,
  mremap-locked, remap-file-pages. ``brk`` runs on the model only: moving the real program break
  of a Python process would fight glibc's malloc, which owns it.
* victims: a reader that write-faults fresh pages of a region of its own (``fault``), and a
  writer that maps, mprotects and unmaps one page (``mmap``, ``mprotect``, ``munmap``).
* racers (issue 4): munmap-mmap, mmap-fixed, mremap-fixed (an untouched donor moved onto the
  range), mprotect (a control: PROT_NONE over half the range and back).

Results are plain dicts in the JSON shapes of ``mmlab latency`` and ``mmlab race``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from mmlab.clock import DEFAULT_COSTS, Costs, RealClock
from mmlab.current import set_task_name
from mmlab.flags import (MADV_DONTNEED, MAP_ANONYMOUS, MAP_FIXED, MAP_LOCKED, MAP_NORESERVE, MAP_POPULATE,
                         MAP_PRIVATE, MAP_SHARED, MCL_CURRENT, MCL_FUTURE, MREMAP_FIXED, MREMAP_MAYMOVE,
                         PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE)

__all__ = ["Target", "RealTarget", "ModelTarget", "POPULATORS", "RACERS", "VICTIM_OPS", "VERDICT_OPS", "run_latency_cell",
           "run_noise_floor", "run_race_cell", "memory_guard", "judge"]

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
VICTIM_OPS = ("fault", "mmap", "mprotect", "munmap")
WRITER_OPS = ("mmap", "mprotect", "munmap")
# the verdicts that are compared: the reader's faults, and the writer's write-lock calls pooled.
# A populate's read hold stalls whichever of the writer's calls comes next, so per round the
# stall lands on one of mmap/mprotect/munmap at random; per-op verdicts are shown, not compared.
VERDICT_OPS = ("fault", "writer") + WRITER_OPS
READER_REGION = 16 << 20


# ============================================================================ targets
class Target:
    """Where the scenario runs. ``mm`` has the model's call surface."""

    name = ""
    mm: Any

    @contextlib.contextmanager
    def area(self, size: int) -> Iterator[int]:
        """A free, page-aligned address range of *size* bytes (holes inside, nothing mapped)."""
        raise NotImplementedError
        yield 0

    def file(self, size: int) -> Any:
        raise NotImplementedError

    def cold(self, f: Any) -> None:
        """Drop the file from the page cache."""
        raise NotImplementedError

    def close_file(self, f: Any) -> None:
        pass

    def poke(self, addr: int) -> None:
        self.mm.touch(addr, write=True)

    def resident(self, addr: int, length: int) -> int:
        try:
            return sum(self.mm.mincore(addr, length))
        except OSError:
            return 0

    def locked(self, addr: int) -> bool:
        raise NotImplementedError

    def unavailable(self, what: str) -> Optional[str]:
        """Why *what* (a populator or racer name) cannot run on this target, or None."""
        return None

    def after_mlockall(self) -> None:
        """mlockall(MCL_CURRENT) also locked the victims' region: unlock and empty it again."""

    def close(self) -> None:
        pass


class RealTarget(Target):
    """This machine's kernel, through the real backend."""

    def __init__(self) -> None:
        from mmlab.real.backend import RealMM
        self.mm = RealMM()
        self.name = "real"
        self.release = os.uname().release
        self._dir = tempfile.mkdtemp(prefix="mmlab-real-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None)
        self._regions: list[Any] = []
        self.reader_base = 0

    @contextlib.contextmanager
    def area(self, size: int) -> Iterator[int]:
        from mmlab.real.backend import Region
        with Region(size, keep_reserved=False, mm=self.mm) as reg:
            yield reg.base

    def reader_region(self) -> int:
        from mmlab.real.backend import Region
        reg = Region(READER_REGION, keep_reserved=True, mm=self.mm).__enter__()
        self._regions.append(reg)
        self.mm.mmap(reg.base, READER_REGION, RW, ANON | MAP_NORESERVE | MAP_FIXED)
        self.reader_base = reg.base
        return reg.base

    def file(self, size: int) -> Any:
        from mmlab.real.backend import RealFile
        return RealFile(os.path.join(self._dir, f"populate-{size >> 20}M-{random.randrange(1 << 30)}.dat"), size)

    def cold(self, f: Any) -> None:
        f.drop_cache()

    def close_file(self, f: Any) -> None:
        f.close()

    def poke(self, addr: int) -> None:
        from mmlab.real.backend import poke
        poke(addr)

    def locked(self, addr: int) -> bool:
        from mmlab.real.procfs import read_smaps
        m = read_smaps(addr, addr + P)
        return bool(m) and "lo" in m[0].vmflags

    def unavailable(self, what: str) -> Optional[str]:
        if what == "brk":
            return ("skipped on the real kernel: the program break of a Python process belongs to glibc's "
                    "malloc, and moving it from Python would corrupt the heap")
        if what in ("map-locked", "mlockall", "mremap-locked") and os.geteuid() != 0:
            import resource
            soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
            if soft != resource.RLIM_INFINITY:
                return f"needs CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK (limit here: {soft} bytes)"
        return None

    def after_mlockall(self) -> None:
        if self.reader_base:
            self.mm.munlock(self.reader_base, READER_REGION)
            self.mm.madvise(self.reader_base, READER_REGION, MADV_DONTNEED)

    def close(self) -> None:
        try:
            self.mm.release_all()
        finally:
            for r in self._regions:
                r.close()
            shutil.rmtree(self._dir, ignore_errors=True)


class ModelTarget(Target):
    """A model profile at real-time costs (RealClock), with the same calls."""

    def __init__(self, kernel: str, costs: Costs = DEFAULT_COSTS) -> None:
        from mmlab.mm.mm_struct import MM
        self.mm = MM(kernel, costs, RealClock())
        self.name = self.mm.kernel.name
        self.reader_base = 0
        self._next_area = 0x2000_0000_0000

    @contextlib.contextmanager
    def area(self, size: int) -> Iterator[int]:
        """Far below mmap_base, as on the real side, so the victims' own one-page mmaps (placed
        top-down from mmap_base) never land in it; a PROT_NONE guard page at each end."""
        a = self._next_area
        self._next_area += (size + (4 << 20)) & ~((2 << 20) - 1)
        self.mm.mmap(a, size + 2 * P, PROT_NONE, ANON | MAP_NORESERVE | MAP_FIXED)
        self.mm.munmap(a + P, size)
        try:
            yield a + P
        finally:
            self.mm.munmap(a, size + 2 * P)

    def reader_region(self) -> int:
        self.reader_base = self.mm.mmap(0, READER_REGION, RW, ANON | MAP_NORESERVE)
        return self.reader_base

    def file(self, size: int) -> Any:
        from mmlab.mm.filemap import File
        return File(f"populate-{size >> 20}M.dat", size)

    def cold(self, f: Any) -> None:
        f.drop_caches()

    def locked(self, addr: int) -> bool:
        from mmlab.flags import VM_LOCKED
        v = self.mm.vmas.vma_lookup(addr)
        return v is not None and bool(v.flags & VM_LOCKED)

    def unavailable(self, what: str) -> Optional[str]:
        return None  # the model runs every populator and racer

    def after_mlockall(self) -> None:
        if self.reader_base:
            self.mm.munlock(self.reader_base, READER_REGION)
            self.mm.madvise(self.reader_base, READER_REGION, MADV_DONTNEED)


# ============================================================================ populators
@dataclass
class PopState:
    target: int  # where the populate lands (a hint: mmap may put it elsewhere if the range is taken)
    size: int
    file: Any = None
    addr: int = 0  # where it really landed
    error: Optional[str] = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Pop:
    name: str
    description: str
    setup: Callable[[Target, PopState], None]
    populate: Callable[[Target, PopState], None]
    teardown: Callable[[Target, PopState], None]
    file_backed: bool = False


def _nothing(t: Target, st: PopState) -> None:
    pass


def _unmap(t: Target, st: PopState) -> None:
    t.mm.munmap(st.target, st.size)
    if st.addr and st.addr != st.target:
        t.mm.munmap(st.addr, st.size)


def _anon(t: Target, st: PopState) -> None:
    st.addr = t.mm.mmap(st.target, st.size, RW, ANON | MAP_POPULATE)


def _file_setup(t: Target, st: PopState) -> None:
    if st.file is None:
        st.file = t.file(st.size)
    t.cold(st.file)


def _file(t: Target, st: PopState) -> None:
    st.addr = t.mm.mmap(st.target, st.size, PROT_READ, MAP_SHARED | MAP_POPULATE, st.file)


def _locked(t: Target, st: PopState) -> None:
    st.addr = t.mm.mmap(st.target, st.size, RW, ANON | MAP_LOCKED)


def _mlockall_setup(t: Target, st: PopState) -> None:
    t.mm.mlockall(MCL_CURRENT | MCL_FUTURE)
    t.after_mlockall()


def _plain(t: Target, st: PopState) -> None:
    st.addr = t.mm.mmap(st.target, st.size, RW, ANON)


def _mlockall_teardown(t: Target, st: PopState) -> None:
    t.mm.munlockall()
    _unmap(t, st)


def _mremap_setup(t: Target, st: PopState) -> None:
    t.mm.mmap(st.target, P, RW, ANON | MAP_LOCKED | MAP_FIXED)


def _mremap(t: Target, st: PopState) -> None:
    st.addr = t.mm.mremap(st.target, P, st.size, 0)


def _fremap_setup(t: Target, st: PopState) -> None:
    if st.file is None:
        st.file = t.file(2 * st.size)
    t.cold(st.file)
    t.mm.mmap(st.target, st.size, RW, MAP_SHARED | MAP_FIXED, st.file)


def _fremap(t: Target, st: PopState) -> None:
    t.mm.remap_file_pages(st.target, st.size, 0, st.size >> 12, 0)  # blocking: no MAP_NONBLOCK
    st.addr = st.target


def _brk_setup(t: Target, st: PopState) -> None:
    st.extra["base"] = t.mm.brk(0)
    t.mm.mlockall(MCL_FUTURE)


def _brk(t: Target, st: PopState) -> None:
    t.mm.brk(st.extra["base"] + st.size)
    st.addr = (st.extra["base"] + P - 1) & ~(P - 1)


def _brk_teardown(t: Target, st: PopState) -> None:
    t.mm.munlockall()
    t.mm.brk(st.extra["base"])


POPULATORS: dict[str, Pop] = {p.name: p for p in (
    Pop("populate-anon", "mmap(MAP_POPULATE) of anonymous memory", _nothing, _anon, _unmap),
    Pop("populate-file", "mmap(MAP_SHARED|MAP_POPULATE) of a file, cold page cache", _file_setup, _file, _unmap,
        file_backed=True),
    Pop("map-locked", "mmap(MAP_LOCKED) of anonymous memory", _nothing, _locked, _unmap),
    Pop("mlockall", "mlockall(MCL_CURRENT|MCL_FUTURE), then a plain anonymous mmap", _mlockall_setup, _plain,
        _mlockall_teardown),
    Pop("brk", "brk() growth under mlockall(MCL_FUTURE)", _brk_setup, _brk, _brk_teardown),
    Pop("mremap-locked", "mremap() growth of a VM_LOCKED vma", _mremap_setup, _mremap, _unmap),
    Pop("remap-file-pages", "blocking remap_file_pages() over a shared file mapping, cold cache", _fremap_setup,
        _fremap, _unmap, file_backed=True),
)}


# ============================================================================ racers
def _r_munmap_mmap(t: Target, st: PopState) -> None:
    t.mm.munmap(st.target, st.size)
    t.mm.mmap(st.target, st.size, RW, ANON | MAP_FIXED)


def _r_mmap_fixed(t: Target, st: PopState) -> None:
    t.mm.mmap(st.target, st.size, RW, ANON | MAP_FIXED)


def _r_mremap_fixed(t: Target, st: PopState) -> None:
    t.mm.mremap(st.extra["donor"], st.size, st.size, MREMAP_MAYMOVE | MREMAP_FIXED, st.target)


def _r_mprotect(t: Target, st: PopState) -> None:
    half = (st.size // 2) & ~(P - 1)
    t.mm.mprotect(st.target + half // 2, half, PROT_NONE)
    t.mm.mprotect(st.target + half // 2, half, RW)


RACERS: dict[str, Callable[[Target, PopState], None]] = {
    "munmap-mmap": _r_munmap_mmap, "mmap-fixed": _r_mmap_fixed, "mremap-fixed": _r_mremap_fixed,
    "mprotect": _r_mprotect,
}


# ============================================================================ memory guard
def memory_guard(need_bytes: int, what: str) -> Optional[str]:
    """None if *need_bytes* fit in half of MemAvailable, else why the run is refused."""
    from mmlab.real.procfs import read_mem_available
    avail = read_mem_available()
    if need_bytes > avail // 2:
        return (f"{what} needs about {need_bytes >> 20} MiB but MemAvailable is {avail >> 20} MiB "
                f"(at most half of it may be used); choose smaller sizes")
    return None


# ============================================================================ latency
def _hist() -> Any:
    from hdrh.histogram import HdrHistogram
    return HdrHistogram(1, 3_600_000_000, 3)  # 1 us .. 1 h, 3 significant digits


class _Victims:
    """The reader and writer threads; samples are (op, start_ns, end_ns)."""

    def __init__(self, t: Target) -> None:
        self.t = t
        self.stop = threading.Event()
        self.ready = threading.Barrier(3)
        self.samples: list[tuple[str, int, int]] = []
        self.errors: list[BaseException] = []
        self.reader_base = t.reader_base or t.reader_region()
        self.mprotect = t.unavailable("mprotect") is None  # the model may not have mprotect yet
        self.threads = [threading.Thread(target=self._guard(self._reader), name="victim-fault", daemon=True),
                        threading.Thread(target=self._guard(self._writer), name="victim-writer", daemon=True)]

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported by the runner
                self.errors.append(e)
                self.stop.set()
                with contextlib.suppress(threading.BrokenBarrierError):
                    self.ready.abort()
        return run

    def _reader(self) -> None:
        set_task_name("fault")
        t, base, out = self.t, self.reader_base, self.samples
        n = READER_REGION // P
        now = time.perf_counter_ns
        i = 0
        first = True
        while not self.stop.is_set():
            a = now()
            t.poke(base + i * P)
            out.append(("fault", a, now()))
            i += 1
            if i == n:
                t.mm.madvise(base, READER_REGION, MADV_DONTNEED)
                i = 0
            if first:
                first = False
                self.ready.wait()

    def _writer(self) -> None:
        set_task_name("writer")
        mm, out = self.t.mm, self.samples
        now = time.perf_counter_ns
        first = True
        while not self.stop.is_set():
            a = now()
            x = mm.mmap(0, P, RW, ANON | MAP_NORESERVE)
            b = now()
            if self.mprotect:
                mm.mprotect(x, P, PROT_READ)
            c = now()
            mm.munmap(x, P)
            d = now()
            out += (("mmap", a, b), ("mprotect", b, c), ("munmap", c, d)) if self.mprotect else \
                (("mmap", a, b), ("munmap", c, d))
            if first:
                first = False
                self.ready.wait()

    def start(self) -> None:
        for th in self.threads:
            th.start()
        try:
            self.ready.wait()
        except threading.BrokenBarrierError:
            self.finish()
            raise

    def finish(self) -> None:
        self.stop.set()
        for th in self.threads:
            th.join(60)
        if any(th.is_alive() for th in self.threads):
            raise RuntimeError("a victim thread did not stop within 60 s")
        if self.errors:
            raise self.errors[0]


def _summary(samples: list[tuple[str, int, int]], lo: int, hi: int) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """HDR summary per op (and for the pooled ``writer``) of the samples overlapping [lo, hi],
    and each op's p99.9 in us -- the round's worst wait that a vCPU steal or a deschedule of
    the victim thread cannot make: a thread stalled on the lock is blocked, so it has few
    samples in the window and its stall is the p99.9; a thread descheduled now and then has
    thousands of ordinary samples around the outlier."""
    hists: dict[str, Any] = {}
    worst: dict[str, float] = {}
    for op, a, b in samples:
        if b < lo or a > hi:
            continue
        us = max(1, (b - a) // 1000)
        for name in (op, "writer") if op in WRITER_OPS else (op,):
            h = hists.get(name)
            if h is None:
                h = hists[name] = _hist()
            h.record_value(us)
            worst[name] = max(worst.get(name, 0.0), (b - a) / 1000)
    out = {op: {"count": h.get_total_count(), "p50_us": float(h.get_value_at_percentile(50)),
                "p99_us": float(h.get_value_at_percentile(99)), "p999_us": float(h.get_value_at_percentile(99.9)),
                "max_us": worst[op]} for op, h in hists.items()}
    return out, {op: d["p999_us"] for op, d in out.items()}


@contextlib.contextmanager
def _switch_interval() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # as the measurements of research/real-kernel-6.18.md did
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def run_noise_floor(t: Target, ms: int = 200) -> dict[str, Any]:
    """The victims alone for *ms*: what the interpreter and the machine cost without a populator."""
    with _switch_interval():
        v = _Victims(t)
        v.start()
        t0 = time.perf_counter_ns()
        RealClock().wait(ms * 1_000_000)
        t1 = time.perf_counter_ns()
        v.finish()
    summ, worst = _summary(v.samples, t0, t1)
    return {"kernel": t.name, "populator": "none", "size_bytes": 0, "populate_ms": 0.0, "victim": summ}


def run_latency_cell(t: Target, pop: Pop, size: int, rounds: int = 3) -> dict[str, Any]:
    """*rounds* populates of *size* with the victims running, then *rounds* alone (``alone_ms``,
    ``slowdown``: medians); victim ops overlapping the populating call are kept. ``worst_us`` per op is the median over rounds of each round's p99.9 (see
    _summary), so one vCPU steal in one round does not make a verdict."""
    per_round: dict[str, list[float]] = {op: [] for op in VERDICT_OPS}
    all_samples: list[tuple[str, int, int]] = []
    pop_ms: list[float] = []
    alone_ms: list[float] = []
    st = PopState(0, size)
    with _switch_interval(), t.area(2 * size) as base:
        st.target = base
        try:
            # one untimed populate first: memory the host took back (free-page reporting) is
            # faulted in again, as the research pre-warmed before every run
            pop.setup(t, st)
            try:
                pop.populate(t, st)
            except OSError as e:
                st.error = f"{pop.name}: {e}"
            pop.teardown(t, st)
            for _ in range(rounds):
                pop.setup(t, st)
                v = _Victims(t)
                try:
                    v.start()
                    t0 = time.perf_counter_ns()
                    try:
                        pop.populate(t, st)
                    except OSError as e:
                        st.error = f"{pop.name}: {e}"
                    t1 = time.perf_counter_ns()
                finally:
                    v.finish()
                    pop.teardown(t, st)
                pop_ms.append((t1 - t0) / 1e6)
                kept = [s for s in v.samples if not (s[2] < t0 or s[1] > t1)]
                all_samples += kept
                _, worst = _summary(kept, t0, t1)
                for op in VERDICT_OPS:
                    if op in worst:
                        per_round[op].append(worst[op])
            for _ in range(rounds):  # the same populate with no victims: the baseline of its slowdown
                pop.setup(t, st)
                try:
                    a0 = time.perf_counter_ns()
                    try:
                        pop.populate(t, st)
                    except OSError as e:
                        st.error = f"{pop.name}: {e}"
                    alone_ms.append((time.perf_counter_ns() - a0) / 1e6)
                finally:
                    pop.teardown(t, st)
        finally:
            if st.file is not None:
                t.close_file(st.file)
    summ, _ = _summary(all_samples, 0, 1 << 62)
    for op, ws in per_round.items():
        if op in summ and ws:
            summ[op]["worst_us"] = sorted(ws)[len(ws) // 2]
    for op in VERDICT_OPS:  # zeros shown: a victim that never ran inside the populate says so
        summ.setdefault(op, {"count": 0, "p50_us": 0.0, "p99_us": 0.0, "p999_us": 0.0, "max_us": 0.0})
    med = sorted(pop_ms)[len(pop_ms) // 2]
    alone = sorted(alone_ms)[len(alone_ms) // 2] if alone_ms else None
    return {"kernel": t.name, "populator": pop.name, "size_bytes": size,
            "populate_ms": med, "alone_ms": alone, "slowdown": med / alone if alone else None,
            "victim": summ, "error": st.error}


def judge(kernel: str, populator: str, op: str, sizes: list[int], worst_us: list[float],
          populate_us: list[float], floor_us: float) -> dict[str, Any]:
    """Bounded or unbounded, from how the worst wait grows with the size. Uses the verdict of
    ``mmlab latency`` (mmlab.harness.verdict) where it is installed; until then the same rule:
    unbounded iff the log-log slope of the worst wait against size is >= 0.5, the growth is at
    least sqrt(size ratio), and the worst wait is at least a quarter of the populate time."""
    try:
        from mmlab.harness.verdict import judge as latency_judge  # type: ignore[import-not-found]
    except ImportError:
        latency_judge = None
    if latency_judge is not None:
        v = latency_judge(kernel, populator, op, sizes, worst_us, populate_us, floor_us)
        return {"kernel": kernel, "populator": populator, "op": op, "growth": v.growth, "slope": v.slope,
                "bounded": v.bounded, "why": v.why, "worst_us": worst_us}
    import math
    floor = max(floor_us, 1.0)
    w = [max(x, floor) for x in worst_us]
    lx = [math.log(s) for s in sizes]
    ly = [math.log(x) for x in w]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((x - mx) ** 2 for x in lx) or 1.0
    slope = sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / den
    growth = w[-1] / w[0]
    share = worst_us[-1] / populate_us[-1] if populate_us[-1] > 0 else 0.0
    unbounded = slope >= 0.5 and growth >= (sizes[-1] / sizes[0]) ** 0.5 and share >= 0.25
    why = (f"x{growth:.1f} over x{sizes[-1] / sizes[0]:.0f} size, slope {slope:.2f}, "
           f"{share:.0%} of the populate")
    return {"kernel": kernel, "populator": populator, "op": op, "growth": growth, "slope": slope,
            "bounded": not unbounded, "why": why, "worst_us": worst_us}


def verdicts(runs: list[dict[str, Any]], floor: dict[str, Any]) -> list[dict[str, Any]]:
    """One verdict per (kernel, populator, victim op) over the sizes measured."""
    out = []
    keys = sorted({(r["kernel"], r["populator"]) for r in runs})
    for kernel, popname in keys:
        rs = sorted((r for r in runs if r["kernel"] == kernel and r["populator"] == popname),
                    key=lambda r: r["size_bytes"])
        if len({r["size_bytes"] for r in rs}) < 2:
            continue
        for op in VERDICT_OPS:
            if not all(r["victim"].get(op, {}).get("count") for r in rs):
                continue  # no samples inside some populate: no evidence either way
            fl = floor["victim"].get(op, {}).get("p999_us", 1.0)
            out.append(judge(kernel, popname, op, [r["size_bytes"] for r in rs],
                             [r["victim"][op].get("worst_us", r["victim"][op]["max_us"]) for r in rs],
                             [r["populate_ms"] * 1000 for r in rs], fl))
    return out


# ============================================================================ race
def run_race_cell(t: Target, pop: Pop, racer: str, size: int, rounds: int, seed: int) -> dict[str, Any]:
    """*rounds* populates of *size* while a racer replaces (or mprotects) the range at a seeded
    random moment inside the populate window. Outcome per round, from what is observable on both
    targets -- resident pages of the never-touched replacement: none is OK; some, where the
    replacement asked to be populated itself (locked under MCL_FUTURE), is INTERESTING; some
    where it did not is FORBIDDEN (a replacement got populated)."""
    rng = random.Random(f"{seed}:{t.name}:{pop.name}:{racer}:{size}")
    out = {"OK": 0, "INTERESTING": 0, "FORBIDDEN": 0}
    wrong = 0
    hits = 0
    first_forbidden: Optional[dict[str, Any]] = None
    st = PopState(0, size)
    fire = RACERS[racer]
    with _switch_interval(), t.area(3 * size + P) as base:
        st.target = base
        donor_at = base + size + P
        est_ns: Optional[int] = None
        try:
            for rnd in range(rounds + 1):  # round 0 only measures the populate window
                pop.setup(t, st)
                if racer == "mremap-fixed":
                    st.extra["donor"] = t.mm.mmap(donor_at, size, RW, ANON | MAP_FIXED)
                times: dict[str, int] = {}
                go = threading.Barrier(2)
                errs: list[BaseException] = []
                delay = rng.randrange(0, max(1, int(est_ns * 0.9))) if est_ns else 0

                def racer_thread() -> None:
                    set_task_name("racer")
                    try:
                        go.wait()
                        RealClock().wait(delay)
                        times["r0"] = time.perf_counter_ns()
                        fire(t, st)
                        times["r1"] = time.perf_counter_ns()
                    except BaseException as e:  # noqa: BLE001
                        errs.append(e)
                th = threading.Thread(target=racer_thread, name="racer", daemon=True) if rnd else None
                if th is not None:
                    th.start()
                    go.wait()
                t0 = time.perf_counter_ns()
                try:
                    pop.populate(t, st)
                except OSError as e:
                    st.error = f"{pop.name}: {e}"
                t1 = time.perf_counter_ns()
                if th is not None:
                    th.join(120)
                    if th.is_alive():
                        raise RuntimeError("the racer did not finish within 120 s")
                try:
                    if rnd == 0:
                        est_ns = t1 - t0
                        continue
                    if errs:
                        raise errs[0]
                    hit = t0 <= times["r0"] <= t1
                    hits += hit
                    if racer == "mprotect":
                        out["OK"] += 1
                        continue
                    n = t.resident(st.target, size)
                    if n == 0:
                        out["OK"] += 1
                    elif t.locked(st.target):
                        out["INTERESTING"] += 1
                    else:
                        out["FORBIDDEN"] += 1
                        wrong += n
                        if first_forbidden is None:
                            first_forbidden = {"round": rnd, "seed": seed, "delay_us": delay // 1000,
                                               "populate_ms": (t1 - t0) / 1e6, "pages": n,
                                               "racer_start_ms": (times["r0"] - t0) / 1e6,
                                               "racer_end_ms": (times["r1"] - t0) / 1e6}
                finally:
                    pop.teardown(t, st)
                    if racer == "mremap-fixed":
                        with contextlib.suppress(OSError):
                            t.mm.munmap(donor_at, size)
        finally:
            if st.file is not None:
                t.close_file(st.file)
    return {"kernel": t.name, "populator": pop.name, "racer": racer, "size_bytes": size, "rounds": rounds,
            "window_hits": hits, "outcomes": out, "wrong_pages": wrong, "first_forbidden": first_forbidden,
            "populate_ms": (est_ns or 0) / 1e6}
