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
import errno
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from mmlab.clock import DEFAULT_COSTS, Clock, Costs, RealClock
from mmlab.harness.race import Aim
from mmlab.real.evidence import Evidence, ModelEvidence, TracedEvidence, WallEvidence, trace_unavailable
from mmlab.current import current, set_task_name
from mmlab.flags import (MADV_DONTNEED, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_LOCKED, MAP_NORESERVE, MAP_POPULATE,
                         MAP_PRIVATE, MAP_SHARED, MCL_CURRENT, MCL_FUTURE, MREMAP_FIXED, MREMAP_MAYMOVE,
                         PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE)

__all__ = ["Target", "RealTarget", "ModelTarget", "POPULATORS", "RACERS", "Racer", "OUTCOMES", "VICTIM_OPS",
           "VERDICT_OPS", "OBSERVE_TRIES", "run_latency_cell", "run_noise_floor", "run_race_cell", "grade", "RoundError", "memory_guard",
           "judge"]

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
    victims: Optional["_Victims"] = None  # the victims of the latency cell running now
    clock: Clock = RealClock()
    """The target's time: every timestamp and delay of a scenario is taken on it. The real
    kernel's is the wall clock (CLOCK_MONOTONIC, as its trace events); a model's is its MM's
    clock, dilated k-fold when it was asked to be (ModelTarget(dilation=k)), so that the
    victims' samples, the populate's time and the lock records are all modelled time."""

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

    def warm(self, size: int) -> None:
        """Make *size* bytes of free memory cheap to allocate again, just before a timed
        populate. A no-op for the model."""

    def resident(self, addr: int, length: int) -> int:
        """Pages of [addr, addr+length) that mincore() reports resident. An OSError (a hole in the
        range, ENOMEM) propagates: a residency that could not be read is not zero."""
        return sum(b & 1 for b in self.mm.mincore(addr, length))

    def mapping(self, addr: int, length: int) -> list["Seg"]:
        """The vmas over [addr, addr+length), clipped to it, in address order."""
        raise NotImplementedError

    def locked(self, addr: int) -> bool:
        raise NotImplementedError

    def unavailable(self, what: str) -> Optional[str]:
        """Why *what* (a populator or racer name) cannot run on this target, or None."""
        return None

    def after_mlockall(self) -> None:
        """mlockall(MCL_CURRENT) also locked the victims' region: unlock and empty it again."""

    lock_waits = False  # latency verdicts from mmap_lock waits in lock records (else wall-clock)

    @contextlib.contextmanager
    def evidence(self, faults: bool = False) -> Iterator["Evidence"]:
        """Where window hits and lock waits come from for a cell on this target (evidence.py);
        *faults*: lock records of user faults too (the latency cell's reader)."""
        yield WallEvidence()

    def close(self) -> None:
        pass


class RealTarget(Target):
    """This machine's kernel, through the real backend."""

    def __init__(self, timing: str = "auto") -> None:
        """*timing*: "auto" (the kernel's lock events when tracing is available) or "wall"."""
        from mmlab.real.backend import RealMM
        if timing not in ("auto", "wall"):
            raise ValueError(f"timing must be auto or wall, not {timing!r}")
        self.timing = timing
        self._why_wall: Optional[str] = None
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
        fd, path = tempfile.mkstemp(prefix=f"populate-{size >> 20}M-", suffix=".dat", dir=self._dir)
        os.close(fd)  # a unique name of its own: no draw from the random module, seeded or not
        return RealFile(path, size)

    def cold(self, f: Any) -> None:
        f.drop_cache()

    def close_file(self, f: Any) -> None:
        f.close()

    def poke(self, addr: int) -> None:
        from mmlab.real.backend import poke
        poke(addr)

    def warm(self, size: int) -> None:
        """Populate *size* bytes of anonymous memory and free them again. In a VM with free page
        reporting (virtio_balloon), memory the guest frees is handed back to the host about two
        seconds later, and the next populate of it takes host faults: measured here, a 256 MiB
        MAP_POPULATE took 81-97 ms back to back and 114-125 ms after 3 s pauses. The research
        pre-warmed before every run, and `mmlab calibrate` times populates back to back; a round
        that follows seconds of trace parsing would otherwise time the host."""
        a = self.mm.mmap(0, size, RW, ANON | MAP_POPULATE)
        self.mm.munmap(a, size)

    def locked(self, addr: int) -> bool:
        from mmlab.real.procfs import read_smaps
        m = read_smaps(addr, addr + P)
        return bool(m) and "lo" in m[0].vmflags

    def mapping(self, addr: int, length: int) -> list["Seg"]:
        from mmlab.real.procfs import read_smaps
        return [Seg(max(e.start, addr), min(e.end, addr + length), os.path.basename(e.name) if e.name else "",
                    "lo" in e.vmflags) for e in read_smaps(addr, addr + length)]

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

    @property
    def lock_waits(self) -> bool:  # type: ignore[override]
        return self.timing_note() is None

    def timing_note(self) -> Optional[str]:
        """None when the kernel's lock events are used, else why timing is wall-clock."""
        if self._why_wall is None:
            self._why_wall = ("timing around syscalls was asked for" if self.timing == "wall"
                              else trace_unavailable() or "")
        return self._why_wall or None

    @contextlib.contextmanager
    def evidence(self, faults: bool = False) -> Iterator["Evidence"]:
        """The kernel's mmap_lock events when tracing is available (and not turned off with
        ``timing="wall"``), else timing around the syscalls, with the reason in ``note``."""
        why = self.timing_note()
        ev: Evidence = WallEvidence(why or "") if why else TracedEvidence("real", faults)
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(ev.around())
        except (OSError, RuntimeError, ImportError) as e:
            ev = WallEvidence(f"tracing did not start: {e}")
        with stack:
            yield ev

    def close(self) -> None:
        try:
            self.mm.release_all()
        finally:
            regions, self._regions = self._regions, []  # closing twice is a no-op
            for r in regions:
                r.close()
            shutil.rmtree(self._dir, ignore_errors=True)


class ModelTarget(Target):
    """A model profile at real-time costs (RealClock), with the same calls."""

    def __init__(self, kernel: str, costs: Costs = DEFAULT_COSTS, lock_waits: bool = False,
                 dilation: float = 1.0) -> None:
        """*lock_waits*: latency verdicts from the model's lock records (as the real side's from
        the kernel's, when it is traced) instead of wall-clock time around the model's calls.
        *dilation* k: the MM's clock pays its costs k times slower and reads real time / k
        (mmlab.clock.RealClock), so the interpreter's time counts 1/k in every time the
        scenarios take on this target (mmlab.harness.dilation)."""
        from mmlab.mm.mm_struct import MM
        self.mm = MM(kernel, costs, RealClock(dilation=dilation, carry_credit=dilation > 1))
        self.clock = self.mm.clock
        self.dilation = dilation
        self.lock_waits = lock_waits
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

    def mapping(self, addr: int, length: int) -> list["Seg"]:
        from mmlab.flags import VM_LOCKED
        return [Seg(max(v.start, addr), min(v.end, addr + length), os.path.basename(v.file) if v.file else "",
                    bool(v.flags & VM_LOCKED)) for v in self.mm.maps() if v.end > addr and v.start < addr + length]

    def unavailable(self, what: str) -> Optional[str]:
        return None  # the model runs every populator and racer

    def after_mlockall(self) -> None:
        if self.reader_base:
            self.mm.munlock(self.reader_base, READER_REGION)
            self.mm.madvise(self.reader_base, READER_REGION, MADV_DONTNEED)

    @contextlib.contextmanager
    def evidence(self, faults: bool = False) -> Iterator["Evidence"]:
        yield ModelEvidence(self.mm)


@dataclass(frozen=True)
class Seg:
    """One vma over a range, as /proc/self/smaps (or the model's maps) shows it."""

    start: int
    end: int
    file: str  # the file's base name; "" for anonymous memory
    locked: bool  # VM_LOCKED ("lo" in VmFlags)


# ============================================================================ populators
@dataclass
class PopState:
    target: int  # where the populate must land: MAP_FIXED_NOREPLACE, so a taken range fails (EEXIST)
    size: int
    file: Any = None
    addr: int = 0  # where it really landed
    error: Optional[str] = None
    error_errno: int = 0
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


# The populating mmaps are MAP_FIXED_NOREPLACE at st.target: a hint is not honoured when the
# range (or, for a file mapping on 6.x, the range padded by 2 MiB for THP alignment) is not free,
# and a populate that landed elsewhere would leave the racer replacing an empty range. NOREPLACE
# also orders the round: if the populate succeeded, its mmap_region() ran before any racer's
# replacement of the range (a replacement first makes it fail with EEXIST).
def _anon(t: Target, st: PopState) -> None:
    st.addr = t.mm.mmap(st.target, st.size, RW, ANON | MAP_POPULATE | MAP_FIXED_NOREPLACE)


def _file_setup(t: Target, st: PopState) -> None:
    if st.file is None:
        st.file = t.file(st.size)
    t.cold(st.file)


def _file(t: Target, st: PopState) -> None:
    st.addr = t.mm.mmap(st.target, st.size, PROT_READ, MAP_SHARED | MAP_POPULATE | MAP_FIXED_NOREPLACE, st.file)


def _locked(t: Target, st: PopState) -> None:
    st.addr = t.mm.mmap(st.target, st.size, RW, ANON | MAP_LOCKED | MAP_FIXED_NOREPLACE)


def _mlockall_setup(t: Target, st: PopState) -> None:
    t.mm.mlockall(MCL_CURRENT | MCL_FUTURE)
    t.after_mlockall()


def _plain(t: Target, st: PopState) -> None:
    st.addr = t.mm.mmap(st.target, st.size, RW, ANON | MAP_FIXED_NOREPLACE)


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
# A replacement is anonymous, private and read-write; ``asks`` holds the mmap flags it was made
# with, so the grade can tell a replacement that asked to be populated (MAP_POPULATE, MAP_LOCKED)
# from one that never did (VM_LOCKED from MCL_FUTURE or mlock shows in the vma itself).
REPLACEMENT_FLAGS = ANON | MAP_FIXED


def _r_prepare_donor(t: Target, st: PopState) -> None:
    """The mremap-fixed donor: an untouched anonymous mapping one guard page past the target."""
    st.extra["donor"] = t.mm.mmap(st.extra["donor_at"], st.size, RW, ANON | MAP_FIXED_NOREPLACE)
    if st.extra["donor"] != st.extra["donor_at"]:
        raise OSError(0, f"the donor landed at {st.extra['donor']:#x}, not {st.extra['donor_at']:#x}")


def _r_munmap_mmap(t: Target, st: PopState) -> None:
    t.mm.munmap(st.target, st.size)
    t.mm.mmap(st.target, st.size, RW, REPLACEMENT_FLAGS)


def _r_mmap_fixed(t: Target, st: PopState) -> None:
    t.mm.mmap(st.target, st.size, RW, REPLACEMENT_FLAGS)


def _r_mremap_fixed(t: Target, st: PopState) -> None:
    t.mm.mremap(st.extra["donor"], st.size, st.size, MREMAP_MAYMOVE | MREMAP_FIXED, st.target)


def _r_mprotect(t: Target, st: PopState) -> None:
    half = (st.size // 2) & ~(P - 1)
    t.mm.mprotect(st.target + half // 2, half, PROT_NONE)
    t.mm.mprotect(st.target + half // 2, half, RW)


@dataclass(frozen=True)
class Racer:
    name: str
    fire: Callable[[Target, PopState], None]
    replaces: bool  # after it, the range holds a new mapping (else: still the populator's own)
    prepare: Callable[[Target, PopState], None] = _nothing
    asks: int = 0  # mmap flags of the replacement that ask for population (MAP_POPULATE|MAP_LOCKED)


RACERS: dict[str, Racer] = {r.name: r for r in (
    Racer("munmap-mmap", _r_munmap_mmap, True),
    Racer("mmap-fixed", _r_mmap_fixed, True),
    Racer("mremap-fixed", _r_mremap_fixed, True, prepare=_r_prepare_donor),
    Racer("mprotect", _r_mprotect, False),
)}


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
        self.lap = threading.Event()  # the reader went once round its region (or failed)
        self.tids: dict[int, str] = {}  # native tid -> "fault" (the reader) or "writer"
        t.victims = self
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
                self.lap.set()
                with contextlib.suppress(threading.BrokenBarrierError):
                    self.ready.abort()
        return run

    def _reader(self) -> None:
        set_task_name("fault")
        self.tids[threading.get_native_id()] = "fault"
        t, base, out = self.t, self.reader_base, self.samples
        n = READER_REGION // P
        now = t.clock.now_ns
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
                self.lap.set()
            if first:
                first = False
                self.ready.wait()

    def _writer(self) -> None:
        set_task_name("writer")
        self.tids[threading.get_native_id()] = "writer"
        mm, out = self.t.mm, self.samples
        now = self.t.clock.now_ns
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
        self.t.victims = None
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
    with _switch_interval(), _round_evidence(t) as ev:
        v = _Victims(t)
        v.start()
        now = t.clock.now_ns
        t0 = now()
        t.clock.wait(ms * 1_000_000)
        t1 = now()
        v.finish()
    kept = [s for s in v.samples if t0 <= s[1] and s[2] <= t1]
    summ, _ = _summary(kept, t0, t1)
    out = {"kernel": t.name, "populator": "none", "size_bytes": 0, "populate_ms": 0.0, "victim": summ,
           "victim_wall": summ, "timing": "wall"}
    locks = _lock_samples(ev, v, kept, t0, t1)
    if locks is not None:
        out["victim"], _ = _summary(locks, 0, 1 << 62)
        out["timing"] = ev.label
    return out


@contextlib.contextmanager
def _round_evidence(t: Target) -> Iterator[Optional[Evidence]]:
    """Lock records of one latency round (faults included) where the target uses them."""
    if not t.lock_waits:
        yield None
        return
    with t.evidence(faults=True) as ev:
        yield ev


def _lock_samples(ev: Optional[Evidence], v: "_Victims", kept: list[tuple[str, int, int]], t0: int,
                  t1: int) -> Optional[list[tuple[str, int, int]]]:
    """The victims' mmap_lock waits in [t0, t1] as samples (op, 0, wait_ns). A fault with no lock
    record took the per-VMA lock (lock_vma_under_rcu, ``per_vma_lock``) and waited for no
    mmap_lock: a zero wait. A writer call always takes mmap_lock for write, so one with no record
    in the window asked for it outside the populate (or its event was lost): it is left out, not
    a zero (see _unobserved). None without records."""
    if ev is None:
        return None
    waits = ev.call_waits(v.tids, t0, t1)
    if waits is None:
        return None
    out: list[tuple[str, int, int]] = []
    for op in VICTIM_OPS:
        ws = waits.get(op, [])
        out += [(op, 0, w) for w in ws]
        if op == "fault":
            n_wall = sum(1 for s in kept if s[0] == op)
            out += [(op, 0, 0)] * max(0, n_wall - len(ws))
    return out


OBSERVE_TRIES = 3
"""A latency round in which a victim op was not observed inside the populate is run again, at most
this many times in all; then the cell's op is "not observed"."""


def _writer_asked(ev: Optional[Evidence], v: "_Victims", pop_tid: int, t0: int, t1: int) -> Optional[bool]:
    """Did the writer wait for mmap_lock while the populate ran: a writer request no later than the
    populating thread's last release in [t0, t1], granted after its first read acquisition (its
    first acquisition, when it takes none for read), or not granted at all? The gaps between a
    file populate's read holds count (a writer that gets in there measures the populate
    yielding); the gap between mmap's write hold and the populate's read hold does not: a writer
    that got its lock there, or just before, then sat descheduled through the populate, measured
    nothing about it. A request stamped before that read acquisition and granted after it does
    count: the writer queued behind the populate's read request (FIFO), or stamped its request
    and lost the CPU (the GIL) before it queued, and then waited out the hold. None without
    records."""
    recs = ev.lock_records() if ev is not None else None
    if recs is None:
        return None
    pop = [r for r in recs if r.tid == pop_tid and t0 <= r.acq_ns <= t1]
    if not pop:
        return False
    lo = min((r.acq_ns for r in pop if r.mode == "R"), default=min(r.acq_ns for r in pop))
    hi = max(r.rel_ns if r.rel_ns >= 0 else t1 for r in pop)
    writers = {tid for tid, role in v.tids.items() if role == "writer"}
    return any(r.tid in writers and r.req_ns <= hi and (r.acq_ns < 0 or r.acq_ns > lo) for r in recs)


def _unobserved(v: "_Victims", kept: list[tuple[str, int, int]],
                locks: Optional[list[tuple[str, int, int]]], asked: Optional[bool] = None) -> list[str]:
    """What a round did not observe inside the populate: "fault" when the reader never ran in it;
    "writer" when the writer never ran in it, or, with lock records, never asked for mmap_lock
    while the populate held it (*asked* False, _writer_asked). The writer is blocked in whichever
    call comes next, so one call kind missing from a round is no miss (see run_latency_cell)."""
    have = {s[0] for s in kept}
    out = [] if "fault" in have else ["fault"]
    if asked is False or (locks is None and not have & set(WRITER_OPS)):
        out.append("writer")
    return out


def run_latency_cell(t: Target, pop: Pop, size: int, rounds: int = 3) -> dict[str, Any]:
    """*rounds* populates of *size* with the victims running; victim ops overlapping the populating
    call are kept. ``worst_us`` per op is the median over rounds of each round's p99.9 of the
    wall-clock samples (see _summary), so one vCPU steal in one round does not make a verdict; of
    lock waits (``timing`` traced or model: ``victim``; wall-clock beside them in ``victim_wall``)
    it is the round's longest, a lock wait having no deschedule of the victim in it. Then *rounds*
    populates alone: ``alone_ms`` and ``slowdown`` (medians), what the victims cost the populate."""
    per_round: dict[str, list[float]] = {op: [] for op in VERDICT_OPS}
    per_round_wall: dict[str, list[float]] = {op: [] for op in VERDICT_OPS}
    all_samples: list[tuple[str, int, int]] = []
    all_wall: list[tuple[str, int, int]] = []
    label = "wall"
    lost = 0
    reruns = 0
    not_observed: set[str] = set()
    seen_ops: set[str] = set()
    pop_tid = threading.get_native_id()  # the populating call runs on this thread
    now = t.clock.now_ns
    pop_ms: list[float] = []
    alone_ms: list[float] = []
    st = PopState(0, size)
    if not t.reader_base:
        # before any populator's setup: mlockall(MCL_FUTURE) would lock (and populate) a region
        # mapped after it, and madvise(MADV_DONTNEED) of a VM_LOCKED range is EINVAL
        t.reader_region()
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
                for attempt in range(OBSERVE_TRIES):
                    t.warm(size)
                    pop.setup(t, st)
                    with _round_evidence(t) as ev:
                        v = _Victims(t)
                        try:
                            v.start()
                            t0 = now()
                            try:
                                pop.populate(t, st)
                            except OSError as e:
                                st.error = f"{pop.name}: {e}"
                            t1 = now()
                        finally:
                            v.finish()
                            pop.teardown(t, st)
                    kept = [s for s in v.samples if not (s[2] < t0 or s[1] > t1)]
                    locks = _lock_samples(ev, v, kept, t0, t1)
                    lost += getattr(ev, "lost", 0)
                    missing = _unobserved(v, kept, locks, _writer_asked(ev, v, pop_tid, t0, t1))
                    if not missing:
                        break
                    reruns += attempt + 1 < OBSERVE_TRIES
                not_observed.update(missing)
                # a writer call kind with no lock record in this round asked outside the populate:
                # left out (_lock_samples), never a zero; a kind no round recorded is not observed
                for op in WRITER_OPS:
                    if op in {x[0] for x in (locks if locks is not None else kept)}:
                        seen_ops.add(op)
                pop_ms.append((t1 - t0) / 1e6)
                all_wall += kept
                _, worst = _summary(kept, t0, t1)
                for op in VERDICT_OPS:
                    if op in worst:
                        per_round_wall[op].append(worst[op])
                if locks is not None:
                    label = ev.label if ev is not None else label
                    all_samples += locks
                    # a lock wait is the lock's alone (no deschedule of the victim is in it): the
                    # round's longest counts, not its p99.9
                    summ_r, _ = _summary(locks, 0, 1 << 62)
                    worst = {op: d["max_us"] for op, d in summ_r.items()}
                for op in VERDICT_OPS:
                    if op in worst:
                        per_round[op].append(worst[op])
            for _ in range(rounds):  # the same populate with no victims: the baseline of its slowdown
                t.warm(size)
                pop.setup(t, st)
                try:
                    a0 = now()
                    try:
                        pop.populate(t, st)
                    except OSError as e:
                        st.error = f"{pop.name}: {e}"
                    alone_ms.append((now() - a0) / 1e6)
                finally:
                    pop.teardown(t, st)
        finally:
            if st.file is not None:
                t.close_file(st.file)
    wall = _cell_summary(all_wall, per_round_wall)
    summ = _cell_summary(all_samples, per_round) if label != "wall" else wall
    if "writer" in not_observed:  # a round that did not test the size: no call kind's worst wait stands
        not_observed.update(WRITER_OPS)
    called = [op for op in WRITER_OPS if op != "mprotect" or t.unavailable("mprotect") is None]
    not_observed.update(op for op in called if op not in seen_ops)
    for op in not_observed:  # its waits are some rounds' only: no worst wait of the cell
        summ[op] = dict(summ[op], observed=False)
    med = sorted(pop_ms)[len(pop_ms) // 2]
    alone = sorted(alone_ms)[len(alone_ms) // 2] if alone_ms else None
    return {"kernel": t.name, "populator": pop.name, "size_bytes": size,
            "populate_ms": med, "alone_ms": alone, "slowdown": med / alone if alone else None,
            "victim": summ, "victim_wall": wall,
            "timing": label, "lost_events": lost, "error": st.error,
            "not_observed": [op for op in VERDICT_OPS if op in not_observed], "reruns_unobserved": reruns}


def _cell_summary(samples: list[tuple[str, int, int]], per_round: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    summ, _ = _summary(samples, 0, 1 << 62)
    for op, ws in per_round.items():
        if op in summ and ws:
            summ[op]["worst_us"] = sorted(ws)[len(ws) // 2]
    for op in VERDICT_OPS:  # zeros shown: a victim that never ran inside the populate says so
        summ.setdefault(op, {"count": 0, "p50_us": 0.0, "p99_us": 0.0, "p999_us": 0.0, "max_us": 0.0})
    return summ


def judge(kernel: str, populator: str, op: str, sizes: list[int], worst_us: list[float],
          populate_us: list[float], floor: dict[str, float]) -> dict[str, Any]:
    """Bounded or unbounded: ``mmlab latency``'s verdict (mmlab.harness.verdict.judge), with the
    same noise-floor rule -- the floor's median wait (*floor*'s ``p50_us``) is the clamp; its p99
    and maximum are only reported -- on the real kernel and on every model profile alike."""
    from mmlab.harness.verdict import judge as latency_judge
    v = latency_judge(kernel, populator, op, sizes, worst_us, populate_us, floor.get("p50_us", 0.0),
                      floor.get("p99_us", 0.0), floor.get("max_us", 0.0))
    return {"kernel": kernel, "populator": populator, "op": op, "growth": v.growth, "slope": v.slope,
            "share": v.share, "bounded": v.bounded, "why": v.why, "worst_us": worst_us, "floor_us": v.floor_us,
            "noise_p99_us": v.noise_p99_us}


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
            missing = [r["size_bytes"] for r in rs if op in r.get("not_observed", ())]
            if missing:  # a size that was not tested is no evidence either way, and no zero wait
                out.append({"kernel": kernel, "populator": popname, "op": op, "bounded": None,
                            "not_observed": True, "sizes": [r["size_bytes"] for r in rs],
                            "why": "not observed at " + ", ".join(f"{b >> 20} MiB" for b in missing)
                            + f": no {op} wait measured inside the populate in {OBSERVE_TRIES} tries of a round"})
                continue
            if not all(r["victim"].get(op, {}).get("count") for r in rs):
                continue  # no samples inside some populate: no evidence either way
            out.append(judge(kernel, popname, op, [r["size_bytes"] for r in rs],
                             [r["victim"][op].get("worst_us", r["victim"][op]["max_us"]) for r in rs],
                             [r["populate_ms"] * 1000 for r in rs], floor["victim"].get(op, {})))
    return out


# ============================================================================ race
OUTCOMES = ("OK", "INTERESTING", "FORBIDDEN", "ERROR")
KEEP_ERRORS = 3  # error messages kept per cell
RACER_FIRST_TRIES = 3  # a round whose racer took the range before the populate mapped it is run again


RACER_FIRST = ("the racer ran before the populate mapped the range (the populate's MAP_FIXED_NOREPLACE failed "
               f"with EEXIST, or the mprotect with ENOMEM), {RACER_FIRST_TRIES} times running")


class RoundError(Exception):
    """The round did not set up what it tests (a populate that failed or landed elsewhere, a
    racer whose call failed, a residency that could not be read): graded ERROR, never OK."""


@dataclass
class RoundMarks:
    """What one round knows about itself, for the window evidence: the two threads' native tids,
    and the interval of each side's calls on the target's clock (Target.clock: CLOCK_MONOTONIC for the real
    kernel, the MM's clock for a model)."""

    round: int
    pop_tid: int
    racer_tid: int
    target: int
    t0: int  # the populating call, from just before to just after
    t1: int
    r0: int  # the racer's call(s)
    r1: int


def grade(t: Target, st: PopState, racer: Racer) -> tuple[str, int, int]:
    """(outcome, wrong pages, own pages) of one round, from what both targets can observe after
    it: which mapping covers the range, whether it asked to be populated, and how many of its pages
    are resident. The same rule as the model's oracle (mmlab.harness.oracle), page by page:

    * pages of the populator's own mapping (no replacement happened: the mprotect racer) are
      the call's own work: OK;
    * a replacement that nobody touched has resident pages only if a populate made them so:
      FORBIDDEN where it never asked to be populated, INTERESTING where it asked (mapped with
      MAP_POPULATE/MAP_LOCKED, or VM_LOCKED from MCL_FUTURE or mlock);
    * none resident: OK.

    The populate was MAP_FIXED_NOREPLACE and succeeded, so the racer's replacement (if the racer
    replaces) came after it and now covers the range. What contradicts that -- a hole in the range,
    a file-backed populator's file still there after a replacement, or gone without one -- and an
    unreadable residency raise RoundError."""
    segs = t.mapping(st.target, st.size)
    covered = sum(s.end - s.start for s in segs)
    if covered != st.size:
        raise RoundError(f"{(st.size - covered) >> 12} of {st.size >> 12} pages of the range are unmapped "
                         f"after the round")
    fname = os.path.basename(st.file.name) if st.file is not None else ""
    if fname and not racer.replaces:
        if any(s.file != fname for s in segs):
            raise RoundError(f"the populator's mapping of {fname} is no longer over the range, and {racer.name} "
                             f"does not replace it")
    if fname and racer.replaces and any(s.file == fname for s in segs):
        raise RoundError(f"{racer.name} succeeded but {fname} is still mapped over the range")
    try:
        n = t.resident(st.target, st.size)
    except OSError as e:
        raise RoundError(f"mincore of the range failed: {e}") from None
    if not racer.replaces:
        return "OK", 0, n
    if n == 0:
        return "OK", 0, 0
    if racer.asks & (MAP_POPULATE | MAP_LOCKED) or any(s.locked for s in segs):
        return "INTERESTING", 0, 0
    return "FORBIDDEN", n, 0


def run_race_cell(t: Target, pop: Pop, racer_name: str, size: int, rounds: int, seed: int) -> dict[str, Any]:
    """*rounds* populates of *size* while a racer replaces (or mprotects) the range at a seeded
    random moment in the first 90% of the populating call, aimed as the model's race aims
    (mmlab.harness.race.Aim: a moving average of the call's duration, seeded by round 0, which
    only measures it).

    Each round is graded by :func:`grade`; one that did not set up what it tests is ERROR --
    except a racer that ran before the populate's mmap (EEXIST, or ENOMEM for mprotect): that
    round is run again with a new moment (``racer_first`` counts them), up to RACER_FIRST_TRIES
    times, then ERROR. Window hits come from lock records where the target has them (the model's
    own; the kernel's mmap_lock events when tracing is available) and from timing around the calls
    otherwise -- ``timing`` says which."""
    rng = random.Random(f"{seed}:{t.name}:{pop.name}:{racer_name}:{size}")
    racer = RACERS[racer_name]
    out = {k: 0 for k in OUTCOMES}
    errors: list[str] = []
    wrong = own = racer_first = 0
    first_forbidden: Optional[dict[str, Any]] = None
    marks: list[RoundMarks] = []
    st = PopState(0, size)
    with _switch_interval(), t.area(3 * size + P) as base, t.evidence() as ev:
        st.target = base
        st.extra["donor_at"] = base + size + P
        est_ns: Optional[int] = None
        aim: Optional[Aim] = None
        try:
            # round -1 warms up (memory the host took back is faulted in again, as the latency
            # cell does), round 0 measures the call without a racer, rounds 1.. race
            for rnd in range(-1, rounds + 1):
                for _try in range(RACER_FIRST_TRIES if rnd > 0 else 1):
                    delay = rng.randrange(0, aim.window_ns) if aim is not None else 0
                    m, err, outcome = _race_round(t, pop, racer, st, rnd, delay)
                    if err != RACER_FIRST or _try == RACER_FIRST_TRIES - 1:
                        break
                    racer_first += 1  # it tested nothing: again, with a new moment
                if aim is not None and not err:
                    aim.update(m.t1 - m.t0)
                if rnd == -1 and not err:
                    continue
                if rnd <= 0:
                    est_ns = m.t1 - m.t0
                    aim = Aim(est_ns)
                    if err:  # the calibration populate failed: every round would
                        out["ERROR"] += rounds
                        errors.append(f"round {rnd} (no racer): {err}")
                        break
                    continue
                if err:
                    out["ERROR"] += 1
                    if len(errors) < KEEP_ERRORS:
                        errors.append(f"round {rnd}: {err}")
                    continue
                assert outcome is not None
                grade_, n, mine = outcome
                out[grade_] += 1
                own += mine
                marks.append(m)
                if grade_ == "FORBIDDEN":
                    wrong += n
                    if first_forbidden is None:
                        first_forbidden = {"round": rnd, "seed": seed, "delay_us": delay // 1000,
                                           "populate_ms": (m.t1 - m.t0) / 1e6, "pages": n,
                                           "racer_start_ms": (m.r0 - m.t0) / 1e6, "racer_end_ms": (m.r1 - m.t0) / 1e6}
        finally:
            if st.file is not None:
                t.close_file(st.file)
    hits = ev.window_hits(marks)
    overlaps = sum(m.t0 <= m.r0 <= m.t1 for m in marks)
    return {"kernel": t.name, "populator": pop.name, "racer": racer.name, "size_bytes": size, "rounds": rounds,
            "window_hits": sum(hits), "window_unknown": ev.missing(marks), "overlaps": overlaps,
            "racer_first": racer_first, "timing": ev.label, "outcomes": out, "errors": errors, "wrong_pages": wrong,
            "own_pages": own, "first_forbidden": first_forbidden, "populate_ms": (est_ns or 0) / 1e6,
            "waits": ev.racer_waits(marks), "timing_note": ev.note, "lost_events": getattr(ev, "lost", 0)}


def _race_round(t: Target, pop: Pop, racer: Racer, st: PopState, rnd: int,
                delay: int) -> tuple[RoundMarks, Optional[str], Optional[tuple[str, int, int]]]:
    """One round: (its marks, why it is an error or None, its grade). Round 0 runs no racer."""
    m = RoundMarks(rnd, threading.get_native_id(), 0, st.target, 0, 0, 0, 0)
    errs: list[BaseException] = []
    go = threading.Barrier(2)
    st.addr = 0
    st.error = None
    st.error_errno = 0

    def racer_thread() -> None:
        set_task_name("racer")
        m.racer_tid = threading.get_native_id()
        try:
            go.wait()
            t.clock.wait(delay)
            m.r0 = t.clock.now_ns()
            try:
                racer.fire(t, st)
            finally:
                m.r1 = t.clock.now_ns()
        except BaseException as e:  # noqa: BLE001 - reported as the round's error
            errs.append(e)

    try:
        pop.setup(t, st)
        if rnd > 0:
            racer.prepare(t, st)
    except OSError as e:
        _race_teardown(t, pop, st)
        return m, f"setup: {e}", None
    th = threading.Thread(target=racer_thread, name="racer", daemon=True) if rnd > 0 else None
    ctx = current()  # the model records the populating call under the task name "populator"
    old_name, ctx.name = ctx.name, "populator"
    try:
        if th is not None:
            th.start()
            go.wait()
        m.t0 = t.clock.now_ns()
        try:
            pop.populate(t, st)
        except OSError as e:
            st.error = f"{pop.name}: {e}"
            st.error_errno = e.errno or 0
        m.t1 = t.clock.now_ns()
        if th is not None:
            th.join(120)
            if th.is_alive():
                raise RuntimeError("the racer did not finish within 120 s")
    finally:
        ctx.name = old_name
    try:
        if st.error:
            if errs == [] and rnd > 0 and st.error_errno == errno.EEXIST:
                return m, RACER_FIRST, None
            return m, f"the populate failed: {st.error}", None
        if st.addr != st.target:
            return m, f"the populate landed at {st.addr:#x}, not at {st.target:#x} where the racer aims", None
        if errs:
            e = errs[0]
            if not isinstance(e, OSError):
                raise e
            if e.errno == errno.ENOMEM and not racer.replaces and rnd > 0:
                return m, RACER_FIRST, None  # the range was not mapped yet: the populate's mmap came later
            return m, f"the racer's {racer.name} failed: {e}", None
        if rnd <= 0:
            return m, None, None
        try:
            return m, None, grade(t, st, racer)
        except RoundError as e:
            return m, str(e), None
    finally:
        _race_teardown(t, pop, st)


def _race_teardown(t: Target, pop: Pop, st: PopState) -> None:
    try:
        pop.teardown(t, st)
    finally:
        with contextlib.suppress(OSError):
            t.mm.munmap(st.extra["donor_at"], st.size)
