"""Seed ranges and shards, as people write them on a command line.

* ``50``     -- fifty seeds, 0..49;
* ``A..B``   -- the seeds A to B, both included (``100..199``);
* ``i/n``    -- shard i (1-based) of n: every n-th seed starting at the i-th, so separate CI
  jobs can split one sweep and together cover it exactly once.
"""

from __future__ import annotations

import re

__all__ = ["parse_seeds", "parse_shard", "shard", "format_seeds"]

_RANGE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*$")
_COUNT = re.compile(r"^\s*(\d+)\s*$")
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")

MAX_SEEDS = 10_000_000


def parse_seeds(spec: object) -> range:
    """``N`` (seeds 0..N-1) or ``A..B`` (A to B inclusive). ValueError names what is wrong."""
    if isinstance(spec, bool):
        raise ValueError(f"not a seed range: {spec!r}")
    if isinstance(spec, int):
        spec = str(spec)
    if not isinstance(spec, str):
        raise ValueError(f"not a seed range: {spec!r} (write N or A..B)")
    m = _RANGE.match(spec)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        if b < a:
            raise ValueError(f"empty seed range {spec!r}: {b} < {a}")
        r = range(a, b + 1)
    else:
        m = _COUNT.match(spec)
        if not m:
            raise ValueError(f"not a seed range: {spec!r} (write N for 0..N-1, or A..B)")
        n = int(m.group(1))
        if n <= 0:
            raise ValueError("the number of seeds must be positive")
        r = range(n)
    if len(r) > MAX_SEEDS:
        raise ValueError(f"{len(r)} seeds is more than {MAX_SEEDS}; split the sweep with --shard")
    return r


def parse_shard(spec: str) -> tuple[int, int]:
    """``i/n`` with 1 <= i <= n: the i-th of n shards."""
    m = _SHARD.match(spec or "")
    if not m:
        raise ValueError(f"not a shard: {spec!r} (write i/n, e.g. 2/4)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"shard {spec!r}: need 1 <= i <= n")
    return i, n


def shard(seeds: range, i: int, n: int) -> range:
    """The seeds of shard *i* of *n*: a strided slice, so shards are disjoint and cover all."""
    return seeds[i - 1::n]


def format_seeds(seeds: range) -> str:
    if len(seeds) == 0:
        return "no seeds"
    if seeds.step == 1:
        return f"{seeds.start}..{seeds.stop - 1}" if len(seeds) > 1 else str(seeds.start)
    return f"{seeds.start}..{seeds[-1]} step {seeds.step}"
