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
(a one-page mmap+munmap pair on a zero-cost MM, median of several trials), and
:func:`choose_dilation` picks k so that the *residual* -- overhead / k per call -- is at most
``target_ns`` of modelled time (``RESIDUAL_TARGET_NS`` at time scale 1, scaled with it). Every
report prints the residual.

``--time-scale s`` multiplies the modelled costs by s. The residual does not shrink with them, so
its share of a modelled cost grows by 1/s; :func:`choose_dilation` scales the target with s, which
raises k by 1/s and leaves the wall time of a run where it was. ``--quick`` asks for a larger
target instead (a residual four times larger, a run four times shorter).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from mmlab.clock import ZERO_COSTS, Costs
from mmlab.flags import MAP_ANONYMOUS, MAP_NORESERVE, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE

__all__ = ["Dilation", "measure_call_overhead_ns", "choose_dilation", "RESIDUAL_TARGET_NS", "K_MAX"]

RESIDUAL_TARGET_NS = 1_000
"""Interpreter time per syscall allowed into modelled time at time scale 1: a fifth of what this
machine's kernel takes for a one-page mmap or munmap (~4.5 us, research/real-kernel-6.18.md)."""
K_MAX = 64.0
"""Dilation ceiling: beyond it a 1 GiB run would take minutes; the residual is reported instead."""


@dataclass(frozen=True)
class Dilation:
    k: float                 # real ns per modelled ns
    overhead_ns: float       # measured interpreter time per call (real ns)
    target_ns: float         # residual asked for (modelled ns per call)
    burn_ns: int = 0         # the test switch's extra spin per syscall entry (included in overhead)

    @property
    def residual_ns(self) -> float:
        """Interpreter time per call that still counts as modelled time."""
        return self.overhead_ns / self.k

    def text(self) -> str:
        burn = f", burning {self.burn_ns / 1e3:g} us per syscall entry" if self.burn_ns else ""
        return (f"time dilation k={self.k:.1f}: interpreter {self.overhead_ns / 1e3:.1f} us/call measured{burn}; "
                f"residual {self.residual_ns / 1e3:.2f} us of modelled time per call "
                f"(target {self.target_ns / 1e3:.2f} us)")

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = asdict(self)
        d["residual_ns"] = self.residual_ns
        return d


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
                    k: Optional[float] = None, burn_ns: int = 0) -> Dilation:
    """k = overhead / target, within [1, K_MAX]; *target_ns* defaults to RESIDUAL_TARGET_NS
    times the time scale. A given *k* is taken as it is (the residual is still reported)."""
    if overhead_ns is None:
        overhead_ns = measure_call_overhead_ns()
    if target_ns is None:
        target_ns = RESIDUAL_TARGET_NS * (costs.time_scale if costs.time_scale > 0 else 1.0)
    if k is None:
        k = min(max(overhead_ns / target_ns, 1.0), K_MAX)
    return Dilation(k=k, overhead_ns=overhead_ns, target_ns=target_ns, burn_ns=burn_ns)
