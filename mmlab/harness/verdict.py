"""Bounded or unbounded: a verdict from how the worst wait grows with the populate size.

A stall is *unbounded* when it scales with the amount of work populate does -- the waiter sits out
the whole populate, whatever its size -- and *bounded* when it stays near a fixed amount of work
(one read-ahead window, one populate batch) whatever the size. So the verdict is read off the
measurements at several sizes, never off a table of expected answers:

* ``growth``: worst wait at the largest size / worst wait at the smallest;
* ``slope``: the least-squares slope of log(worst wait) against log(size) -- 1 for a wait that
  is proportional to the size, 0 for a constant one;
* ``share``: worst wait at the largest size / that run's populate time -- a wait that grows but
  stays a small share of the populate is noise that happened to grow with the run's length.

The noise floor is the same victims with no populator. Worst waits below its median wait are
raised to it first, so that a tiny smallest-size wait cannot exaggerate the growth. Its p99 and
maximum are reported but not used: one host hiccup of tens of ms in a fraction of a second of
noise run (back-filled by the open loop's coordinated-omission correction) would set them.

Unbounded iff ``slope >= SLOPE_MIN`` (fitted over every size, so one hiccup at the smallest size
weighs less than in the two-point ``growth``, which is reported beside it) and
``share >= SHARE_MIN``.

With several runs per size, the worst wait of a size is the smallest of the runs' worst waits:
the stall the lock causes every time, not a one-off hiccup of the host.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["Verdict", "judge", "SLOPE_MIN", "SHARE_MIN"]

# A proportional wait has slope 1, a constant one 0. The line is drawn at a third, not halfway:
# scheduler hiccups on a loaded machine only ever lengthen waits, and one at the smallest size
# flattens a proportional wait's slope (a 20 ms hiccup over a 3 ms wait: 0.42 instead of 1),
# while a bounded wait that grows by noise is caught by the share and noise gates.
SLOPE_MIN = 1 / 3
SHARE_MIN = 0.25


@dataclass
class Verdict:
    kernel: str
    populator: str
    op: str
    growth: float
    slope: float
    share: float
    bounded: bool
    worst_us: list[float]
    sizes: list[int]
    floor_us: float        # the noise floor's median wait (the clamp)
    noise_p99_us: float
    noise_max_us: float
    why: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _slope(xs: list[float], ys: list[float]) -> float:
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx = sum(lx) / len(lx)
    my = sum(ly) / len(ly)
    den = sum((x - mx) ** 2 for x in lx)
    if den == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / den


def judge(kernel: str, populator: str, op: str, sizes: list[int], worst_us: list[float],
          populate_us: list[float], floor_us: float, noise_p99_us: float = 0.0,
          noise_max_us: float = 0.0) -> Verdict:
    """The verdict for one victim op from its worst wait at each size; *floor_us* is the noise
    floor's median wait (p99 and max are only reported)."""
    if len(sizes) < 2 or len(set(sizes)) < 2:
        raise ValueError("a verdict needs at least two different populate sizes")
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    sizes = [sizes[i] for i in order]
    worst_us = [worst_us[i] for i in order]
    populate_us = [populate_us[i] for i in order]
    floor = max(floor_us, 1.0)
    w = [max(x, floor) for x in worst_us]
    growth = w[-1] / w[0]
    slope = _slope([float(s) for s in sizes], w)
    share = worst_us[-1] / populate_us[-1] if populate_us[-1] > 0 else 0.0
    unbounded = slope >= SLOPE_MIN and share >= SHARE_MIN
    if unbounded:
        why = (f"worst wait grows with size: x{growth:.1f} over x{sizes[-1] / sizes[0]:.0f} size, "
               f"slope {slope:.2f}, {share:.0%} of the populate")
    elif slope < SLOPE_MIN:
        why = f"worst wait flat in size: x{growth:.1f} over x{sizes[-1] / sizes[0]:.0f} size, slope {slope:.2f}"
    else:
        why = f"grows (slope {slope:.2f}) but only {share:.0%} of the populate time: noise"
    return Verdict(kernel, populator, op, growth, slope, share, not unbounded, worst_us, sizes, floor_us,
                   noise_p99_us, noise_max_us, why)
