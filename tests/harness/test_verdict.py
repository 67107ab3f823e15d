"""The latency verdict (mmlab/harness/verdict.py) on its own: bounded or unbounded from how the
worst wait grows with the populate size -- the slope and the share, with the noise floor clamp."""

from __future__ import annotations

import math

import pytest

from mmlab.harness.verdict import SHARE_MIN, SLOPE_MIN, judge

SIZES = [1 << 20, 2 << 20, 4 << 20, 8 << 20]


def _j(worst: list[float], populate: list[float], floor: float = 1.0, sizes: list[int] = SIZES):
    return judge("k", "p", "op", sizes, worst, populate, floor)


def test_a_wait_proportional_to_the_populate_is_unbounded() -> None:
    v = _j([1000, 2000, 4000, 8000], [1200, 2400, 4800, 9600])
    assert not v.bounded
    assert v.slope == pytest.approx(1.0) and v.growth == pytest.approx(8.0) and v.share == pytest.approx(8000 / 9600)
    assert "grows with size" in v.why


def test_a_constant_wait_is_bounded_whatever_its_share() -> None:
    v = _j([5000, 5000, 5000, 5000], [5000, 5000, 5000, 5000])  # all of a (constant) populate
    assert v.bounded and v.slope == pytest.approx(0.0) and v.share == pytest.approx(1.0)
    assert "flat" in v.why


def test_a_growing_wait_that_is_a_small_share_of_the_populate_is_bounded() -> None:
    v = _j([10, 20, 40, 80], [10_000, 20_000, 40_000, 80_000])
    assert v.slope == pytest.approx(1.0) and v.share == pytest.approx(0.001)
    assert v.bounded and "noise" in v.why


@pytest.mark.parametrize("share, bounded", [(SHARE_MIN, False), (SHARE_MIN * 0.99, True)])
def test_the_share_threshold_decides_a_growing_wait(share: float, bounded: bool) -> None:
    worst = [1000, 2000, 4000, 8000]
    v = _j(worst, [1000, 2000, 4000, 8000 / share])
    assert v.slope == pytest.approx(1.0) and v.bounded is bounded


@pytest.mark.parametrize("factor, bounded", [(1.01, False), (0.99, True)])
def test_the_slope_threshold_decides(factor: float, bounded: bool) -> None:
    """Worst waits growing as size ** (SLOPE_MIN * factor), each all of its populate."""
    worst = [100 * (s / SIZES[0]) ** (SLOPE_MIN * factor) for s in SIZES]
    v = _j(worst, worst)
    assert v.slope == pytest.approx(SLOPE_MIN * factor) and v.bounded is bounded


def test_waits_under_the_noise_floor_are_raised_to_it_first() -> None:
    """A tiny wait at the smallest size must not make a flat wait look like growth: below the
    floor's median everything counts as the floor."""
    raw = _j([1, 2, 3, 500], [1000, 1000, 1000, 1000], floor=1.0)
    clamped = _j([1, 2, 3, 500], [1000, 1000, 1000, 1000], floor=400.0)
    assert raw.growth == pytest.approx(500) and not raw.bounded
    assert clamped.growth == pytest.approx(500 / 400) and clamped.slope < SLOPE_MIN and clamped.bounded
    assert clamped.worst_us == [1, 2, 3, 500]  # reported as measured, not clamped


def test_sizes_in_any_order_give_the_same_verdict() -> None:
    a = _j([1000, 2000, 4000, 8000], [1200, 2400, 4800, 9600])
    b = judge("k", "p", "op", SIZES[::-1], [8000, 4000, 2000, 1000], [9600, 4800, 2400, 1200], 1.0)
    assert (a.bounded, a.slope, a.growth, a.share) == (b.bounded, b.slope, b.growth, b.share)
    assert b.sizes == SIZES


def test_one_hiccup_at_the_smallest_size_weighs_less_in_the_slope_than_in_the_growth() -> None:
    """A proportional wait (3, 6, 12, 24 ms) with a 13 ms hiccup at the smallest size: the
    two-point growth falls from 8x to 1.8x, the least-squares slope stays over the line."""
    v = _j([13_000, 6000, 12_000, 24_000], [6000, 12_000, 24_000, 48_000])
    clean = _j([3000, 6000, 12_000, 24_000], [6000, 12_000, 24_000, 48_000])
    assert clean.growth == pytest.approx(8.0) and v.growth == pytest.approx(24 / 13)
    assert v.slope >= SLOPE_MIN and not v.bounded and not clean.bounded
    assert math.log(v.growth) / math.log(8) < SLOPE_MIN < v.slope  # growth alone would have said flat


@pytest.mark.parametrize("sizes", [[1 << 20], [1 << 20, 1 << 20]])
def test_a_verdict_needs_two_different_sizes(sizes: list[int]) -> None:
    with pytest.raises(ValueError):
        judge("k", "p", "op", sizes, [1.0] * len(sizes), [1.0] * len(sizes), 1.0)
