"""Latency summaries: percentiles come from HdrHistogram, and none exceeds the exact maximum."""

from __future__ import annotations

import pytest

from mmlab.harness.histograms import new_histogram, record, summarize


@pytest.mark.parametrize("samples", [[0] * 6, [0, 0, 300, 0], [0] * 99 + [5_000_000]])
def test_percentiles_never_exceed_the_exact_max(samples: list[int]) -> None:
    """Waits of 0 ns land in the histogram's lowest bucket, whose highest value is about 0.5 us:
    with the exact max given, the percentiles are capped at it (p50 <= p99 <= p99.9 <= max)."""
    h = new_histogram()
    for v in samples:
        record(h, v)
    s = summarize(h, max(samples))
    assert s["count"] == len(samples)
    assert s["p50_us"] <= s["p99_us"] <= s["p999_us"] <= s["max_us"] == max(samples) / 1e3


def test_percentiles_above_the_lowest_bucket_are_hdrs() -> None:
    h = new_histogram()
    for v in range(1, 1001):
        record(h, v * 1000)  # 1 us .. 1 ms
    s = summarize(h, 1_000_000)
    assert s["p50_us"] == pytest.approx(500, rel=0.01) and s["p99_us"] == pytest.approx(990, rel=0.01)
    assert s["max_us"] == 1000
