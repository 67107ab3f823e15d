"""Benchmarks of the model's syscalls: one-page mmap+munmap against the real kernel, and how
find_vma and mmap scale with the number of vmas (10, 1,000 and max_map_count). Times are the
thread's CPU time, sides alternating in rounds (mmlab.bench.timing)."""

from __future__ import annotations

import random
from typing import Callable

from mmlab.bench.libc import RealMM, real_unavailable
from mmlab.bench.registry import Goal, Row, Run, benchmark
from mmlab.bench.timing import cpu_ns, paired
from mmlab.clock import ZERO_COSTS
from mmlab.flags import (DEFAULT_MAX_MAP_COUNT, MAP_ANONYMOUS, MAP_FIXED, MAP_NORESERVE, MAP_PRIVATE,
                         PAGE_SIZE, PROT_READ, PROT_WRITE)
from mmlab.mm.mm_struct import MM

RW = PROT_READ | PROT_WRITE
# MAP_NORESERVE keeps the real kernel's page from merging with a neighbour (as in the research
# measurements); the model is given the same flags.
ONE_PAGE_FLAGS = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
ROUNDS = 20


def _pairs_model(mm: MM, n: int) -> int:
    mmap, munmap = mm.mmap, mm.munmap
    t0 = cpu_ns()
    for _ in range(n):
        munmap(mmap(0, PAGE_SIZE, RW, ONE_PAGE_FLAGS), PAGE_SIZE)
    return cpu_ns() - t0


def _pairs_real(real: RealMM, n: int) -> int:
    rmmap, rmunmap = real.raw_mmap, real.raw_munmap
    t0 = cpu_ns()
    for _ in range(n):
        rmunmap(rmmap(None, PAGE_SIZE, RW, ONE_PAGE_FLAGS, -1, 0), PAGE_SIZE)
    return cpu_ns() - t0


@benchmark("mmap_munmap", "mmap+munmap of one anonymous page, uncontended (v6.18, zero costs) vs the real kernel", rows=[
    Row("mmap_munmap.model", "us/pair", Goal("<=", 20), "the model: MM.mmap + MM.munmap of one page"),
    Row("mmap_munmap.real", "us/pair", None, "the real kernel through ctypes, same run"),
    Row("mmap_munmap.ratio", "x", Goal("<=", 3), "model / real, run by run"),
])
def _mmap_munmap(quick: bool) -> Run:
    n = 2_000 if quick else 10_000
    mm = MM("v6.18", ZERO_COSTS)
    why = real_unavailable()
    real = None if why else RealMM()
    if real is not None:  # fail loudly once rather than silently in the loop
        real.munmap(real.mmap(PAGE_SIZE, RW, ONE_PAGE_FLAGS), PAGE_SIZE)

    def step() -> dict[str, float]:
        if real is None:
            return {"mmap_munmap.model": _pairs_model(mm, n) / n / 1e3}
        m, r, ratio = paired(lambda k: _pairs_model(mm, k), lambda k: _pairs_real(real, k), n, ROUNDS)
        return {"mmap_munmap.model": m / 1e3, "mmap_munmap.real": r / 1e3, "mmap_munmap.ratio": ratio}

    return Run(step, notes=[f"real kernel: {why}"] if why else [])


SIZES = (10, 1_000, DEFAULT_MAX_MAP_COUNT)
_BASE = 0x10000000  # the populated vmas live low; new mmaps go top-down from mmap_base


def _build(n: int) -> MM:
    """An MM with *n* - 1 one-page vmas (so one more mmap makes *n*), each with a hole after it."""
    mm = MM("v6.18", ZERO_COSTS, layout="bare", max_map_count=DEFAULT_MAX_MAP_COUNT, history=1_000)
    for i in range(n - 1):
        mm.mmap(_BASE + 2 * i * PAGE_SIZE, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    return mm


@benchmark("vma_index", "find_vma and mmap+munmap among 10, 1,000 and 65,530 vmas", rows=[
    *[Row(f"vma_index.find_vma_{n}", "ns/lookup") for n in SIZES],
    Row("vma_index.find_vma_ratio", "x", Goal("<=", 2), f"find_vma at {SIZES[-1]} / at {SIZES[0]}"),
    *[Row(f"vma_index.mmap_{n}", "us/pair") for n in SIZES],
    Row("vma_index.mmap_ratio", "x", Goal("<=", 2), f"mmap+munmap at {SIZES[-1]} / at {SIZES[0]}"),
])
def _vma_index(quick: bool) -> Run:
    lookups = 5_000 if quick else 20_000
    pairs = 500 if quick else 2_000
    mms = {n: _build(n) for n in SIZES}
    rnds = {n: random.Random(n) for n in SIZES}  # fixed seeds: the same sequence every run

    def lookups_at(n: int) -> Callable[[int], int]:
        fv = mms[n].vmas.find_vma
        rnd = rnds[n]
        span = 2 * (n - 1) * PAGE_SIZE

        def run(k: int) -> int:  # k fresh random addresses over the whole index, drawn untimed
            batch = [_BASE + (rnd.randrange(span) & ~(PAGE_SIZE - 1)) for _ in range(k)]
            t0 = cpu_ns()
            for a in batch:
                fv(a)
            return cpu_ns() - t0

        return run

    def step() -> dict[str, float]:
        out: dict[str, float] = {}
        lo, hi = SIZES[0], SIZES[-1]
        for n in SIZES[1:]:
            a, b, ratio = paired(lookups_at(n), lookups_at(lo), lookups, ROUNDS)
            out[f"vma_index.find_vma_{n}"], out[f"vma_index.find_vma_{lo}"] = a, b
            if n == hi:
                out["vma_index.find_vma_ratio"] = ratio
            a, b, ratio = paired(lambda k: _pairs_model(mms[n], k), lambda k: _pairs_model(mms[lo], k), pairs, ROUNDS)
            out[f"vma_index.mmap_{n}"], out[f"vma_index.mmap_{lo}"] = a / 1e3, b / 1e3
            if n == hi:
                out["vma_index.mmap_ratio"] = ratio
        return out

    return Run(step)
