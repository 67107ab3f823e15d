"""The cost model and the one clock.

Work that takes time in the kernel takes time here: zeroing an anonymous page, mapping a cached
file page, reading a read-ahead window from disk, zapping pages on munmap. The model charges each
piece of work to the calling thread with :meth:`Clock.spend`, while it holds whatever the kernel
would hold at that point. A :class:`RealClock` pays the bill by sleeping (in chunks, so the GIL is
released and the other task threads run meanwhile); a :class:`VirtualClock` advances virtual time
instead, for controlled mode. Nothing else in mmlab calls ``time.sleep``.

Time dilation (``RealClock(dilation=k)``): the model runs in Python, whose per-call overhead (tens
of microseconds for a one-page mmap) would otherwise count as kernel time. A dilated clock pays
every modelled cost k times over on the real clock and reports ``now_ns()`` divided by k, so
modelled costs keep their size while the interpreter's time -- and the scheduler's and the GIL's
-- shrinks k-fold in every reported wait and duration. ``k`` is chosen by
:mod:`mmlab.harness.dilation` from the measured per-call overhead; what is left (overhead / k per
call) is the *residual* every report prints. ``Costs.time_scale`` is independent of it: it shrinks
the modelled costs (and the wall time) and so raises the residual's share by 1/time_scale unless k
grows to match. Idle waits of tasks go through :meth:`Clock.real_s`.

Schedule points: the clock and the recorded lock call :data:`hooks.schedule_point` when it is set,
so controlled mode installs itself without changes anywhere else.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

__all__ = ["Costs", "DEFAULT_COSTS", "ZERO_COSTS", "Clock", "RealClock", "VirtualClock", "hooks", "burn"]


@dataclass(frozen=True)
class Costs:
    """Kernel work costs in nanoseconds, calibrated to research/real-kernel-6.18.md.

    * anon populate 0.36-0.47 ms/MiB measured -> 1,600 ns per zeroed page (0.41 ms/MiB);
    * file populate from a cold cache 0.45-0.65 ms/MiB, one lock re-take per 8 MiB read-ahead
      window, each read hold <= 1.5 ms -> 3.2 ms per window of disk wait (lock dropped) plus
      560 ns per page mapped under the lock (1.15 ms per window);
    * munmap zap ~85 ms/GiB anonymous, ~115 ms/GiB mlocked, ~1.5 ms/GiB clean shared file.

    ``time_scale`` multiplies every cost: 1.0 is faithful, 0.1 a quick run, 0 the model's own
    overhead (``ZERO_COSTS``).
    """

    anon_page_ns: int = 1_600
    file_page_ns: int = 560
    cow_page_ns: int = 1_600
    disk_window_ns: int = 3_200_000
    readahead_pages: int = 2048  # read_ahead_kb = 8192
    zap_anon_page_ns: int = 325
    zap_locked_page_ns: int = 440
    zap_file_page_ns: int = 6
    vma_op_ns: int = 0  # the fixed part of an mmap/munmap/mprotect under the write lock
    time_scale: float = 1.0

    def scaled(self, time_scale: float) -> "Costs":
        return dataclasses.replace(self, time_scale=time_scale)

    def cost(self, name: str, n: int = 1) -> int:
        """Scaled cost of *n* units of *name* (a field without ``_ns``), in ns."""
        return int(getattr(self, name + "_ns") * n * self.time_scale)

    @property
    def zero(self) -> bool:
        return self.time_scale == 0


DEFAULT_COSTS = Costs()
ZERO_COSTS = Costs(time_scale=0.0)


class _Hooks:
    """Installed by controlled mode (mmlab.sched); None in free-running mode."""

    schedule_point: Optional[Callable[[str, object], object]] = None  # "lock_trylock" may answer False
    syscall_burn_ns: int = 0
    """Test switch: every syscall entry (MM.begin_call) spins this long on the real clock, holding
    the GIL, to stand for a slower interpreter (see :func:`burn`)."""


def burn(ns: int) -> None:
    """Spin for *ns* of real time without releasing the GIL: extra interpreter time."""
    end = time.perf_counter_ns() + ns
    while time.perf_counter_ns() < end:
        pass


hooks = _Hooks()


class Clock:
    """Time for the model: ``now_ns()`` and ``spend(ns)``; ``virtual`` says which kind."""

    virtual: bool = False
    deferring: bool = True
    """False while no cost has ever been spent (zero costs): no thread owes anything or holds
    credit, so settle() has nothing to do and a lock release may skip calling it. Set by the
    first cost and never reset, so no race can lose a debt."""

    def now_ns(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def spend(self, ns: int, why: str = "") -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def settle(self) -> None:
        """Pay any outstanding debt of the calling thread (before a lock is released)."""

    def wait(self, ns: int, why: str = "") -> None:
        """Block for *ns* without holding the CPU (a disk wait): same as spend here."""
        self.spend(ns, why)

    def real_s(self, ns: int) -> float:
        """Seconds of real time that *ns* of this clock's time take (for an idle Event.wait)."""
        return ns / 1e9


class RealClock(Clock):
    """Wall-clock time; costs are paid by sleeping once a thread's debt passes ``quantum_ns``.

    Small costs (a single page fault) accumulate per thread and are paid together, because
    time.sleep cannot sleep 1.6 us; :meth:`settle` pays the rest before a lock is released, so
    work done under a lock is always paid under that lock. A sleep that overshoots (timer slack,
    or waiting for the GIL while other task threads run Python) is credited against the thread's
    next costs until the next settle(), so a long populate runs at the modelled rate instead of
    paying one GIL switch interval per page-table chunk on top.

    ``dilation`` k >= 1: costs take k times as long on the real clock and ``now_ns()`` runs k
    times slower than it (see the module docstring); debts and credits are kept in clock ns.
    ``carry_credit``: an overshoot earned under one lock hold is kept past its release for the
    thread's next costs (a populate that yields pays its oversleeping once, as it does alone),
    instead of being dropped at every release; a hold after it may then be shorter than its work
    by at most one overshoot.
    """

    def __init__(self, quantum_ns: int = 200_000, dilation: float = 1.0, carry_credit: bool = False) -> None:
        if not dilation >= 1.0:
            raise ValueError(f"dilation must be >= 1, not {dilation!r}")
        self.quantum_ns = quantum_ns
        self.dilation = dilation
        self.carry_credit = carry_credit
        self._debt = _Debt()
        self.deferring = False
        if dilation != 1.0:
            self._t0 = time.perf_counter_ns()
            self.now_ns = self._dilated_now  # type: ignore[method-assign]

    # the C function itself: every lock record stamps it, a Python wrapper would double its cost
    now_ns = staticmethod(time.perf_counter_ns)

    def _dilated_now(self) -> int:
        t0 = self._t0
        return t0 + int((time.perf_counter_ns() - t0) / self.dilation)

    def _sleep(self, ns: int) -> int:
        """Sleep *ns* of clock time; returns the overshoot in clock ns."""
        k = self.dilation
        if k == 1.0:
            return _sleep_ns(ns)
        return int(_sleep_ns(int(ns * k)) / k)

    def spend(self, ns: int, why: str = "") -> None:
        if ns <= 0:
            return
        self.deferring = True
        d = self._debt.ns + ns
        if d >= self.quantum_ns:
            # oversleeping (timer slack, waiting for the GIL) is credit against the next costs
            self._debt.ns = -self._sleep(d)
        else:
            self._debt.ns = d

    def settle(self) -> None:
        d = self._debt.ns
        if d > 0:
            self._debt.ns = 0
            self._debt.ns = -self._sleep(d) if self.carry_credit else 0
        elif not self.carry_credit:
            self._debt.ns = 0  # credit does not outlive the lock hold it was earned in

    def wait(self, ns: int, why: str = "") -> None:
        self.settle()
        if ns > 0:
            self._sleep(ns)

    def real_s(self, ns: int) -> float:
        return ns * self.dilation / 1e9


class _Debt(threading.local):
    ns = 0  # a class default: a missing thread-local attribute would cost an exception


def _sleep_ns(ns: int) -> int:
    """Sleep for about *ns*; the deadline is absolute so oversleeping does not accumulate.
    Returns how far past the deadline the thread got to run again (ns)."""
    deadline = time.perf_counter_ns() + ns
    while True:
        left = deadline - time.perf_counter_ns()
        if left <= 0:
            return -left
        time.sleep(left / 1e9)


class VirtualClock(Clock):
    """Virtual time for controlled mode: spend() advances the clock, nothing sleeps.

    Only one task runs at a time in controlled mode, so one counter is enough; the scheduler
    may also move it (``advance_to``) when every runnable task is waiting on time.
    """

    virtual = True
    deferring = False  # nothing is ever owed: spend() advances the clock at once

    def __init__(self) -> None:
        self._now = 0

    def now_ns(self) -> int:
        return self._now

    def spend(self, ns: int, why: str = "") -> None:
        if ns > 0:
            self._now += ns
        hp = hooks.schedule_point
        if hp is not None and why:
            hp("spend", why)

    def wait(self, ns: int, why: str = "") -> None:
        """A timed sleep (a disk wait). Under a controller the task sleeps until the virtual time
        reaches now + ns -- others run meanwhile, and the controller moves the clock on when
        nothing else can run; alone, the clock just moves on."""
        hp = hooks.schedule_point
        if hp is None:
            self.spend(ns)
        else:
            hp("wait", (self, ns, why or "wait"))

    def advance_to(self, t: int) -> None:
        if t > self._now:
            self._now = t
