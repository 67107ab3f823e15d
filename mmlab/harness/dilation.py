"""Time dilation: how much slower than the real clock a run's modelled time must go.

The model charges kernel work to the clock (:meth:`mmlab.clock.Clock.spend`), but everything else
a task does -- the interpreter running the model's Python, the GIL, thread wake-ups -- also takes
real time, and on an undilated :class:`~mmlab.clock.RealClock` that time counts as kernel time:
a one-page mmap+munmap pair costs ~50 us of CPython where this machine's kernel takes ~9 us, so
each yield of a bounded populate to a writer costs the populate several times what it would in
a kernel.

A clock dilated k-fold pays every modelled cost k times over in real time and reports real time
divided by k. Modelled costs keep their size; the interpreter's share of every reported time is
divided by k. :func:`measure_call_overhead_ns` measures the interpreter's per-call overhead
(a one-page mmap+munmap pair on a zero-cost MM, median of several trials) and
:func:`measure_handoff_ns` the host's thread hand-off latency (waking a blocked thread: every
yield of a bounded populate pays a few of them, and on a loaded machine they are hundreds of
microseconds); :func:`choose_dilation` picks k so that the *residual* -- overhead / k per call --
is at most ``target_ns`` of modelled time (``RESIDUAL_TARGET_NS`` at time scale 1, scaled with it)
and a hand-off at most ``HANDOFF_TARGET_NS``. The host's load moves while a report runs, so an
automatic k is measured again before every run (``Dilation.recalibrated``). Every report prints
the residual.

``--time-scale s`` multiplies the modelled costs by s. The residual does not shrink with them, so
its share of a modelled cost grows by 1/s; :func:`choose_dilation` scales the target with s, which
raises k by 1/s and leaves the wall time of a run where it was. ``--quick`` asks for a larger
targets instead (eight times larger, and a floor on k eight times lower: a shorter run).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from mmlab.clock import ZERO_COSTS, Costs
from mmlab.flags import MAP_ANONYMOUS, MAP_NORESERVE, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE

__all__ = ["Dilation", "measure_call_overhead_ns", "measure_handoff_ns", "choose_dilation", "RESIDUAL_TARGET_NS",
           "HANDOFF_TARGET_NS", "K_MIN_AUTO", "K_MAX"]

HANDOFF_TARGET_NS = 10_000
"""One yield's real overhead (:func:`measure_handoff_ns`: drop the lock to a queued writer, the
writer runs an empty critical section, re-take) allowed into modelled time: two wake-ups and a
hand-off each way, what a kernel rwsem yield costs, about ten microseconds."""
RESIDUAL_TARGET_NS = 1_000
"""Interpreter time per syscall allowed into modelled time at time scale 1: a fifth of what this
machine's kernel takes for a one-page mmap or munmap (~4.5 us, research/real-kernel-6.18.md)."""
K_MIN_AUTO = 32.0
"""An automatic k is at least this (divided by how much --residual-us loosens the targets): the
calibration sees a few tens of milliseconds, and on a shared machine the load moves within a run;
a scheduling hiccup of 30 ms then counts at most ~1 ms."""
K_MAX = 64.0
"""Dilation ceiling: beyond it a 1 GiB run would take minutes; the residual is reported instead."""


@dataclass(frozen=True)
class Dilation:
    k: float                 # real ns per modelled ns
    overhead_ns: float       # measured interpreter time per call (real ns)
    target_ns: float         # residual asked for (modelled ns per call)
    burn_ns: int = 0         # the test switch's extra spin per syscall entry (included in overhead)
    handoff_ns: float = 0.0  # measured thread hand-off (wake-up) latency (real ns); 0: not measured
    handoff_target_ns: float = HANDOFF_TARGET_NS
    auto: bool = False       # k is recalibrated before every run (the host's load moves)
    k_min: float = 1.0       # an automatic k's floor

    @property
    def residual_ns(self) -> float:
        """Interpreter time per call that still counts as modelled time."""
        return self.overhead_ns / self.k

    @property
    def handoff_residual_ns(self) -> float:
        """A thread hand-off's real latency, as modelled time."""
        return self.handoff_ns / self.k

    def text(self) -> str:
        burn = f", burning {self.burn_ns / 1e3:g} us per syscall entry" if self.burn_ns else ""
        ho = (f"; a yield's overhead {self.handoff_ns / 1e3:.0f} us measured -> {self.handoff_residual_ns / 1e3:.2f} us"
              if self.handoff_ns else "")
        return (f"time dilation k={self.k:.1f}{' (recalibrated for each size)' if self.auto else ''}: "
                f"interpreter {self.overhead_ns / 1e3:.1f} us/call measured{burn}; "
                f"residual {self.residual_ns / 1e3:.2f} us of modelled time per call "
                f"(target {self.target_ns / 1e3:.2f} us){ho}")

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = asdict(self)
        d["residual_ns"] = self.residual_ns
        d["handoff_residual_ns"] = self.handoff_residual_ns
        return d

    def recalibrated(self) -> "Dilation":
        """For an auto dilation, k measured again now (same targets); else itself."""
        if not self.auto:
            return self
        return _auto(self.target_ns, self.handoff_target_ns, self.burn_ns, k_min=self.k_min)


def measure_handoff_ns(cycles: int = 15, hold_ns: int = 1_000_000) -> float:
    """The real time one yield of a populate costs beyond its work, on this host at its load now:
    a thread holds a recorded mmap_sem for read and sleeps *hold_ns* (as a populate pays its
    costs), drops the lock to a writer thread queued meanwhile, and takes it again. The mean of
    (re-acquired - slept - hold_ns): the sleep's overshoot (timer slack, waiting for a CPU), two
    thread wake-ups, the writer's empty critical section and the GIL. The mean, not the median:
    a populate's slowdown is the sum over its yields. Tens of microseconds on an idle machine,
    a millisecond on a loaded one."""
    from mmlab.clock import RealClock
    from mmlab.current import set_task_name
    from mmlab.locking.rwsem import MmapSem

    clock = RealClock()
    sem = MmapSem(clock, name="handoff", history=16)
    stop = threading.Event()
    queued = threading.Event()

    def writer() -> None:
        set_task_name("mmlab-handoff-writer")
        while not stop.is_set():
            queued.set()
            sem.down_write()
            sem.up_write()
            queued.clear()
            clock.wait(hold_ns // 4)  # the writer's next call comes a little later

    set_task_name("mmlab-handoff")
    t = threading.Thread(target=writer, name="mmlab-handoff-writer", daemon=True)
    gaps = []
    sem.down_read()
    t.start()
    try:
        for _ in range(cycles):
            t0 = clock.now_ns()
            clock.wait(hold_ns)
            if not sem.is_contended():
                continue
            sem.up_read()
            sem.down_read()
            gaps.append(clock.now_ns() - t0 - hold_ns)
    finally:
        stop.set()
        sem.up_read()
        t.join()
    return statistics.mean(gaps) if gaps else 0.0


def measure_call_overhead_ns(kernel: object = "v6.18", pairs: int = 100, trials: int = 5,
                             stat: Callable[[list[float]], float] = statistics.median) -> float:
    """Real ns per syscall of the model with no cost: one-page mmap+munmap pairs on a fresh MM,
    the median trial (*stat*: min for the interpreter's own speed, without the load a shared
    machine adds). Includes the test switch's burn when it is set."""
    from mmlab.mm.mm_struct import MM

    mm = MM(kernel, ZERO_COSTS)  # type: ignore[arg-type]
    rw, flags = PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
    for _ in range(10):  # warm up the code paths
        mm.munmap(mm.mmap(0, PAGE_SIZE, rw, flags), PAGE_SIZE)
    per: list[float] = []
    for _ in range(trials):
        t0 = time.perf_counter_ns()
        for _ in range(pairs):
            mm.munmap(mm.mmap(0, PAGE_SIZE, rw, flags), PAGE_SIZE)
        per.append((time.perf_counter_ns() - t0) / (2 * pairs))
    return stat(per)


def choose_dilation(costs: Costs, overhead_ns: Optional[float] = None, target_ns: Optional[float] = None,
                    k: Optional[float] = None, burn_ns: int = 0, handoff_ns: Optional[float] = None,
                    handoff_target_ns: Optional[float] = None) -> Dilation:
    """k = the larger of overhead / target and hand-off / HANDOFF_TARGET_NS, within [1, K_MAX];
    *target_ns* defaults to RESIDUAL_TARGET_NS and *handoff_target_ns* to HANDOFF_TARGET_NS, each
    times the time scale. Without a
    given *k* the result is ``auto``: :meth:`Dilation.recalibrated` measures again before each
    run. A given *k* is taken as it is (the residual is still reported)."""
    ts = costs.time_scale if costs.time_scale > 0 else 1.0
    if target_ns is None:
        target_ns = RESIDUAL_TARGET_NS * ts
    if handoff_target_ns is None:
        handoff_target_ns = HANDOFF_TARGET_NS * ts
    if k is not None:
        if overhead_ns is None:
            overhead_ns = measure_call_overhead_ns()
        return Dilation(k=k, overhead_ns=overhead_ns, target_ns=target_ns, burn_ns=burn_ns,
                        handoff_ns=handoff_ns or 0.0, handoff_target_ns=handoff_target_ns)
    return _auto(target_ns, handoff_target_ns, burn_ns, overhead_ns, handoff_ns,
                 K_MIN_AUTO * (HANDOFF_TARGET_NS * ts) / handoff_target_ns)


def _auto(target_ns: float, handoff_target_ns: float, burn_ns: int, overhead_ns: Optional[float] = None,
          handoff_ns: Optional[float] = None, k_min: float = 1.0) -> Dilation:
    if overhead_ns is None:
        overhead_ns = measure_call_overhead_ns(trials=3)
    if handoff_ns is None:
        handoff_ns = measure_handoff_ns()
    k = min(max(overhead_ns / target_ns, handoff_ns / handoff_target_ns, k_min, 1.0), K_MAX)
    return Dilation(k=k, overhead_ns=overhead_ns, target_ns=target_ns, burn_ns=burn_ns, handoff_ns=handoff_ns,
                    handoff_target_ns=handoff_target_ns, auto=True, k_min=k_min)
