"""The recorded mmap_sem (mmlab.locking.MmapSem, as an MM uses it) against a bare
readerwriterlock RWLockFairD, uncontended acquire+release pairs, read and write."""

from __future__ import annotations

import time

from readerwriterlock.rwlock import RWLockFairD

from mmlab.bench.registry import Goal, Row, Run, benchmark
from mmlab.clock import ZERO_COSTS
from mmlab.mm.mm_struct import MM

BLOCKS = 5


@benchmark("mmap_sem", "recorded mmap_sem vs bare RWLockFairD: uncontended acquire+release pairs", rows=[
    Row("mmap_sem.read_model", "ns/pair", None, "mm.mmap_sem.down_read(); up_read()"),
    Row("mmap_sem.read_bare", "ns/pair", None, "RWLockFairD reader handle acquire(); release()"),
    Row("mmap_sem.read_ratio", "x", Goal("<=", 1.5), "recorded / bare, run by run"),
    Row("mmap_sem.write_model", "ns/pair", None, "mm.mmap_sem.down_write(); up_write()"),
    Row("mmap_sem.write_bare", "ns/pair", None, "RWLockFairD writer handle acquire(); release()"),
    Row("mmap_sem.write_ratio", "x", Goal("<=", 1.5), "recorded / bare, run by run"),
])
def _mmap_sem(quick: bool) -> Run:
    n = 20_000 if quick else 100_000
    per = n // BLOCKS
    sem = MM("v6.18", ZERO_COSTS).mmap_sem
    bare = RWLockFairD()
    rh, wh = bare.gen_rlock(), bare.gen_wlock()
    pc = time.perf_counter_ns

    def model_read() -> int:
        down, up = sem.down_read, sem.up_read
        t0 = pc()
        for _ in range(per):
            down()
            up()
        return pc() - t0

    def model_write() -> int:
        down, up = sem.down_write, sem.up_write
        t0 = pc()
        for _ in range(per):
            down()
            up()
        return pc() - t0

    def bare_pair(h: object) -> int:
        acq, rel = h.acquire, h.release  # type: ignore[attr-defined]
        t0 = pc()
        for _ in range(per):
            acq()
            rel()
        return pc() - t0

    def step() -> dict[str, float]:
        mr = br = mw = bw = 0
        for _ in range(BLOCKS):
            mr += model_read()
            br += bare_pair(rh)
            mw += model_write()
            bw += bare_pair(wh)
        return {
            "mmap_sem.read_model": mr / n, "mmap_sem.read_bare": br / n, "mmap_sem.read_ratio": mr / br,
            "mmap_sem.write_model": mw / n, "mmap_sem.write_bare": bw / n, "mmap_sem.write_ratio": mw / bw,
        }

    return Run(step)
