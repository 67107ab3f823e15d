"""Latency histograms: HdrHistogram (the ``hdrhistogram`` package), in nanoseconds.

No percentile code of mmlab's own: every p50/p99/p99.9 comes from ``get_value_at_percentile``.
Histograms merge through ``encode()``/``decode()`` (base64 "histoblobs"), so results from many
runs, processes or machines can be added up centrally. Closed-loop recording uses
``record_value``; the open loop records with ``record_corrected_value(value, interval)``, which
back-fills the samples a steady client would have taken while the call was stuck (coordinated
omission).
"""

from __future__ import annotations

from typing import Optional

from hdrh.histogram import HdrHistogram

__all__ = ["new_histogram", "LOWEST_NS", "HIGHEST_NS", "SIG_FIGS", "record", "summarize", "decode",
           "merge_blobs"]

LOWEST_NS = 1_000           # resolution at the bottom: about 1 us (values below land in bucket 0)
HIGHEST_NS = 600 * 10**9    # 10 minutes; larger values are clamped (and the exact max kept apart)
SIG_FIGS = 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_NS, HIGHEST_NS, SIG_FIGS)


def record(h: HdrHistogram, value_ns: int, interval_ns: Optional[int] = None) -> None:
    """Record one sample; with *interval_ns* (open loop), correct for coordinated omission."""
    v = min(max(int(value_ns), 0), HIGHEST_NS)
    if interval_ns:
        h.record_corrected_value(v, int(interval_ns))
    else:
        h.record_value(v)


def summarize(h: HdrHistogram, exact_max_ns: Optional[int] = None) -> dict[str, float]:
    """count, p50/p99/p99.9 and max in microseconds (max exact when given).

    A percentile is the highest value of its bucket (about 0.5 us for the bucket of 0 ns), so
    with an exact max it is capped at that max: no percentile exceeds the largest sample (a
    victim whose waits were all 0 ns has p50 = p99.9 = max = 0, not 0.511 us over a max of 0)."""
    n = h.get_total_count()
    if not n:
        return {"count": 0, "p50_us": 0.0, "p99_us": 0.0, "p999_us": 0.0, "max_us": 0.0}
    mx = exact_max_ns if exact_max_ns is not None else h.get_max_value()
    # a bucket's highest equivalent value can pass the exact maximum (all-zero waits read 0.511 us)
    cap = mx if exact_max_ns is not None else h.get_max_value()
    return {
        "count": n,
        "p50_us": min(h.get_value_at_percentile(50.0), cap) / 1e3,
        "p99_us": min(h.get_value_at_percentile(99.0), cap) / 1e3,
        "p999_us": min(h.get_value_at_percentile(99.9), cap) / 1e3,
        "max_us": mx / 1e3,
    }


def decode(blob: bytes | str) -> HdrHistogram:
    return HdrHistogram.decode(blob.encode() if isinstance(blob, str) else blob)


def merge_blobs(blobs: list[bytes | str]) -> HdrHistogram:
    """Add encoded histograms together (``decode_and_add``)."""
    h = new_histogram()
    for b in blobs:
        h.add(decode(b))
    return h
