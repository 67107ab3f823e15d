"""Timing for micro benchmarks on a shared machine.

``cpu_ns`` is the calling thread's CPU time (user + system, so a real syscall's kernel time is
counted): on a box shared with other busy processes, wall time mostly measures the neighbours,
while a single uncontended thread's CPU time measures the work. Side-by-side comparisons run the
two sides in many short alternating rounds and take the median of the per-round ratios, so a
change of load between rounds hits both sides of a ratio alike.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

__all__ = ["cpu_ns", "paired"]

cpu_ns = time.thread_time_ns


def paired(a: Callable[[int], int], b: Callable[[int], int], n: int, rounds: int) -> tuple[float, float, float]:
    """Run ``a(k)`` and ``b(k)`` (each returns ns for k iterations) alternately for *rounds*
    rounds of ``k = n // rounds``. Returns (a ns/iteration, b ns/iteration, median a/b ratio)."""
    k = max(1, n // rounds)
    ta = tb = 0
    ratios = []
    for _ in range(rounds):
        x = a(k)
        y = b(k)
        ta += x
        tb += y
        if y > 0:
            ratios.append(x / y)
    total = k * rounds
    return ta / total, tb / total, statistics.median(ratios) if ratios else float("nan")
